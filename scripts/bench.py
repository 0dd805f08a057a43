"""Benchmark (not a test): naive ``torch.onnx.export`` of the train form vs our deploy-form ONNX, both
in ONNX Runtime, plus PyTorch eager, for PartialNet T0/T2/S at 224², batch 1, 2 threads, in one
process. Runtimes are timed in blocks (warm-up per block) cycled round-robin, and the reported number
is the median of block medians (DESIGN.md §7: ONNX Runtime's idle workers spin and steal the cores
from whatever runs next, so alternating single runs would be unfair).

With ``--int8`` it also measures fp32 vs INT8 (ONNX Runtime QDQ, OpenVINO NNCF) latency and the
accuracy drop, on the demo model (held-out digits test set) and on S (latency only: no labelled
ImageNet data here).

With ``--families`` (default ECA-ResNet-50 and ECA-MobileNetV2) the same naive-vs-ours comparison
for other registered families; ``--eca-forms`` also times the ECA gate's candidate deploy forms.

    .venv/bin/python scripts/bench.py [--variants t0,t2,s] [--rounds 5] [--int8] [--families ...] [--eca-forms]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def block_times(fn, x, warmup: int, runs: int) -> float:
    for _ in range(warmup):
        fn(x)
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def cycle(fns: dict, x, rounds: int, warmup: int, runs: int) -> dict:
    meds = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            meds[k].append(block_times(fn, x, warmup, runs))
    return {k: statistics.median(v) * 1000 for k, v in meds.items()}


def ort_fn(path, threads):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return lambda x: s.run(None, {name: x})[0]


def ov_fn(path, threads):
    import openvino as ov

    c = ov.Core().compile_model(str(path), "CPU", {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY",
                                                   "INFERENCE_PRECISION_HINT": "f32"})
    req = c.create_infer_request()
    return lambda x: req.infer({0: x})


def bench_naive_vs_deploy(variants, rounds, threads, tmp: Path):
    import torch

    from partialdeploy.exporters.onnx import export_onnx, naive_export
    from partialdeploy.images import natural_batch
    from partialdeploy.models import build_model
    from partialdeploy.reparam import reparameterize, torch_logits
    from partialdeploy import parity
    from partialdeploy.spec import variant_spec

    torch.set_num_threads(threads)
    rows = []
    for v in variants:
        spec = variant_spec("partialnet", v)
        torch.manual_seed(0)
        model = build_model(spec).eval()
        deploy = reparameterize(model, 224)
        naive = naive_export(model, tmp / f"{v}_naive.onnx", 224)
        ours = export_onnx(deploy, tmp / f"{v}_deploy.onnx", 224)
        x = natural_batch(224, spec.mean, spec.std, n=1)
        with torch.no_grad():
            fns = {"torch eager (train form)": lambda a, m=model: m(torch.from_numpy(a)),
                   "ORT naive export": ort_fn(naive.path, threads),
                   "ORT partialdeploy": ort_fn(ours.path, threads),
                   "OV naive export": ov_fn(naive.path, threads),
                   "OV partialdeploy": ov_fn(ours.path, threads)}
            res = cycle(fns, x, rounds, warmup=10, runs=30 if v != "s" else 20)
        p = parity.compare(torch_logits(model, x), fns["ORT partialdeploy"](x))
        rows.append((v, naive, ours, res, p))
    print(f"\nPartialNet, 224², batch 1, {threads} threads, median of {rounds} block medians (ms)")
    hdr = (f"{'variant':8} {'nodes naive':>11} {'BN':>3} {'nodes ours':>10} {'eager':>8} {'ORT naive':>10} "
           f"{'ORT ours':>9} {'ORT n/o':>8} {'OV naive':>9} {'OV ours':>8} {'OV n/o':>7} {'eager/best':>10}  parity")
    print(hdr)
    print("-" * len(hdr))
    for v, naive, ours, res, p in rows:
        e, n, o = res["torch eager (train form)"], res["ORT naive export"], res["ORT partialdeploy"]
        vn, vo = res["OV naive export"], res["OV partialdeploy"]
        print(f"{v.upper():8} {naive.nodes:>11} {naive.ops.get('BatchNormalization', 0):>3} {ours.nodes:>10} "
              f"{e:>8.2f} {n:>10.2f} {o:>9.2f} {n / o:>7.2f}× {vn:>9.2f} {vo:>8.2f} {vn / vo:>6.2f}× "
              f"{e / min(o, vo):>9.2f}×  rel {p.rel_max:.1e}")


def bench_int8(rounds, threads, tmp: Path, variants):
    """fp32 vs INT8 latency and accuracy drop, OpenVINO and ONNX Runtime, through the real pipeline."""
    from partialdeploy.pipeline import ExportRequest, run_export
    from partialdeploy.images import natural_batch

    cases = [("demo", None)] + [(v, v) for v in variants]
    for name, v in cases:
        ckpt = None
        if v:
            import torch

            from partialdeploy.models import build_model
            from partialdeploy.spec import variant_spec

            torch.manual_seed(0)
            p = tmp / f"{v}.pth"
            torch.save(build_model(variant_spec("partialnet", v)).state_dict(), p)
            ckpt = p
            calib = tmp / "calib"
            if not calib.exists():
                from PIL import Image

                from partialdeploy.images import natural_images

                calib.mkdir()
                for i, im in enumerate(natural_images()):
                    Image.fromarray(np.ascontiguousarray(im)).save(calib / f"{i}.png")
        out = tmp / f"dist-{name}"
        arts = {}
        for prec in ("fp32", "int8"):
            req = ExportRequest(checkpoint=ckpt, targets=("onnxruntime", "openvino"), precision=prec, out_dir=out,
                                calib=None if v is None else tmp / "calib")
            res = run_export(req)
            for f in res.failures:
                print(f"  {name} {f['target']} {prec}: FAILED {f['error']}")
            for a in res.artifacts:
                arts[(a.target, prec)] = a
        if not arts:
            continue
        size = 64 if v is None else 224
        x = natural_batch(size, (0.5,) * 3, (0.25,) * 3, n=1)
        fns = {}
        for (t, prec), a in arts.items():
            fns[(t, prec)] = (ort_fn if t == "onnxruntime" else ov_fn)(out / a.path, threads)
        res = cycle(fns, x, rounds, warmup=10, runs=30)
        print(f"\n{name}: fp32 vs INT8, batch 1, {threads} threads (ms, median of {rounds} block medians)")
        for t in ("onnxruntime", "openvino"):
            if (t, "fp32") in res and (t, "int8") in res:
                a8 = arts[(t, "int8")]
                acc = next((p for p in a8.parity if p.get("acc") is not None), None)
                drop = f"accuracy {100 * acc['acc_ref']:.2f}% → {100 * acc['acc']:.2f}% (held-out digits)" if acc else \
                    "accuracy: no labelled data (top-1 agreement " + \
                    f"{100 * a8.parity[0]['top1_agree']:.0f}% on real photos)" if a8.parity else ""
                print(f"  {t:12} fp32 {res[(t, 'fp32')]:7.2f}  int8 {res[(t, 'int8')]:7.2f}  "
                      f"speed-up {res[(t, 'fp32')] / res[(t, 'int8')]:.2f}×  {drop}")


# ---- other families (ECA-Net, partial ConvNeXt): naive export vs ours, and the ECA gate's forms


def _family_model(name: str):
    import torch

    from partialdeploy import families
    from partialdeploy.models import build_model

    fam, var = families.parse_variant(name)
    spec = fam.variant_spec(var or next(iter(fam.variants)))
    torch.manual_seed(0)
    model = build_model(spec).eval()
    with torch.no_grad():  # non-trivial BN statistics so folding has something to fold
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.running_mean.normal_(0, 0.2)
    return spec, model


def bench_families(names, rounds, threads, tmp: Path, eca_forms: bool):
    import torch

    from partialdeploy import parity
    from partialdeploy.exporters.onnx import export_onnx, naive_export
    from partialdeploy.images import natural_batch
    from partialdeploy.reparam import reparameterize, torch_logits

    torch.set_num_threads(threads)
    print(f"\nOther families, 224², batch 1, {threads} threads, median of {rounds} block medians (ms)")
    hdr = (f"{'model':24} {'nodes naive':>11} {'Transpose':>9} {'nodes ours':>10} {'eager':>8} {'ORT naive':>10} "
           f"{'ORT ours':>9} {'ORT n/o':>8} {'OV naive':>9} {'OV ours':>8} {'OV n/o':>7}  parity")
    print(hdr)
    print("-" * len(hdr))
    for name in names:
        spec, model = _family_model(name)
        deploy = reparameterize(model, 224)
        naive = naive_export(model, tmp / f"{name}_naive.onnx", 224)
        ours = export_onnx(deploy, tmp / f"{name}_deploy.onnx", 224)
        x = natural_batch(224, spec.mean, spec.std, n=1)
        fns = {"eager": lambda a, m=model: m(torch.from_numpy(a)),
               "ORT naive": ort_fn(naive.path, threads), "ORT ours": ort_fn(ours.path, threads),
               "OV naive": ov_fn(naive.path, threads), "OV ours": ov_fn(ours.path, threads)}
        with torch.no_grad():
            res = cycle(fns, x, rounds, warmup=10, runs=20)
        p = parity.compare(torch_logits(model, x), fns["ORT ours"](x))
        print(f"{spec.name:24} {naive.nodes:>11} {naive.ops.get('Transpose', 0):>9} {ours.nodes:>10} "
              f"{res['eager']:>8.2f} {res['ORT naive']:>10.2f} {res['ORT ours']:>9.2f} "
              f"{res['ORT naive'] / res['ORT ours']:>7.2f}× {res['OV naive']:>9.2f} {res['OV ours']:>8.2f} "
              f"{res['OV naive'] / res['OV ours']:>6.2f}×  rel {p.rel_max:.1e}")
        if eca_forms and spec.family.startswith("eca"):
            bench_eca_forms(spec, model, deploy, x, rounds, threads, tmp)


def bench_eca_forms(spec, model, deploy, x, rounds, threads, tmp: Path):
    """The ECA gate's deploy forms, whole network: 1-D conv on the reshaped pooled vector (ours), the
    official transpose pair around the Conv1d, and a banded C×C 1×1 conv (no reshapes, C² weights)."""
    import copy

    import torch
    import torch.nn.functional as F

    from partialdeploy.exporters.onnx import export_onnx
    from partialdeploy.models.eca import ECAGateD

    class Transposed(torch.nn.Module):
        def __init__(self, g):
            super().__init__()
            self.g = g

        def forward(self, v):
            y = F.adaptive_avg_pool2d(v, 1)
            w = self.g.conv.weight if self.g.conv is not None else self.g.scale.view(1, 1, 1)
            y = F.conv1d(y.squeeze(-1).transpose(-1, -2), w, padding=(w.shape[-1] - 1) // 2)
            return v * torch.sigmoid(y.transpose(-1, -2).unsqueeze(-1))

    class Banded(torch.nn.Module):
        def __init__(self, g, c):
            super().__init__()
            w = g.conv.weight.view(-1) if g.conv is not None else g.scale.view(1)
            k, band = w.numel(), torch.zeros(c, c)
            for i in range(c):
                for j in range(k):
                    src = i + j - (k - 1) // 2
                    if 0 <= src < c:
                        band[i, src] = w[j]
            self.conv = torch.nn.Conv2d(c, c, 1, bias=False)
            self.conv.weight.data.copy_(band[:, :, None, None])

        def forward(self, v):
            return v * torch.sigmoid(self.conv(F.adaptive_avg_pool2d(v, 1)))

    chans = {}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, n=n: chans.__setitem__(n, inp[0].shape[1]))
             for n, m in deploy.named_modules() if isinstance(m, ECAGateD)]
    with torch.no_grad():
        deploy(torch.from_numpy(x))
    for h in hooks:
        h.remove()
    forms = {}
    for form in ("reshape (ours)", "transpose pair", "banded C×C"):
        d = copy.deepcopy(deploy)
        if form != "reshape (ours)":
            for n, m in list(d.named_modules()):
                for cn, child in list(m.named_children()):
                    full = f"{n}.{cn}" if n else cn
                    if isinstance(child, ECAGateD):
                        setattr(m, cn, Transposed(child) if form == "transpose pair" else Banded(child, chans[full]))
        info = export_onnx(d, tmp / f"eca_{len(forms)}.onnx", 224)
        forms[form] = (info, ort_fn(info.path, threads), ov_fn(info.path, threads))
    fns = {f"{k}|{rt}": fn for k, (_, o, v) in forms.items() for rt, fn in (("ORT", o), ("OV", v))}
    res = cycle(fns, x, rounds, warmup=10, runs=20)
    for k, (info, _, _) in forms.items():
        mb = info.path.stat().st_size / 1e6
        print(f"    ECA gate as {k:15} {info.nodes:>5} nodes {mb:>7.1f} MB  ORT {res[k + '|ORT']:7.2f} ms  "
              f"OV {res[k + '|OV']:7.2f} ms")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="t0,t2,s")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--int8", action="store_true", help="also fp32 vs INT8 (OpenVINO, ONNX Runtime)")
    ap.add_argument("--int8-variants", default="s")
    ap.add_argument("--families", default="eca-resnet50,eca-mobilenetv2",
                    help="other families next to PartialNet (naive export vs ours); '' for none")
    ap.add_argument("--eca-forms", action="store_true", help="also time the ECA gate's deploy forms")
    args = ap.parse_args()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    import onnxruntime
    import torch

    print(f"CPU: {cpu}; python {sys.version.split()[0]}, torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}")
    with tempfile.TemporaryDirectory() as d:
        bench_naive_vs_deploy(variants, args.rounds, args.threads, Path(d))
        fams = [f.strip() for f in args.families.split(",") if f.strip()]
        if fams:
            bench_families(fams, args.rounds, args.threads, Path(d), args.eca_forms)
        if args.int8:
            bench_int8(args.rounds, args.threads, Path(d), [v.strip() for v in args.int8_variants.split(",") if v])


if __name__ == "__main__":
    main()
