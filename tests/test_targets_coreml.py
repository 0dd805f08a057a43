"""CoreML target: conversion + structural spec check (Linux cannot run CoreML)."""

import sys

import pytest

pytest.importorskip("coremltools")

from targets_common import export, make_ctx  # noqa: E402

from partialdeploy.errors import UserError, VerificationError  # noqa: E402
from partialdeploy.backends import get_target  # noqa: E402
from partialdeploy.backends.coreml.target import SPEC_CHECKED, check_spec  # noqa: E402

linux_only = pytest.mark.skipif(sys.platform == "darwin", reason="macOS runs predict parity instead")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    out = {}
    for prec, dyn in (("fp32", True), ("fp16", False), ("int8", True)):
        d = tmp_path_factory.mktemp(f"coreml-{prec}")
        out[prec] = (export("coreml", make_ctx(prec, dynamic=dyn, with_eval=False), d), d)
    return out


@linux_only
@pytest.mark.parametrize("prec", ["fp32", "fp16", "int8"])
def test_spec_checked(artifacts, prec):
    art, d = artifacts[prec]
    assert (d / "model.mlpackage" / "Manifest.json").exists()
    assert all((d / f).is_file() for f in art.files)
    assert art.verified == SPEC_CHECKED and any("macOS" in n for n in art.notes)
    rep = art.extra["spec_check"]
    assert rep["type"] == "mlProgram" and rep["specification_version"] == 7  # iOS16
    assert rep["input_dtype"] == rep["output_dtype"] == "float32"
    assert art.inputs == [{"name": "input", "shape": ["1..64", 3, 64, 64] if prec != "fp16" else [1, 3, 64, 64],
                           "dtype": "float32"}]
    w = rep["weight_dtypes"]
    if prec == "fp32":
        assert set(w) == {"float32"}
    elif prec == "fp16":
        assert set(w) == {"float16"}
    else:
        assert w.get("int8", 0) > 0 and rep["quantized_weight_ops"] == w["int8"]
    # the trace coremltools converts is proven against the train form on every OS
    assert art.parity[0].stage.startswith("train form -> traced") and art.parity[0].rel_max < 1e-4


@linux_only
def test_spec_check_catches_wrong_precision(artifacts):
    import coremltools as ct

    art, d = artifacts["fp32"]
    spec = ct.models.MLModel(str(d / "model.mlpackage"), skip_model_load=True).get_spec()
    with pytest.raises(VerificationError, match="fp16 model holds fp32 weights"):
        check_spec(spec, "fp16", "iOS16", "input", "logits", [None, 3, 64, 64])
    with pytest.raises(VerificationError, match="outputs"):
        check_spec(spec, "fp32", "iOS16", "input", "probs", [None, 3, 64, 64])
    with pytest.raises(VerificationError, match="specification version"):
        check_spec(spec, "fp32", "iOS17", "input", "logits", [None, 3, 64, 64])


def test_deployment_target_from_profile(tmp_path):
    art = export("coreml", make_ctx("fp16", dynamic=False, with_eval=False,
                                               minimum_deployment_target="iOS17"), tmp_path)
    assert art.extra["spec_check"]["specification_version"] == 8


@pytest.mark.parametrize("mdt,msg", [("iOS15", "int8 weights need"), ("Android9", "unknown CoreML")])
def test_bad_deployment_targets(tmp_path, mdt, msg):
    with pytest.raises(UserError, match=msg):
        export("coreml", make_ctx("int8", with_eval=False, minimum_deployment_target=mdt), tmp_path)


def test_needs_torch_model(tmp_path):
    ctx = make_ctx("fp32", with_eval=False)
    ctx.deploy_model = None
    assert get_target("coreml").needs_torch_model
    with pytest.raises(UserError, match="PyTorch deploy model"):
        export("coreml", ctx, tmp_path)
