"""The benchmark's own measuring pieces (scripts/bench.py is not a test; these check it measures what
it says): the floor models really run a 1×1 conv in f32 and in int8 in OpenVINO, and the cycle pauses
between blocks so one row's thread pool cannot slow the next row."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


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


def test_cycle_pauses_after_every_block(bench, monkeypatch):
    events = []
    monkeypatch.setattr(bench.time, "sleep", lambda s: events.append(("sleep", s)))
    fns = {"a": lambda x: events.append("a"), "b": lambda x: events.append("b")}
    out = bench.cycle(fns, {"a": 0, "b": 0}, rounds=2, warmup=0, runs=1)
    assert set(out) == {"a", "b"}
    assert events == ["a", ("sleep", bench.SETTLE_S), "b", ("sleep", bench.SETTLE_S)] * 2
    assert bench.SETTLE_S >= 0.1  # OpenBLAS spins ~0.1 s after a call
