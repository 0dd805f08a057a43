"""ONNX Runtime target: portable offline-optimized fp32, static QDQ INT8, fp16 refused."""

import pytest

pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from targets_common import acc_drop_points, make_ctx  # noqa: E402

from partialdeploy.errors import UserError, VerificationError  # noqa: E402
from partialdeploy.exporters.base import get_target  # noqa: E402


def test_fp32_portable_and_exact(tmp_path):
    art = get_target("onnxruntime").export(make_ctx("fp32"), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp files left
    m = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(m)
    assert {n.domain for n in m.graph.node} <= {"", "ai.onnx"}  # standard ops only: portable
    assert art.extra["offline_optimization"] == "basic" and art.extra["nodes"] <= art.extra["nodes_in"]
    for p in art.parity:
        assert p["passed"] and p["rel_max"] < 1e-4 and p["top1_agree"] == 1.0


def test_int8_qdq_accuracy(tmp_path):
    """Static QDQ INT8 on the trained demo model: QuantizeLinear/DequantizeLinear pairs with int8
    weights, accuracy drop ≤ 0.5 points on the 360 held-out digits."""
    art = get_target("onnxruntime").export(make_ctx("int8"), tmp_path)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert acc_drop_points(art) <= 0.5
    assert art.extra["quantization"] == "static QDQ" and art.extra["calibration_images"] == 100


def test_int8_static_batch(tmp_path):
    art = get_target("onnxruntime").export(make_ctx("int8", dynamic=False, with_eval=False), tmp_path)
    assert art.inputs[0]["shape"][0] == 1 and art.parity[0]["top1_agree"] >= 0.9


def test_fp16_refused_with_pointer(tmp_path):
    with pytest.raises(UserError, match="openvino or --target tensorrt"):
        get_target("onnxruntime").export(make_ctx("fp16"), tmp_path)
    assert "fp16" not in get_target("onnxruntime").precisions


def test_bad_calibration_method(tmp_path):
    with pytest.raises(UserError, match="ort_calibration"):
        get_target("onnxruntime").export(make_ctx("int8", ort_calibration="magic"), tmp_path)


def test_gate_failure(tmp_path):
    ctx = make_ctx("fp32", with_eval=False)
    ctx.reference = -ctx.reference
    with pytest.raises(VerificationError):
        get_target("onnxruntime").export(ctx, tmp_path)
