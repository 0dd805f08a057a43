"""Where the time goes (``make bench`` with ``--layers``): our artifact beside the peer of its precision
class, layer time summed by kind of layer — the runtime's own per-layer counters, not a model of them.

  OpenVINO      PERF_COUNT on the compiled model (the same config the row was timed with): real time
                of every executed node, by node type, with the precision it executed in (the kernel
                name's suffix: I8 / bf16 / f32) — which layers run int8, where reorders and
                FakeQuantize / requantization sit
  ONNX Runtime  the session profiler: kernel time per node, by op type (QLinearConv / MatMulInteger…
                are the int8 kernels; ReorderInput/ReorderOutput the NCHWc layout changes)

Both are summed over ``runs`` inferences after a warm-up and divided by ``runs``: ms per inference; the
rows take turns, one inference each, so a slow moment of the machine hits them alike. Counters cost a
little time themselves: the breakdown says where time goes, the timed cycle says how fast.
"""

from __future__ import annotations

import collections
import json
import tempfile
from pathlib import Path

# layer kinds: (kind, node/op types) — first match wins; anything else is "other"
KINDS = (
    ("conv", ("Convolution", "GroupConvolution", "Conv", "FusedConv", "QLinearConv", "ConvInteger", "NhwcFusedConv")),
    ("matmul", ("FullyConnected", "FullyConnectedQuantizedLegacy", "FullyConnectedQuantized", "MatMul", "Gemm",
                "FusedMatMul", "FusedGemm", "QLinearMatMul", "MatMulInteger", "DynamicQuantizeMatMul")),
    ("split/concat", ("VariadicSplit", "Split", "Concat", "Slice", "StridedSlice")),
    ("layout", ("Reorder", "ReorderInput", "ReorderOutput", "Transpose", "Reshape", "Squeeze", "Unsqueeze",
                "Flatten")),
    ("quantize", ("FakeQuantize", "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear")),
    ("pool/norm", ("ReduceMean", "ReduceSum", "ReduceMax", "MVN", "RMS", "GlobalAveragePool", "AvgPool", "MaxPool",
                   "Pooling", "LayerNormalization", "Softmax", "SoftMax")),
)


def kind(op: str) -> str:
    for name, ops in KINDS:
        if op in ops:
            return name
    return "other"  # element-wise chains (OpenVINO "Subgraph", Mul, Add, Gelu, Sigmoid, …) and the rest


def exec_precision(exec_type: str) -> str:
    """The precision an OpenVINO kernel ran in, from its name (``brgconv_avx512_1x1_I8`` -> i8)."""
    tail = exec_type.rsplit("_", 1)[-1].lower()
    return {"u8": "i8", "i8": "i8", "bf16": "bf16", "f32": "f32", "f16": "f16"}.get(tail, tail or "?")


WARMUP = 3


class _OpenVINO:
    """One row under OpenVINO's perf counters: ``step()`` runs one inference and adds its counters."""

    def __init__(self, path, config: dict, x, threads: int):
        import openvino as ov

        cfg = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", **(config or {}), "PERF_COUNT": True}
        self.req, self.x = ov.Core().compile_model(str(path), "CPU", cfg).create_infer_request(), x
        self.ms: collections.Counter = collections.Counter()
        self.nodes: dict = collections.defaultdict(collections.Counter)
        self.runs = 0
        for _ in range(WARMUP):
            self.req.infer({0: x})

    def step(self) -> None:
        self.req.infer({0: self.x})
        for p in self.req.profiling_info:
            if p.status.name != "EXECUTED":
                continue
            k = kind(p.node_type)
            self.ms[k] += p.real_time.total_seconds() * 1e3
            if not self.runs:
                self.nodes[k][exec_precision(p.exec_type)] += 1
        self.runs += 1

    def finish(self) -> dict:
        return {k: {"ms": self.ms[k] / self.runs, "nodes": dict(self.nodes[k])} for k in self.ms}


