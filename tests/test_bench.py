"""The benchmark's own measuring pieces (scripts/bench.py is not a test; these check it measures what
it says): the floor models really run a 1×1 conv in f32 and in int8 in OpenVINO, the cycle pauses
between blocks so one row's thread pool cannot slow the next row, the peers (scripts/bench_peers.py)
build and run with their precision read back, and the goal table compares per precision class."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tiny_onnx(path: Path, batch: int = 1) -> Path:
    """A small conv net (conv-relu ×2, pool, gemm) as a naive export would give: 3×32×32 -> 10."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n) for n, s in
             (("w1", (16, 3, 3, 3)), ("w2", (16, 16, 3, 3)), ("fc", (16, 10)), ("b", (10,)))]
    nodes = [helper.make_node("Conv", ["input", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc", "b"], ["logits"])]
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 32, 32])
    g = helper.make_graph(nodes, "tiny", [inp],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


@pytest.fixture(scope="module")
def peers(bench):
    return sys.modules["bench_peers"]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_script", ROOT / "scripts" / "bench.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_script"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_floor_models_compute_the_same_conv_in_f32_and_int8(bench, tmp_path):
    import openvino as ov

    fns, gflop = bench.conv_peak_fns(1, tmp_path, c=32, hw=8, depth=2)
    assert set(fns) == {"conv f32 peak", "conv int8 peak"}
    assert gflop == pytest.approx(2 * 2 * 32 * 32 * 8 * 8 / 1e9)
    x = np.random.default_rng(1).random((1, 32, 8, 8), dtype=np.float32)
    f32, i8 = (np.asarray(fns[k](x)).ravel() for k in ("conv f32 peak", "conv int8 peak"))
    cos = float(f32 @ i8 / (np.linalg.norm(f32) * np.linalg.norm(i8)))
    assert 0.98 < cos < 1.0  # quantized, so close but not equal
    # the int8 row must execute its convolutions in int8 (else the "int8 floor" would be an f32 one)
    compiled = ov.Core().compile_model(str(tmp_path / "conv_int8_peak.onnx"), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    convs = [n.get_rt_info()["runtimePrecision"].astype(str) for n in compiled.get_runtime_model().get_ops()
             if n.get_rt_info()["layerType"].astype(str) == "Convolution"]
    assert convs and all(p.lower() in ("i8", "u8") for p in convs), convs
    # measured at the table's batch (int8 kernels run faster on bigger problems): the FLOPs scale with it
    (tmp_path / "b3").mkdir()
    fns8, gflop8 = bench.conv_peak_fns(1, tmp_path / "b3", c=32, hw=8, depth=2, batch=3)
    assert gflop8 == pytest.approx(3 * gflop)
    x3 = np.random.default_rng(2).random((3, 32, 8, 8), dtype=np.float32)
    assert np.asarray(fns8["conv int8 peak"](x3)).shape == (3, 32, 8, 8)


def test_cycle_pauses_after_every_block(bench, monkeypatch):
    events = []
    monkeypatch.setattr(bench.time, "sleep", lambda s: events.append(("sleep", s)))
    fns = {"a": lambda x: events.append("a"), "b": lambda x: events.append("b")}
    out = bench.cycle(fns, {"a": 0, "b": 0}, rounds=2, warmup=0, runs=1)
    assert set(out) == {"a", "b"}
    assert events == ["a", ("sleep", bench.SETTLE_S), "b", ("sleep", bench.SETTLE_S)] * 2
    assert bench.SETTLE_S >= 0.1  # OpenBLAS spins ~0.1 s after a call


def test_peers_build_run_and_read_their_precision_back(peers, tmp_path):
    """Every peer a user would pick builds from the naive file and runs; the precision each computes in
    is read back from the runtime (OpenVINO's default hints: bf16 where the CPU has bf16 units)."""
    from partialdeploy.backends.openvino.target import bf16_error

    naive = _tiny_onnx(tmp_path / "naive.onnx")
    calib = np.random.default_rng(2).random((8, 3, 32, 32), dtype=np.float32)
    rows, failed = peers.build_peers(naive, calib, 1, lambda m: None)
    assert not failed, failed
    assert set(rows) == set(peers.PEER_ROWS)
    x = calib[:1]
    ref = np.asarray(rows["naive ORT"][0](x)).ravel()
    for label, (fn, _computes, _f) in rows.items():
        y = np.asarray(fn(x)).ravel()
        cos = float(ref @ y / (np.linalg.norm(ref) * np.linalg.norm(y)))
        assert y.shape == (10,) and cos > 0.95, (label, cos)
    assert rows["naive ORT"][1] == "f32" and rows["naive OV f32"][1] == "f32"
    assert rows["naive OV default"][1] == ("bf16" if bf16_error() is None else "f32")
    assert rows["naive NNCF OV"][1].startswith("i8+") and rows["naive ORT QDQ"][1] == "i8+f32"
    assert peers.row_class("naive OV default", rows["naive OV default"][1]) == (
        "bf16" if bf16_error() is None else "fp32")
    import onnx  # the ORT peer really is a Q/DQ model
    ops = {n.op_type for n in onnx.load(str(rows["naive ORT QDQ"][2])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_a_peer_that_crashes_is_reported_and_counts_as_a_win(peers, tmp_path, monkeypatch):
    naive = _tiny_onnx(tmp_path / "naive.onnx")
    monkeypatch.setattr(peers, "nncf_peer", lambda *a: (_ for _ in ()).throw(KeyError("rpe_k")))
    said = []
    rows, failed = peers.build_peers(naive, np.zeros((2, 3, 32, 32), np.float32), 1, said.append)
    assert "naive NNCF OV" not in rows and "KeyError" in failed["naive NNCF OV"] and said
    table = {"naive ORT": {"ms": 10.0, "computes": "f32"}, "naive ORT QDQ": {"ms": 5.0, "computes": "i8+f32"},
             "OV int8": {"ms": 4.0, "computes": "i8+f32"}}
    int8 = next(g for g in peers.peer_goals("t0", 1, table, failed, {"avx512_vnni"}) if g["class"] == "int8")
    assert int8["peer"] == "naive ORT QDQ" and int8["ratio"] == pytest.approx(0.8) and int8["verdict"] == "met"
    assert "naive NNCF OV" in int8["crashed"]
    alone = {"naive ORT": {"ms": 10.0, "computes": "f32"}, "OV int8": {"ms": 4.0, "computes": "i8+f32"}}
    both = {**failed, "naive ORT QDQ": "ValueError: x"}
    int8 = next(g for g in peers.peer_goals("t0", 1, alone, both, {"avx512_vnni"}) if g["class"] == "int8")
    assert int8["ratio"] is None and int8["verdict"] == "win (every peer crashed)"


def test_goal_table_judges_only_what_the_cpu_can_run(peers):
    avx2 = {"avx2", "fma"}
    assert peers.cpu_class(avx2) == "AVX2" and peers.cpu_class({"avx512f", "avx512_vnni"}) == "AVX-512 VNNI"
    assert peers.cpu_class({"avx512f", "amx_bf16"}) == "AMX"
    j = peers.judgeable(avx2)
    assert j["fp32"] is None and "bf16" in j["bf16"] and "VNNI" in j["int8"]
    rows = {"naive ORT": {"ms": 10.0, "computes": "f32", "cpu_ms": 18.0},
            "naive OV f32": {"ms": 9.0, "computes": "f32", "cpu_ms": 20.0},
            "naive OV default": {"ms": 9.0, "computes": "f32"},
            "ours ORT": {"ms": 9.4, "computes": "f32", "cpu_ms": 16.0},
            "OV f32": {"ms": 7.0, "computes": "f32", "cpu_ms": 13.5},
            "naive ORT QDQ": {"ms": 6.0, "computes": "i8+f32"},
            "OV int8": {"ms": 5.7, "computes": "i8+f32"}}
    goals = {g["class"]: g for g in peers.peer_goals("s", 8, rows, {}, avx2)}
    assert goals["fp32"]["peer"] in ("naive OV f32", "naive OV default")  # default hints ran f32: an fp32 peer
    assert goals["fp32"]["ratio"] == pytest.approx(7 / 9) and goals["fp32"]["verdict"] == "met"
    assert goals["fp32"]["cpu_ratio"] == pytest.approx(13.5 / 18)  # least CPU time of ours over the peers'
    assert goals["ONNX in ORT"]["cpu_ratio"] == pytest.approx(16 / 18)
    assert goals["bf16"]["verdict"] == "not on this CPU" and not goals["bf16"]["judged"]
    assert goals["int8"]["verdict"] == "MISS (not judged here)"
    assert goals["ONNX in ORT"]["ratio"] == pytest.approx(0.94) and goals["ONNX in ORT"]["verdict"] == "met"


def test_median_interval_is_the_distribution_free_one(peers):
    """k-th smallest / k-th largest with the binomial tail: n=9 -> 2nd and 8th (96.1 %); below 6 rounds
    no 95 % interval exists and (min, max) comes with its real coverage."""
    lo, hi, cover = peers.median_interval([9, 1, 8, 2, 7, 3, 6, 4, 5])
    assert (lo, hi) == (2, 8) and cover == pytest.approx(1 - 2 * 10 / 512)
    lo, hi, cover = peers.median_interval([3, 1, 2, 5, 4])
    assert (lo, hi) == (1, 5) and cover == pytest.approx(1 - 2 / 32) and cover < 0.95
    lo, hi, cover = peers.median_interval(list(range(20)))
    assert (lo, hi) == (5, 14) and cover >= 0.95  # P(B(20, .5) <= 5) = 0.0207 <= 0.025 < P(B <= 6)


def test_goal_verdict_comes_from_the_paired_rounds(peers):
    """Round by round ratios of the two rows decide: a machine-wide slow round moves both rows and
    cancels; an interval that straddles the goal is "within noise", not a pass or a miss."""
    def rows(ours, peer):
        return {"naive ORT": {"ms": 20.0, "computes": "f32", "rounds_ms": [20.0] * len(ours)},
                "naive OV f32": {"ms": sorted(peer)[len(peer) // 2], "computes": "f32", "rounds_ms": peer},
                "OV f32": {"ms": sorted(ours)[len(ours) // 2], "computes": "f32", "rounds_ms": ours}}

    peer = [10.0, 14.0, 10.0, 10.5, 13.0, 10.0, 10.2, 16.0, 10.1]
    fast = [p * 0.8 for p in peer]  # 0.80 in every round, though the rounds moved by 60 %
    g = next(g for g in peers.peer_goals("t0", 1, rows(fast, peer), {}, set()) if g["class"] == "fp32")
    assert g["verdict"] == "met" and g["paired"]["median"] == pytest.approx(0.8)
    assert g["paired"]["rounds_met"] == 9 and g["paired"]["high"] == pytest.approx(0.8)
    slow = [p * 0.9 for p in peer]
    g = next(g for g in peers.peer_goals("t0", 1, rows(slow, peer), {}, set()) if g["class"] == "fp32")
    assert g["verdict"] == "MISS" and g["paired"]["low"] == pytest.approx(0.9)
    mixed = [p * f for p, f in zip(peer, (0.7, 0.9, 0.8, 0.95, 0.75, 0.88, 0.82, 0.92, 0.86))]
    g = next(g for g in peers.peer_goals("t0", 1, rows(mixed, peer), {}, set()) if g["class"] == "fp32")
    assert g["verdict"] == "within noise" and g["paired"]["low"] < 0.85 < g["paired"]["high"]
    assert g["paired"]["rounds_met"] == 4
    onnx = {"naive ORT": {"ms": 10.0, "computes": "f32", "rounds_ms": [10.0, 30.0, 10.0]},
            "ours ORT": {"ms": 9.0, "computes": "f32", "rounds_ms": [9.0, 27.0, 9.0]}}
    g = next(g for g in peers.peer_goals("t0", 1, onnx, {}, set()) if g["class"] == "ONNX in ORT")
    assert g["verdict"] == "met" and g["paired"]["coverage"] == pytest.approx(0.75)


@pytest.fixture(scope="module")
def layers():
    spec = importlib.util.spec_from_file_location("bench_layers", ROOT / "scripts" / "bench_layers.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_where_time_goes_reads_the_runtimes_own_counters(peers, layers, tmp_path):
    """The per-layer breakdown reopens each row as it was timed and reads OpenVINO's perf counters and
    ONNX Runtime's profiler: the tiny net's two convolutions are found in f32, the NNCF peer's in int8
    (its IR saved by the peer build), the Q/DQ peer's as ONNX Runtime's int8 kernels."""
    naive = _tiny_onnx(tmp_path / "naive.onnx")
    calib = np.random.default_rng(3).random((8, 3, 32, 32), dtype=np.float32)
    rows, failed = peers.build_peers(naive, calib, 1, lambda m: None)
    assert not failed and (tmp_path / "naive_nncf.xml").exists()
    src = {"naive OV f32": ("openvino", naive, {"INFERENCE_PRECISION_HINT": "f32"}),
           "OV f32": ("openvino", naive, {"INFERENCE_PRECISION_HINT": "f32"}),
           "naive NNCF OV": ("openvino", tmp_path / "naive_nncf.xml", {"INFERENCE_PRECISION_HINT": "f32"}),
           "naive ORT": ("onnxruntime", naive, {}),
           "naive ORT QDQ": ("onnxruntime", tmp_path / "naive_qdq.onnx", {})}
    out = layers.breakdown(src, calib[:1], threads=1, runs=3)
    assert set(out) == set(src)  # "OV int8" etc. were not given: not made up
    assert out["naive OV f32"]["conv"]["nodes"] == {"f32": 2} and out["naive OV f32"]["conv"]["ms"] > 0
    assert out["naive NNCF OV"]["conv"]["nodes"] == {"i8": 2}
    assert sum(out["naive ORT"]["conv"]["nodes"].values()) == 2
    qdq = out["naive ORT QDQ"]
    assert "QLinearConv" in qdq["conv"]["nodes"] or "quantize" in qdq, qdq
    assert all(np.isfinite(r["ms"]) and r["ms"] >= 0 for t in out.values() for r in t.values())
    assert layers.kind("ReorderInput") == "layout" and layers.kind("VariadicSplit") == "split/concat"
    assert layers.exec_precision("brgconv_avx512_1x1_I8") == "i8" and layers.exec_precision("jit_avx512_bf16") == "bf16"


def test_arithmetic_share_is_conv_and_matmul_over_all(layers):
    rec = {"conv": {"ms": 6.0, "nodes": {}}, "matmul": {"ms": 1.0, "nodes": {}}, "layout": {"ms": 2.0, "nodes": {}},
           "other": {"ms": 1.0, "nodes": {}}}
    assert layers.arithmetic_share(rec) == pytest.approx(0.7)
    assert layers.arithmetic_share({}) is None


def test_goal_table_gives_the_arithmetic_bound_from_our_rows_counters(bench):
    rows = {"naive ORT": {"ms": 10.0, "computes": "f32"}, "naive OV f32": {"ms": 8.0, "computes": "f32"},
            "OV f32": {"ms": 7.2, "computes": "f32"}}
    layers = {"OV f32": {"conv": {"ms": 5.0, "nodes": {}}, "matmul": {"ms": 1.0, "nodes": {}},
                         "layout": {"ms": 1.5, "nodes": {}}, "other": {"ms": 0.5, "nodes": {}}}}
    res = [{"variant": "t0", "batches": {1: {"rows": rows, "layers": layers, "floor_fp32": 0.3, "floor_int8": 0.1}}}]
    g = next(g for g in bench.goal_table(res, {"avx2"}) if g["class"] == "fp32")
    assert g["ours"] == "OV f32" and g["ratio"] == pytest.approx(0.9) and g["verdict"] == "MISS"
    assert g["arith_bound"] == pytest.approx(7.2 * 0.75 / 8.0)  # 0.675: reachable by a better form
    assert g["floor"] == pytest.approx(0.3 * 10 / 8)
    # a row of the class faster than the floor: the chain's rate was not this model's best -> no floor
    res[0]["batches"][1]["floor_fp32"] = 0.75
    g = next(g for g in bench.goal_table(res, {"avx2"}) if g["class"] == "fp32")
    assert "floor" not in g and bench.beaten_floors(res[0]["batches"][1]) == ["OV f32"]
