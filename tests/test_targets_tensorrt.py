"""TensorRT target without a GPU: the build bundle, the trtexec line for every precision × batch mode,
the ONNX operator check against TensorRT 10's parser, build-engine's error paths and the engine
compatibility check. (The GPU path is written against the TensorRT 10 API and runs on the device.)"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from targets_common import make_ctx

from partialdeploy.errors import RuntimeUnavailable, UserError
from partialdeploy.exporters.base import get_target
from partialdeploy.tensorrt_build import (NOT_HERE, TRT10_ONNX_OPS, build_engine, check_engine_compat,
                                          onnx_ops_report, trtexec_args)

pytestmark = pytest.mark.skipif(get_target("tensorrt").can_build_here(), reason="a GPU is present: builds run")


def test_fp16_dynamic_bundle(tmp_path):
    art = get_target("tensorrt").export(make_ctx("fp16", batch_range={"min": 1, "opt": 4, "max": 16},
                                                 workspace_mb=512), tmp_path)
    assert art.verified == "bundle (build the engine on the device)" and art.parity == []
    assert sorted(art.files) == sorted(p.name for p in tmp_path.iterdir())
    assert {"model.onnx", "build_engine.sh", "bundle.json", "README.txt", "parity_inputs.npy",
            "reference_logits.npy"} == set(art.files)
    b = json.loads((tmp_path / "bundle.json").read_text())
    line = ("trtexec --onnx=model.onnx --saveEngine=model.engine --fp16 --minShapes=input:1x3x64x64 "
            "--optShapes=input:4x3x64x64 --maxShapes=input:16x3x64x64 --memPoolSize=workspace:512M "
            "--timingCacheFile=timing.cache")
    assert b["trtexec_line"] == line and line in (tmp_path / "build_engine.sh").read_text()
    assert os.access(tmp_path / "build_engine.sh", os.X_OK)
    assert b["onnx_check"]["unsupported"] == [] and b["onnx_check"]["opset"] == 17
    assert (tmp_path / "model.onnx").read_bytes() == make_ctx("fp16").onnx_path.read_bytes()
    ctx = make_ctx("fp16")
    np.testing.assert_array_equal(np.load(tmp_path / "parity_inputs.npy"), ctx.parity_inputs)
    np.testing.assert_array_equal(np.load(tmp_path / "reference_logits.npy"), ctx.reference)
    assert "partialdeploy build-engine" in (tmp_path / "README.txt").read_text()


def test_int8_static_bundle(tmp_path):
    ctx = make_ctx("int8", dynamic=False, batch=1)
    art = get_target("tensorrt").export(ctx, tmp_path)
    assert {"calib.npy", "eval_images.npy", "eval_reference.npy", "eval_labels.npy"} <= set(art.files)
    calib = np.load(tmp_path / "calib.npy")
    assert calib.shape == (100, 3, 64, 64) and calib.dtype == np.float32
    b = json.loads((tmp_path / "bundle.json").read_text())
    assert b["calibration"]["count"] == 100 and b["input"]["shape"] == [1, 3, 64, 64]
    assert "--int8" in b["trtexec"] and "--calib=calib.cache" in b["trtexec"]
    assert not any(a.startswith("--minShapes") for a in b["trtexec"])  # static batch: no profile
    script = (tmp_path / "build_engine.sh").read_text()
    assert "calib.cache is missing" in script
    r = subprocess.run(["sh", str(tmp_path / "build_engine.sh")], capture_output=True, text=True)
    assert r.returncode == 2 and "partialdeploy build-engine" in r.stderr  # never calibrates with dummy scales


@pytest.mark.parametrize("prec,flags", [("fp32", []), ("fp16", ["--fp16"]),
                                        ("int8", ["--int8", "--fp16", "--calib=calib.cache"])])
@pytest.mark.parametrize("dynamic", [True, False])
def test_trtexec_line(prec, flags, dynamic):
    a = trtexec_args(prec, "input", [3, 224, 224], dynamic, {"min": 1, "opt": 8, "max": 32}, 2048)
    assert a[:3] == ["trtexec", "--onnx=model.onnx", "--saveEngine=model.engine"]
    assert a[3:3 + len(flags)] == flags
    shapes = ["--minShapes=input:1x3x224x224", "--optShapes=input:8x3x224x224", "--maxShapes=input:32x3x224x224"]
    assert all((s in a) == dynamic for s in shapes)
    assert a[-2:] == ["--memPoolSize=workspace:2048M", "--timingCacheFile=timing.cache"]
    assert ("--fp16" in a) == (prec != "fp32")


def test_trtexec_rejects_unknown_precision():
    with pytest.raises(UserError):
        trtexec_args("bf16", "input", [3, 64, 64], False, {"min": 1, "opt": 1, "max": 1})


def test_op_check_against_trt10(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    rep = onnx_ops_report(make_ctx("fp32").onnx_path)
    assert rep["unsupported"] == [] and set(rep["ops"]) <= TRT10_ONNX_OPS
    # the ops PartialNet's deploy form uses, and others from the brief, are all listed
    assert {"Conv", "MatMul", "Gemm", "Erf", "Gelu", "HardSigmoid", "Softmax", "LayerNormalization", "ReduceMean",
            "Split", "Concat", "Where", "Expand"} <= TRT10_ONNX_OPS
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    g = helper.make_graph([helper.make_node("Bernoulli", ["x"], ["b"]),
                           helper.make_node("FusedConv", ["b"], ["y"], domain="com.microsoft")], "g", [x], [y])
    p = tmp_path / "bad.onnx"
    opsets = [helper.make_opsetid("", 21), helper.make_opsetid("com.microsoft", 1)]
    onnx.save(helper.make_model(g, opset_imports=opsets), str(p))
    rep = onnx_ops_report(p)
    assert rep["unsupported"] == ["Bernoulli", "com.microsoft::FusedConv"] and not rep["opset_supported"]
    ctx = make_ctx("fp32")
    ctx.onnx_path = p
    with pytest.raises(UserError, match="does not support Bernoulli, com.microsoft::FusedConv"):
        get_target("tensorrt").export(ctx, tmp_path / "out")


def test_build_engine_here_exits_2_without_torch(tmp_path):
    get_target("tensorrt").export(make_ctx("fp16"), tmp_path)
    with pytest.raises(RuntimeUnavailable, match="TensorRT is not installed / no NVIDIA GPU"):
        build_engine(tmp_path)
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom partialdeploy.cli import app\n"
            f"r = CliRunner().invoke(app, ['build-engine', {str(tmp_path)!r}])\n"
            "print(r.exit_code); print(r.output)\nprint('torch' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "2" and NOT_HERE in r.stdout and lines[-1] == "False", r.stdout + r.stderr


def test_build_engine_bad_bundles(tmp_path):
    with pytest.raises(UserError, match="not a TensorRT bundle"):
        build_engine(tmp_path)
    (tmp_path / "bundle.json").write_text("{")
    with pytest.raises(UserError, match="not valid JSON"):
        build_engine(tmp_path)
    (tmp_path / "bundle.json").write_text(json.dumps({"schema": "other"}))
    with pytest.raises(UserError, match="re-export"):
        build_engine(tmp_path)
    d = tmp_path / "fp16"
    d.mkdir()
    get_target("tensorrt").export(make_ctx("fp16"), d)
    with pytest.raises(UserError, match="no calib.npy"):
        build_engine(d, precision="int8")
    with pytest.raises(UserError, match="fp32, fp16 or int8"):
        build_engine(d, precision="int4")


def test_engine_compat_mismatch():
    side = {"tensorrt_version": "10.3.0", "compute_capability": "8.7"}
    check_engine_compat(side, "10.3.0", "8.7")
    with pytest.raises(UserError, match=r"TensorRT 10.3.0 \(this device has 10.7.0\).*rebuild it here"):
        check_engine_compat(side, "10.7.0", "8.7")
    with pytest.raises(UserError, match=r"compute capability 8.7 \(this GPU is 8.9\)"):
        check_engine_compat(side, "10.3.0", "8.9")


def test_batch_range_validation(tmp_path):
    with pytest.raises(UserError, match="min <= opt <= max"):
        get_target("tensorrt").export(make_ctx("fp32", batch_range={"min": 4, "opt": 2, "max": 8}), tmp_path)