class _OnnxRuntime:
    """One row under ONNX Runtime's profiler (kernel time per node; the warm-up runs are dropped)."""

    def __init__(self, path, level: str, x, threads: int, tmp: Path):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = threads, 1, 3
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                       "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                                       "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level]
        so.enable_profiling = True
        so.profile_file_prefix = str(tmp / Path(path).stem)
        self.s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        self.feed = {self.s.get_inputs()[0].name: x}
        self.runs = 0
        for _ in range(WARMUP):
            self.s.run(None, self.feed)

    def step(self) -> None:
        self.s.run(None, self.feed)
        self.runs += 1

    def finish(self) -> dict:
        events = json.loads(Path(self.s.end_profiling()).read_text())
        node_ev = [e for e in events if e.get("cat") == "Node" and e.get("name", "").endswith("_kernel_time")]
        per_run = len(node_ev) // (WARMUP + self.runs) if node_ev else 0
        ms: collections.Counter = collections.Counter()
        nodes: dict = collections.defaultdict(collections.Counter)
        for i, e in enumerate(node_ev[per_run * WARMUP:]):
            op = e.get("args", {}).get("op_name", "?")
            ms[kind(op)] += e["dur"] / 1e3
            if i < per_run:
                nodes[kind(op)][op] += 1
        return {k: {"ms": ms[k] / self.runs, "nodes": dict(nodes[k])} for k in ms}


# the pairs printed per model and batch: (class, our row, the peer row of that class)
PAIRS = (("fp32", "OV f32", "naive OV f32"), ("fp32", "ORT target fp32", "naive ORT"),
         ("bf16", "OV bf16", "naive OV default"),
         ("int8", "OV int8", "naive NNCF OV"), ("int8", "ORT int8", "naive ORT QDQ"),
         ("ONNX in ORT", "ours ORT", "naive ORT"))


def breakdown(src: dict, x, threads: int, runs: int = 10) -> dict:
    """{row: {kind: {"ms", "nodes"}}} for every row of PAIRS that ``src`` can reopen
    ({row: (runtime, path, config)}); the rows' runs are interleaved, one inference each in turn, so
    what moves the machine moves every row alike."""
    rows = [r for _cls, mine, peer in PAIRS for r in (mine, peer)]
    rows = [r for i, r in enumerate(rows) if r in src and r not in rows[:i]]
    with tempfile.TemporaryDirectory() as d:
        prof = {}
        for row in rows:
            runtime, path, cfg = src[row]
            prof[row] = (_OpenVINO(path, cfg, x, threads) if runtime == "openvino" else
                         _OnnxRuntime(path, (cfg or {}).get("level", "all"), x, threads, Path(d)))
        for _ in range(runs):
            for p in prof.values():
                p.step()
        return {row: p.finish() for row, p in prof.items()}


def _cell(rec: dict | None) -> str:
    if not rec:
        return "-"
    nodes = ", ".join(f"{k} {n}" for k, n in sorted(rec["nodes"].items(), key=lambda kv: -kv[1])[:3])
    return f"{rec['ms']:7.2f} ({nodes})"


def print_breakdown(variant: str, batch: int, layers: dict, runs: int) -> None:
    for cls, mine, peer in PAIRS:
        if mine not in layers or peer not in layers:
            continue
        a, b = layers[mine], layers[peer]
        print(f"\n  where time goes, {variant.upper()} b{batch} {cls}: {mine} vs {peer} "
              f"(runtime per-layer counters, ms per inference, mean of {runs} runs; nodes by precision / op)")
        kinds = sorted(set(a) | set(b), key=lambda k: -max(a.get(k, {}).get("ms", 0), b.get(k, {}).get("ms", 0)))
        for k in kinds:
            print(f"    {k:13} {_cell(a.get(k)):44} {_cell(b.get(k))}")
        ta, tb = (sum(r["ms"] for r in t.values()) for t in (a, b))
        print(f"    {'total':13} {ta:7.2f}{'':37} {tb:7.2f}   (ratio {ta / tb:.3f})" if tb else "")


ARITHMETIC = ("conv", "matmul")


def arithmetic_share(layers: dict) -> float | None:
    """The share of a row's layer time spent in convolutions and matrix products — the arithmetic a
    graph form cannot remove without changing the model; the rest (layout, split/concat, pooling,
    element-wise, Q/DQ) is what a better form can shrink."""
    total = sum(r["ms"] for r in layers.values())
    return sum(layers.get(k, {}).get("ms", 0.0) for k in ARITHMETIC) / total if total > 0 else None
