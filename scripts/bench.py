"""Benchmark (not a test): naive ``torch.onnx.export`` of the train form vs our deploy-form ONNX, both
in ONNX Runtime, plus PyTorch eager, for PartialNet T0/T2/S at 224², batch 1, 2 threads, in one
process. Runtimes are timed in blocks (warm-up per block) cycled round-robin, and the reported number
is the median of block medians (DESIGN.md §7: ONNX Runtime's idle workers spin and steal the cores
from whatever runs next, so alternating single runs would be unfair).

With ``--int8`` it also measures fp32 vs INT8 (ONNX Runtime QDQ, OpenVINO NNCF) latency and the
accuracy drop, on the demo model (held-out digits test set) and on S (latency only: no labelled
ImageNet data here).

    .venv/bin/python scripts/bench.py [--variants t0,t2,s] [--rounds 5] [--int8]
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="t0,t2,s")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--int8", action="store_true", help="also fp32 vs INT8 (OpenVINO, ONNX Runtime)")
    ap.add_argument("--int8-variants", default="s")
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
        if args.int8:
            bench_int8(args.rounds, args.threads, Path(d), [v.strip() for v in args.int8_variants.split(",") if v])


if __name__ == "__main__":
    main()
