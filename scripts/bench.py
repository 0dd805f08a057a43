"""Benchmark (not a test): what a user gets from a naive ``torch.onnx.export`` of the train form, run
in ONNX Runtime, against our artifacts per runtime and precision, for PartialNet T0/T2/S at 224²,
2 threads, batch 1 latency and batch 8 throughput — all timed in one process, side by side.

Peers (what a user builds from the naive file with each runtime's own tools; scripts/bench_peers.py):
  naive ORT       torch.onnx.export of the train form, ONNX Runtime (default session options)
  naive OV f32    the same file in OpenVINO, INFERENCE_PRECISION_HINT=f32
  naive OV default   the same file in OpenVINO, default hints (bf16 on a CPU with bf16 units; read back)
  naive NNCF OV   nncf.quantize (defaults) of the same file, OpenVINO default hints
  naive ORT QDQ   quant_pre_process + quantize_static (defaults) of the same file, ONNX Runtime
Ours (each built by the real export pipeline, so every artifact passed its parity gate):
  ours ORT        the ``onnx`` target's model.onnx in ONNX Runtime (the runtime users try first)
  ORT target      the ``onnxruntime`` target's artifact, with its recorded session options
  OV f32          the ``openvino`` target's IR, INFERENCE_PRECISION_HINT=f32 + its recorded runtime config
  ORT int8 / OV int8   the INT8 artifacts (QDQ / NNCF), calibrated on bundled photos
  OV bf16         where the CPU has bf16 units (OpenVINO OPTIMIZATION_CAPABILITIES lists BF16)
  GEMM peak       numpy float32 matmul (n=1024) with the same thread count, timed in the same cycle

Method (docs/architecture.md, "Measuring"): every runtime is timed in blocks (warm-up per block, then ``--runs`` timed
runs, median per block), blocks are cycled round-robin over all rows ``--rounds`` times, and the
number reported is the median of block medians. The goal table compares, per precision class
(fp32, bf16, int8) and batch, our best row with the best peer of the class, and says which classes
this CPU can judge (bf16 needs bf16 units, int8 VNNI/AMX). Its verdict comes from the round-by-round
ratio of the two rows (both timed in the same round) and the distribution-free 95 % interval of its
median: "met" when all of the interval is within the goal, "MISS" when all of it is over, else
"within noise" — on a noisy machine one ratio of medians decides nothing. ``--layers`` (default) adds
where the time goes: our artifact beside the peer of its class, layer time by kind from the runtimes'
own counters (scripts/bench_layers.py). ONNX Runtime's worker threads do not spin (they
would steal the cores from whatever runs next). The precision each runtime computes in is read back
from the runtime and printed. Achieved GFLOP/s = model FLOPs (2·MAC of Conv/MatMul/Gemm, counted on
our ONNX) / latency, against the GEMM rate measured in the same cycle.

    .venv/bin/python scripts/bench.py                       # everything (a few minutes)
    .venv/bin/python scripts/bench.py --variants t0 --no-int8 --no-batch8 --families ''   # quick subset

``--families`` (default ECA-ResNet-50 and ECA-MobileNetV2) adds the same naive-vs-ours comparison for
other registered families; ``--eca-forms`` also times the ECA gate's candidate deploy forms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/: the bench's peer module beside it
import bench_layers  # noqa: E402
import bench_peers as peers  # noqa: E402
from bench_peers import ort_session, ov_compiled  # noqa: E402,F401  (the bench's runtimes live with the peers)


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- timing

def block_median(fn, x, warmup: int, runs: int) -> tuple[float, float]:
    """(median wall seconds, process CPU seconds per run) of one block."""
    for _ in range(warmup):
        fn(x)
    ts = []
    c0 = time.process_time()
    for _ in range(runs):
        t0 = time.perf_counter()
        fn(x)
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts), (time.process_time() - c0) / runs


SETTLE_S = 0.3  # pause after every block: the previous block's thread pool goes idle first


def cycle(fns: dict, xs: dict, rounds: int, warmup: int, runs: int) -> dict:
    """{name: (median of block medians in ms, spread of the block medians in % of that median,
    median CPU ms per run, the block medians in ms round by round)}. The rounds pair the rows: a ratio
    of two rows taken round by round cancels what moved the whole machine during one round. CPU time
    (all threads of this process) is the work done; on a loaded machine the wall time also holds the
    time a runtime's threads waited for a core.

    Every block is followed by a pause (SETTLE_S): a thread pool keeps spinning for a while after its
    last call (OpenBLAS's after the GEMM row does, ~0.1 s), and without the pause it steals the cores
    from the next row's block — measured here as +6 % wall / +10 % CPU time for whatever row followed
    the GEMM, which was the naive baseline, flattering every ratio."""
    meds = {k: [] for k in fns}
    cpus = {k: [] for k in fns}
    for _ in range(rounds):
        for k, fn in fns.items():
            w, c = block_median(fn, xs[k], warmup, runs)
            time.sleep(SETTLE_S)
            meds[k].append(w)
            cpus[k].append(c)
    out = {}
    for k, v in meds.items():
        m = statistics.median(v)
        out[k] = (m * 1e3, 100 * (max(v) - min(v)) / m if m else 0.0, statistics.median(cpus[k]) * 1e3,
                  [t * 1e3 for t in v])
    return out


# ---------------------------------------------------------------- runtimes

def artifact_runner(out_dir: Path, art, threads: int):
    extra = art.extra or {}
    path = out_dir / art.path
    if art.target == "openvino":
        return ov_compiled(path, threads, extra.get("runtime_config"))
    return ort_session(path, threads, extra.get("graph_optimization_level", "all"))


# ---------------------------------------------------------------- model facts

def onnx_facts(path) -> tuple[int, float]:
    """(node count, GFLOPs = 2·MAC of Conv/MatMul/Gemm per image) of an ONNX file with static shapes."""
    import numpy as np
    import onnx

    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        dims = [d.dim_value for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    for init in m.graph.initializer:
        shapes[init.name] = list(init.dims)
    macs = 0
    batch = 1
    for n in m.graph.node:
        out = shapes.get(n.output[0])
        if not out or not all(out):
            continue
        if n.op_type == "Conv":
            w = shapes.get(n.input[1])
            if w:
                macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif n.op_type in ("MatMul", "Gemm"):
            a = shapes.get(n.input[0])
            if a:
                trans_a = any(at.name == "transA" and at.i for at in n.attribute)
                k = a[-2] if trans_a else a[-1]
                macs += int(np.prod(out)) * k
    inp = shapes.get(m.graph.input[0].name)
    if inp and inp[0]:
        batch = inp[0]
    return len(m.graph.node), 2 * macs / batch / 1e9


def gemm_fn(n: int = 1024):
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), np.float32)
    return lambda _x: np.matmul(a, b, out=c), 2 * n ** 3 / 1e9


def conv_peak_fns(threads: int, tmp: Path, c: int = 256, hw: int = 56, depth: int = 4, batch: int = 1):
    """This CPU's rate for the layer these models spend most of their time in: a chain of ``depth`` 1×1
    convolutions (``c``→``c`` channels at ``hw``², at the table's ``batch``: int8 kernels run faster
    on bigger problems; a chain, so the layout reorders at its ends hardly count) in OpenVINO, in f32
    and as a Q/DQ INT8 model (int8 per-channel weights, uint8 activations), so the INT8 floor is
    measured, not assumed (VNNI or not).
    Returns ({row: fn}, GFLOP per call)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, c, hw, hw])
    y = helper.make_tensor_value_info(f"y{depth}", TensorProto.FLOAT, [batch, c, hw, hw])
    f32_nodes, i8_nodes, f32_inits, i8_inits = [], [], [], [
        numpy_helper.from_array(np.array(4 / 255, np.float32), "xs"),
        numpy_helper.from_array(np.array(0, np.uint8), "xz"), numpy_helper.from_array(np.zeros(c, np.int8), "wz")]
    for i in range(depth):
        src, dst = ("x" if i == 0 else f"y{i}"), f"y{i + 1}"
        w = (rng.standard_normal((c, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
        scale = (np.abs(w).reshape(c, -1).max(1) / 127).astype(np.float32)
        f32_inits.append(numpy_helper.from_array(w, f"w{i}"))
        i8_inits += [numpy_helper.from_array(np.round(w / scale[:, None, None, None]).astype(np.int8), f"wq{i}"),
                     numpy_helper.from_array(scale, f"ws{i}")]
        f32_nodes += [helper.make_node("Conv", [src, f"w{i}"], [f"c{i}"]), helper.make_node("Relu", [f"c{i}"], [dst])]
        i8_nodes += [helper.make_node("QuantizeLinear", [src, "xs", "xz"], [f"q{i}"]),
                     helper.make_node("DequantizeLinear", [f"q{i}", "xs", "xz"], [f"d{i}"]),
                     helper.make_node("DequantizeLinear", [f"wq{i}", f"ws{i}", "wz"], [f"wd{i}"], axis=0),
                     helper.make_node("Conv", [f"d{i}", f"wd{i}"], [f"c{i}"]),
                     helper.make_node("Relu", [f"c{i}"], [dst])]
    fns = {}
    for name, nodes, inits in (("conv f32 peak", f32_nodes, f32_inits), ("conv int8 peak", i8_nodes, i8_inits)):
        f = tmp / (name.replace(" ", "_") + ".onnx")
        graph = helper.make_graph(nodes, name.replace(" ", "_"), [x], [y], inits)
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(f))
        fns[name] = ov_compiled(f, threads)[0]
    return fns, batch * depth * 2 * c * c * hw * hw / 1e9


def cpu_flags() -> str:
    """The CPU's class and the features that decide the precision levers: VNNI (int8 dot products),
    bf16 units, AMX."""
    flags = peers.cpu_flags()
    if not flags:
        return "flags unknown"
    want = ("avx2", "avx512f", "avx_vnni", "avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
    return f"class {peers.cpu_class(flags)}: " + " ".join(f for f in want if f in flags) + \
        " (no VNNI: INT8 runs on AVX2 multiply-adds)" * (not any("vnni" in f or "amx" in f for f in flags))


# ---------------------------------------------------------------- artifacts

def calib_dir(tmp: Path) -> Path:
    import numpy as np
    from PIL import Image

    from partialdeploy.images import natural_images

    d = tmp / "calib"
    if not d.exists():
        d.mkdir()
        for i, im in enumerate(natural_images()):
            Image.fromarray(np.ascontiguousarray(im)).save(d / f"{i}.png")
    return d


TUNE_BUDGET_S = 30  # export's measured selection: room for every form of the big models (the default is 5 s)


def export(ckpt: Path | None, targets, precision: str, out: Path, batch: int, calib: Path | None,
           img_size: int | None = 224):
    from partialdeploy import parity
    from partialdeploy.exporting.options import ExportOptions
    from partialdeploy.exporting.request import ExportRequest
    from partialdeploy.exporting.run import run_export

    # T0/T2/S here have random weights: their logits are near-ties, so top-1 agreement says nothing
    # about an INT8 model. Their INT8 artifacts are gated on cosine only (latency rows); the INT8
    # accuracy gate itself is held on the trained demo model (see the "demo" line).
    tol = {"int8": parity.Tolerance(cosine_min=0.7)} if ckpt is not None else {}
    from partialdeploy.errors import PartialDeployError

    t0 = time.perf_counter()
    try:
        res = run_export(ExportRequest(checkpoint=ckpt, targets=tuple(targets), precision=precision, out_dir=out,
                                       batch=batch, calib=calib, img_size=img_size, tolerances=tol,
                                       options=ExportOptions(tune_budget=TUNE_BUDGET_S)))
    except PartialDeployError as e:  # e.g. the memory budget on a busy machine: report, go on
        say(f"  {','.join(targets)} {precision} b{batch}: not exported: {e}")
        return {}
    for f in res.failures + res.skipped:
        say(f"  {f.target} {precision} b{batch}: {getattr(f, 'error', None) or getattr(f, 'reason', '')}")
    say(f"  exported {','.join(targets)} {precision} b{batch} in {time.perf_counter() - t0:.0f} s")
    for a in res.artifacts:  # what export's measured selection kept, and what it timed (ms)
        tune = (a.extra or {}).get("tuning") or {}
        if tune.get("timed"):
            lat = ", ".join(f"{k} {v:.2f}" for k, v in tune["latency_ms"].items())
            say(f"    {a.target} {precision}: kept {tune['chosen']!r} ({lat}; skipped: {tune.get('skipped') or '-'})")
    return {a.target: a for a in res.artifacts}


# ---------------------------------------------------------------- one variant

def bench_variant(v: str, args, tmp: Path, bf16_ok: bool) -> dict:
    import numpy as np
    import torch

    from partialdeploy.exporting.onnx import naive_export
    from partialdeploy.images import natural_batch
    from partialdeploy.models import build_model
    from partialdeploy.families import variant_spec

    spec = variant_spec("partialnet", v)
    torch.manual_seed(0)
    model = build_model(spec).eval()
    ckpt = tmp / f"{v}.pth"
    torch.save(model.state_dict(), ckpt)
    batches = [b for b in args.batches if b != 8 or args.batch8]
    result = {"variant": v, "batches": {}}
    for b in batches:
        say(f"{v.upper()} batch {b}: exporting")
        d = tmp / f"{v}-b{b}"
        naive = naive_export_b(model, d / "naive.onnx", b, naive_export)
        # label -> (fn, computed precision, onnx/IR file for node count): the peers first
        rows, failed = peers.build_peers(naive, calib_arrays(spec), args.threads, say) if args.peers else (
            {"naive ORT": (*ort_session(naive, args.threads), naive)}, {})
        fp = export(ckpt, ("onnx", "onnxruntime", "openvino"), "fp32", d / "fp32", b, None)
        ours_onnx = d / "fp32" / fp["onnx"].path if "onnx" in fp else None
        if ours_onnx:
            rows["ours ORT"] = (*ort_session(ours_onnx, args.threads), ours_onnx)
        if "onnxruntime" in fp:
            rows["ORT target fp32"] = (*artifact_runner(d / "fp32", fp["onnxruntime"], args.threads),
                                       d / "fp32" / fp["onnxruntime"].path)
        if "openvino" in fp:
            rows["OV f32"] = (*artifact_runner(d / "fp32", fp["openvino"], args.threads), None)
        if args.int8:
            q = export(ckpt, ("onnxruntime", "openvino"), "int8", d / "int8", b, calib_dir(tmp))
            for t, label in (("onnxruntime", "ORT int8"), ("openvino", "OV int8")):
                if t in q:
                    fn, computes = artifact_runner(d / "int8", q[t], args.threads)
                    rows[label] = (fn, "i8+" + computes,
                                   d / "int8" / q[t].path if t == "onnxruntime" else None)
        h = {}
        if bf16_ok and args.bf16:
            h = export(ckpt, ("openvino",), "bf16", d / "bf16", b, None)
            if "openvino" in h:
                rows["OV bf16"] = (*artifact_runner(d / "bf16", h["openvino"], args.threads), None)
        arts = {"ORT target fp32": (d / "fp32", fp.get("onnxruntime")), "OV f32": (d / "fp32", fp.get("openvino")),
                "OV bf16": (d / "bf16", h.get("openvino"))}
        if args.int8:
            arts.update({"ORT int8": (d / "int8", q.get("onnxruntime")), "OV int8": (d / "int8", q.get("openvino"))})
        src = layer_sources(naive, ours_onnx, rows, arts)
        gemm, gemm_gflop = gemm_fn()
        peaks, conv_gflop = conv_peak_fns(args.threads, d, batch=b)
        x = natural_batch(224, spec.mean, spec.std, n=b).astype(np.float32)
        fns = {"GEMM peak": gemm, **peaks, **{k: r[0] for k, r in rows.items()}}
        xs = {k: x for k in fns}
        x_conv = np.zeros((b, 256, 56, 56), np.float32) + 0.5
        xs.update({k: x_conv for k in peaks})
        say(f"{v.upper()} batch {b}: timing {len(fns)} rows × {args.rounds} rounds")
        times = cycle(fns, xs, args.rounds, args.warmup, args.runs if b == 1 else max(3, args.runs // 4))
        _, gflop = onnx_facts(ours_onnx) if ours_onnx else (0, float("nan"))
        peak = gemm_gflop / (times["GEMM peak"][0] / 1e3)  # wall: numpy's GEMM threads wait for cores too
        conv_f32, conv_i8 = (conv_gflop / (times[k][0] / 1e3) for k in ("conv f32 peak", "conv int8 peak"))
        table = {}
        for k, (_fn, prec, f) in rows.items():
            ms, spread, cpu_ms, per_round = times[k]
            nodes = onnx_facts(f)[0] if f is not None else None
            table[k] = {"ms": ms, "spread_pct": spread, "cpu_ms": cpu_ms, "computes": prec, "nodes": nodes,
                        "gflops": gflop * b / (ms / 1e3), "rounds_ms": per_round}
        base, base_cpu = table["naive ORT"]["ms"], table["naive ORT"]["cpu_ms"]
        for r in table.values():
            r["ratio"] = r["ms"] / base
            r["cpu_ratio"] = r["cpu_ms"] / base_cpu
        # the floor: the whole model's FLOPs at the best rate this CPU reached on one big layer, as a
        # ratio to the naive row (no artifact can beat it without doing less arithmetic)
        floor_f32, floor_i8 = (gflop * b / max(rate, 1e-9) * 1e3 / base for rate in (max(peak, conv_f32),
                                                                                      max(conv_i8, 1e-9)))
        result["batches"][b] = {"rows": table, "peers_failed": failed, "gemm_gflops": peak,
                                "gemm_spread_pct": times["GEMM peak"][1],
                                "conv_f32_gflops": conv_f32, "conv_int8_gflops": conv_i8, "model_gflop": gflop,
                                "floor_fp32": floor_f32, "floor_int8": floor_i8}
        print_batch(v, b, result["batches"][b], args)
        if args.layers:
            layers = bench_layers.breakdown(src, x, args.threads)
            bench_layers.print_breakdown(v, b, layers, 10)
            result["batches"][b]["layers"] = layers
    return result


def layer_sources(naive: Path, ours_onnx: Path | None, rows: dict, arts: dict) -> dict:
    """{row: (runtime, file, config)} to reopen each timed row for the per-layer breakdown, with the
    config the row was timed with (scripts/bench_layers.py)."""
    src = {"naive ORT": ("onnxruntime", naive, {}),
           "naive OV f32": ("openvino", naive, {"INFERENCE_PRECISION_HINT": "f32"}),
           "naive OV default": ("openvino", naive, {})}
    for row, f in (("naive NNCF OV", naive.with_name("naive_nncf.xml")),
                   ("naive ORT QDQ", naive.with_name("naive_qdq.onnx"))):
        if row in rows and f.exists():
            src[row] = ("openvino" if f.suffix == ".xml" else "onnxruntime", f, {})
    if ours_onnx is not None:
        src["ours ORT"] = ("onnxruntime", ours_onnx, {})
    for row, (d, art) in arts.items():
        if art is None or row not in rows:
            continue
        extra = art.extra or {}
        if art.target == "openvino":
            src[row] = ("openvino", d / art.path, {"INFERENCE_PRECISION_HINT": "f32",
                                                   **(extra.get("runtime_config") or {})})
        else:
            src[row] = ("onnxruntime", d / art.path, {"level": extra.get("graph_optimization_level", "all")})
    return src


def calib_arrays(spec):
    """The calibration images the peers quantize on: the same bundled photographs our INT8 export is
    given (``calib_dir``), preprocessed for the model."""
    from partialdeploy.images import natural_batch, natural_images

    return natural_batch(224, spec.mean, spec.std, n=len(natural_images()))


def demo_int8(tmp: Path) -> None:
    """The INT8 accuracy gate on the trained demo model (held-out digits), both INT8 targets."""
    arts = export(None, ("onnxruntime", "openvino"), "int8", tmp / "demo-int8", 1, None, img_size=None)
    for t, a in arts.items():
        acc = next((p for p in a.parity if p.acc is not None), None)
        if acc:
            print(f"demo INT8 {t}: accuracy {100 * acc.acc_ref:.2f}% -> {100 * acc.acc:.2f}% on "
                  f"{acc.n} held-out digits (gate: drop <= 0.5 points), top-1 agreement "
                  f"{100 * a.parity[0].top1_agree:.0f}% on the parity images")


def naive_export_b(model, path: Path, batch: int, naive_export) -> Path:
    """naive_export at batch ``batch`` (the train form, no folding, no simplification)."""
    import torch

    from partialdeploy.backends.target import quiet

    path.parent.mkdir(parents=True, exist_ok=True)
    if batch == 1:
        return naive_export(model, path, 224).path
    with quiet(), torch.no_grad():
        torch.onnx.export(model.eval(), (torch.zeros(batch, 3, 224, 224),), str(path), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"])
    return path


# ---------------------------------------------------------------- output

def print_batch(v: str, b: int, res: dict, args) -> None:
    rows = res["rows"]
    print(f"\n{v.upper()}, 224², batch {b}, {args.threads} threads — median of {args.rounds} block medians; "
          f"model {res['model_gflop']:.2f} GFLOP/image; GEMM peak {res['gemm_gflops']:.0f} GFLOP/s "
          f"(spread {res['gemm_spread_pct']:.0f}%); 1×1 conv in OpenVINO f32 {res['conv_f32_gflops']:.0f}, "
          f"int8 {res['conv_int8_gflops']:.0f} GOP/s → floor ratio fp32 {res['floor_fp32']:.2f}, "
          f"int8 {res['floor_int8']:.2f}")
    hdr = (f"  {'row':16} {'computes':>8} {'nodes':>6} {'ms':>8} {'img/s':>7} {'spread':>7} {'ratio':>6} "
           f"{'GFLOP/s':>8} {'% peak':>7} {'CPU ms':>7} {'CPU ratio':>9}")
    print(hdr)
    best_f32 = max(res["gemm_gflops"], res.get("conv_f32_gflops", 0.0))  # "% peak": of the best f32 rate
    for k, r in rows.items():
        print(f"  {k:16} {r['computes']:>8} {r['nodes'] if r['nodes'] is not None else '-':>6} {r['ms']:8.2f} "
              f"{1e3 * b / r['ms']:7.1f} {r['spread_pct']:6.0f}% {r['ratio']:6.3f} {r['gflops']:8.1f} "
              f"{100 * r['gflops'] / best_f32:6.0f}% {r['cpu_ms']:7.2f} {r['cpu_ratio']:9.3f}")
    beat = beaten_floors(res)
    if beat:  # the chain's shape is not this model's fastest: its rate is an estimate, not a bound
        print(f"  note: {', '.join(beat)} ran faster than the 1×1-conv chain's rate allows; that rate is not this "
              "model's best, so the floor of the class is not shown (the arith column is the bound)")
    for k, e in res.get("peers_failed", {}).items():
        print(f"  {k:16} did not build: {e}  (counted as a win for us)")
    sys.stdout.flush()


def beaten_floors(res: dict) -> list[str]:
    """Rows of a batch table that ran faster than the floor of their class (fp32 / int8): the chain of
    1×1 convolutions is one layer shape, and some models' layers run faster than it, so that class's
    floor is no floor for this table."""
    floors = {"fp32": res.get("floor_fp32"), "int8": res.get("floor_int8")}
    base = res["rows"]["naive ORT"]["ms"]
    return [k for k, r in res["rows"].items()
            if r["ms"] / base < (floors.get(peers.row_class(k, r["computes"])) or 0.0)]


def goal_table(results: list[dict], flags: set[str]) -> list[dict]:
    """Per model, batch and precision class: our best gated row against the best peer of the class
    (bench_peers.peer_goals), with the class's floor (the model's FLOPs at the 1×1-conv chain's rate, as
    a ratio to that peer: an estimate, left out when a row of the class beat it); and, with
    --layers, the arithmetic bound: our time if every layer other than conv and matmul took none (the
    share from our row's per-layer counters), over the peer's — a goal under it cannot be met by any
    form of the graph that keeps the same convolutions and matrix products, only by faster kernels."""
    out = []
    for res in results:
        for b, br in res["batches"].items():
            goals = peers.peer_goals(res["variant"], b, br["rows"], br.get("peers_failed", {}), flags)
            naive_ms = br["rows"]["naive ORT"]["ms"]
            beaten = {peers.row_class(k, br["rows"][k]["computes"]) for k in beaten_floors(br)}
            for g in goals:
                floor = {"fp32": br.get("floor_fp32"), "int8": br.get("floor_int8")}.get(g["class"])
                if floor is not None and g.get("peer_ms") and g["class"] not in beaten:
                    g["floor"] = floor * naive_ms / g["peer_ms"]
                share = bench_layers.arithmetic_share(br.get("layers", {}).get(g["ours"] or "", {}))
                if share is not None and g.get("peer_ms") and g.get("ours_ms"):
                    # our time if every layer but conv and matmul took none, over the peer's
                    g["arith_bound"] = g["ours_ms"] * share / g["peer_ms"]
            out += goals
    return out


# ---- other families (ECA-Net, partial ConvNeXt): naive export vs ours, and the ECA gate's forms
# (simple helpers: a session function and ms per row)


def ort_fn(path, threads):
    return ort_session(path, threads)[0]


def ov_fn(path, threads):
    return ov_compiled(path, threads)[0]


def cycle_ms(fns: dict, x, rounds: int, warmup: int, runs: int) -> dict:
    return {k: v[0] for k, v in cycle(fns, {k: x for k in fns}, rounds, warmup, runs).items()}



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
    from partialdeploy.exporting.onnx import export_onnx, naive_export
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
            res = cycle_ms(fns, x, rounds, warmup=10, runs=20)
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

    from partialdeploy.exporting.onnx import export_onnx
    from partialdeploy.models.eca_deploy import ECAGateD

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
    res = cycle_ms(fns, x, rounds, warmup=10, runs=20)
    for k, (info, _, _) in forms.items():
        mb = info.path.stat().st_size / 1e6
        print(f"    ECA gate as {k:15} {info.nodes:>5} nodes {mb:>7.1f} MB  ORT {res[k + '|ORT']:7.2f} ms  "
              f"OV {res[k + '|OV']:7.2f} ms")


def bench_int8_fallback(rounds, threads, tmp: Path):
    """INT8 with and without the fallback, through the real pipeline: the demo model as
    trained, and the demo with activation outlier channels injected in two blocks (function unchanged)
    — plain PTQ (gate disabled so the artifact is kept) vs the fallback mix, latency interleaved and
    top-1 agreement / accuracy on the 360 held-out digits. TensorRT: the bundle's Q/DQ ONNX (what the
    device builds), timed in ONNX Runtime on CPU here — no GPU, so not TensorRT's latency."""
    import numpy as np
    from safetensors.torch import save_file

    from partialdeploy import demo
    from partialdeploy.checkpoint import load_checkpoint, load_model, resolve_spec
    from partialdeploy.models.outliers import inject_activation_outliers
    from partialdeploy.exporting.options import ExportOptions
    from partialdeploy.exporting.request import ExportRequest
    from partialdeploy.exporting.run import run_export
    from partialdeploy.parity import Tolerance

    ck = load_checkpoint(demo.DEMO_CKPT)
    spec, _ = resolve_spec(ck)
    blocks = ["stages.0.blocks.0", "stages.4.blocks.0"]
    model = inject_activation_outliers(load_model(ck, spec), blocks, scale=300.0)
    outl = tmp / "demo-outliers.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(outl), metadata=dict(ck.metadata))
    loose = {"int8": Tolerance(cosine_min=-1.0, top1_min=0.0, acc_drop_max=100.0)}
    print(f"\nINT8 with and without fallback, batch 1, {threads} threads (ms, median of {rounds} block medians; "
          "agreement/accuracy on the 360 held-out digits; tensorrt*: the bundle's Q/DQ ONNX in ONNX Runtime on "
          "CPU, no GPU here)")
    for name, ckpt in (("demo", None), ("demo + outliers in " + ", ".join(blocks), outl)):
        arts = {}
        for mode in ("plain", "fallback"):
            out = tmp / f"fb-{mode}-{ckpt.stem if ckpt else 'demo'}"
            opts = ExportOptions(int8_fallback=mode == "fallback", threads=threads)
            res = run_export(ExportRequest(checkpoint=ckpt, targets=("onnxruntime", "openvino", "tensorrt"),
                                           precision="int8",
                                           out_dir=out, options=opts, tolerances=loose if mode == "plain" else {}))
            for f in res.failures:
                print(f"  {name} {f.target} {mode}: FAILED {f.error[:300]}")
            for a in res.artifacts:  # a TensorRT bundle: its Q/DQ model.onnx, run in ONNX Runtime here
                arts[(a.target, mode)] = (out / a.path / "model.onnx" if a.target == "tensorrt" else out / a.path, a)
        x = np.ascontiguousarray(demo.eval_set(spec)[0][:1])
        fns = {k: (ov_fn if k[0] == "openvino" else ort_fn)(p, threads) for k, (p, _a) in arts.items()}
        lat = cycle_ms(fns, x, rounds, warmup=10, runs=30) if fns else {}
        print(f"  {name}")
        for t in ("onnxruntime", "openvino", "tensorrt"):
            if (t, "plain") not in arts or (t, "fallback") not in arts:
                continue

            def gate(a):
                p = next((q for q in a.parity if q.acc is not None), a.parity[-1])
                return f"agree {100 * p.top1_agree:5.1f}% acc {100 * p.acc:.2f}%" if p.acc is not None \
                    else f"agree {100 * p.top1_agree:5.1f}%"
            pa, fa = arts[(t, "plain")][1], arts[(t, "fallback")][1]
            fl = (fa.extra.get("int8_fallback") or {}).get("float_blocks") or []
            label = "tensorrt*" if t == "tensorrt" else t
            print(f"    {label:12} plain {lat[(t, 'plain')]:6.3f} ms ({gate(pa)})  "
                  f"fallback {lat[(t, 'fallback')]:6.3f} ms ({gate(fa)})  "
                  f"×{lat[(t, 'fallback')] / lat[(t, 'plain')]:.2f}  float: {', '.join(fl) or 'none'}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="t0,t2,s")
    ap.add_argument("--rounds", type=int, default=9,
                    help="blocks per row (cycled round-robin); the goal verdicts need ≥ 6 for a 95 %% interval")
    ap.add_argument("--runs", type=int, default=20, help="timed runs per batch-1 block (batch 8: a quarter)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed runs at the start of every block")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True, help="INT8 artifacts")
    ap.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                    help="OpenVINO bf16 (only where the CPU has bf16 units)")
    ap.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True,
                    help="the peers beside naive ONNX Runtime: naive in OpenVINO (f32 and default hints), NNCF "
                         "and ONNX Runtime static INT8 of the naive file")
    ap.add_argument("--demo", action=argparse.BooleanOptionalAction, default=True,
                    help="the INT8 accuracy gate on the trained demo (with --int8)")
    ap.add_argument("--batch8", action=argparse.BooleanOptionalAction, default=True, help="batch 8 throughput")
    ap.add_argument("--batches", type=lambda t: [int(b) for b in t.split(",") if b.strip()], default=[1, 8],
                    help="batch sizes to time, e.g. 8 (default 1,8)")
    ap.add_argument("--json", type=Path, help="also write the measurements here")
    ap.add_argument("--families", default="eca-resnet50,eca-mobilenetv2",
                    help="other families next to PartialNet (naive export vs ours); '' for none")
    ap.add_argument("--eca-forms", action="store_true", help="also time the ECA gate's deploy forms")
    ap.add_argument("--int8-fallback", action="store_true", help="INT8 with and without the fallback")
    ap.add_argument("--layers", action=argparse.BooleanOptionalAction, default=True,
                    help="where the time goes: our artifact and the peer of its class, layer time by kind "
                         "(OpenVINO perf counters, ONNX Runtime profiler; scripts/bench_layers.py)")
    args = ap.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # numpy's GEMM: same threads
        os.environ[var] = str(args.threads)
    variants = [v.strip().lower() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in variants if v not in ("t0", "t1", "t2", "s", "m", "l")]
    if bad:
        print(f"error: unknown variant(s) {', '.join(bad)}; choose from t0,t1,t2,s,m,l", file=sys.stderr)
        sys.exit(2)

    import onnxruntime
    import openvino
    import torch

    from partialdeploy.backends.openvino.target import bf16_error, cpu_capabilities

    torch.set_num_threads(args.threads)
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    bf16_ok = bf16_error() is None
    print(f"CPU: {cpu} ({os.cpu_count()} logical CPUs; {cpu_flags()}; OpenVINO capabilities "
          f"{', '.join(cpu_capabilities())}); "
          f"python {sys.version.split()[0]}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
          f"openvino {openvino.__version__.split('-')[0]}; load average {os.getloadavg()[0]:.1f}")
    if args.bf16 and not bf16_ok:
        print("bf16: not measured — " + bf16_error())
    t0 = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as d:
        if args.int8 and args.demo:
            demo_int8(Path(d))
        for v in variants:
            results.append(bench_variant(v, args, Path(d), bf16_ok))
        fams = [f.strip() for f in args.families.split(",") if f.strip()]
        if fams:
            bench_families(fams, args.rounds, args.threads, Path(d), args.eca_forms)
        if args.int8_fallback:
            bench_int8_fallback(args.rounds, args.threads, Path(d))
    flags = peers.cpu_flags()
    goals = goal_table(results, flags)
    peers.print_peer_goals(goals, flags)
    print(f"\n(total {time.perf_counter() - t0:.0f} s; load average at the end {os.getloadavg()[0]:.1f})")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "goals": goals}, indent=1, default=str))


if __name__ == "__main__":
    main()
