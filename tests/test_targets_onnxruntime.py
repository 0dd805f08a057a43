"""ONNX Runtime target: portable offline-optimized fp32, static QDQ INT8, fp16 refused."""

import pytest

pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from targets_common import acc_drop_points, export, make_ctx  # noqa: E402

from partialdeploy.errors import UserError, VerificationError  # noqa: E402
from partialdeploy.backends import get_target  # noqa: E402


def test_fp32_portable_and_exact(tmp_path):
    art = export("onnxruntime", make_ctx("fp32"), tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # no temp files left
    m = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(m)
    assert {n.domain for n in m.graph.node} <= {"", "ai.onnx"}  # standard ops only: portable
    assert art.extra["offline_optimization"] == "basic" and art.extra["nodes"] <= art.extra["nodes_in"]
    for p in art.parity:
        assert p.passed and p.rel_max < 1e-4 and p.top1_agree == 1.0


def test_int8_qdq_accuracy(tmp_path):
    """Static QDQ INT8 on the trained demo model: QuantizeLinear/DequantizeLinear pairs with int8
    weights, accuracy drop ≤ 0.5 points on the 360 held-out digits."""
    art = export("onnxruntime", make_ctx("int8"), tmp_path)
    ops = {n.op_type for n in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    assert acc_drop_points(art) <= 0.5
    assert art.extra["quantization"] == "static QDQ" and art.extra["calibration_images"] == 100


def test_int8_static_batch(tmp_path):
    art = export("onnxruntime", make_ctx("int8", dynamic=False, with_eval=False), tmp_path)
    assert art.inputs[0]["shape"][0] == 1 and art.parity[0].top1_agree >= 0.9


def test_fp16_refused_with_pointer(tmp_path):
    """Refused at the request, before any work, with where fp16 is (a target trusts the request)."""
    from partialdeploy.exporting.request import ExportRequest
    from partialdeploy.exporting.run import run_export

    with pytest.raises(UserError, match="openvino or --target tensorrt"):
        run_export(ExportRequest(targets=("onnxruntime",), precision="fp16", out_dir=tmp_path / "d"))
    assert not (tmp_path / "d").exists() and "fp16" not in get_target("onnxruntime").precisions
    assert "openvino or --target tensorrt" in get_target("onnxruntime").refusal("fp16")


def test_bad_calibration_method(tmp_path):
    with pytest.raises(UserError, match="ort_calibration"):
        export("onnxruntime", make_ctx("int8", ort_calibration="magic"), tmp_path)


def test_gate_failure(tmp_path):
    ctx = make_ctx("fp32", with_eval=False)
    ctx.reference = -ctx.reference
    with pytest.raises(VerificationError):
        export("onnxruntime", ctx, tmp_path)


def test_fp32_fuses_qkv_projections_for_ort(tmp_path):
    """The ONNX Runtime deploy form: PAT_sf's separate q/k/v projections (kept for OpenVINO) become
    one MatMul + Split; recorded in the artifact, and the gate above still holds."""
    art = export("onnxruntime", make_ctx("fp32"), tmp_path)
    assert art.extra["deploy_form"]["attention_projections"] == "fused qkv"
    assert art.extra["session_config"] == {"session.intra_op.allow_spinning": "0"}
    m = onnx.load(str(tmp_path / "model.onnx"))
    assert any("fused_matmul" in n.name and n.op_type == "Split" for n in m.graph.node)
    assert not any(n.name.endswith("/q/MatMul") for n in m.graph.node)
    assert all(p.passed and p.rel_max < 1e-4 for p in art.parity)


def test_fuse_sibling_matmuls_exact(tmp_path):
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from partialdeploy.exporting.onnx_forms import fuse_sibling_matmuls

    rng = np.random.default_rng(0)
    nodes, inits, outs = [], [], []
    for i, (scope, width) in enumerate((("blk", 8), ("blk", 8), ("blk", 4), ("other", 8))):
        inits += [numpy_helper.from_array(rng.standard_normal((6, width)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.standard_normal(width).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", ["x", f"w{i}"], [f"m{i}"], name=f"{scope}/p{i}/MatMul"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"y{i}"], name=f"{scope}/p{i}/Add")]
        outs.append(helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, [2, 5, width]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 6])], outs, inits)
    src, dst = tmp_path / "a.onnx", tmp_path / "b.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(src))
    assert fuse_sibling_matmuls(src, dst) == 1
    fused = onnx.load(str(dst))
    # one group per name scope (a block's fused nodes keep its prefix: block exclusion still finds them)
    assert [(n.op_type, n.name) for n in fused.graph.node] == [
        ("MatMul", "blk/fused_matmul_1/MatMul"), ("Add", "blk/fused_matmul_1/Add"),
        ("Split", "blk/fused_matmul_1/Split"), ("MatMul", "other/p3/MatMul"), ("Add", "other/p3/Add")]
    x = rng.standard_normal((2, 5, 6)).astype(np.float32)
    a = ort.InferenceSession(str(src)).run(None, {"x": x})
    b = ort.InferenceSession(str(dst)).run(None, {"x": x})
    for u, v in zip(a, b):
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-6)


def test_recorded_session_options_reach_profile():
    """The session options an ORT artifact records (optimization level, no spinning) are the ones
    ``profile`` opens it with."""
    from partialdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner

    extra = {"graph_optimization_level": "extended", "session_config": {"session.intra_op.allow_spinning": "0"}}
    from partialdeploy.records import Artifact

    opts = OnnxRuntimeRunner.artifact_options(Artifact("onnxruntime", "fp32", "model.onnx", extra=extra))
    assert opts["graph_optimization"] == "extended"
    assert opts["session_config"] == {"session.intra_op.allow_spinning": "0"}
    from targets_common import _onnx

    with OnnxRuntimeRunner(_onnx(True, 1), threads=1, **opts) as r:
        assert r.compute_precision() == "f32"
