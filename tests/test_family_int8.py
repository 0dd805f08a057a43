"""INT8 analysis beyond PartialNet: outlier channels injected into one block of a tiny ECA-ResNet and
of a tiny partial ConvNeXt (``models.outliers``); ``diff`` between the fp32 ONNX and its plain INT8
names that block, and the INT8 fallback keeps exactly that block in float and passes its gate (ONNX
Runtime; OpenVINO's loop, under ``make test-slow``, ranks and keeps it first).

The weights are random (``randomize``), so the residual branch of the block is made to carry the
signal (its last BatchNorm / layer scale ×8) — otherwise quantizing it away would barely show in the
logits; the function is then whatever this model computes, and every reference is taken from it."""

import numpy as np
import pytest
import torch

from conftest import randomize
from partialdeploy import demo, families
from partialdeploy.exporting.options import ExportOptions
from partialdeploy.parity import Tolerance

pytest.importorskip("onnxruntime")

SIZE = 32
CASES = {"eca_resnet": "layer1.1", "convnext": "stages.1.blocks.0"}
LOOSE = {"int8": Tolerance(cosine_min=0.0, top1_min=0.0)}  # a gate that always holds: plain PTQ, kept
# the INT8 gate of the fallback test: the default for ECA-ResNet; for ConvNeXt, whose random 10-class
# logits have small top-1 margins (its float model's PAT_sf attention, quantized, already moves a
# quarter of the top-1 choices on these images), a profile's override that lets the cosine decide
GATE = {"eca_resnet": {}, "convnext": {"int8": Tolerance(cosine_min=0.95, top1_min=0.6)}}


def _spec(family):
    fam = families.get(family)
    if family == "eca_resnet":
        return fam.variant_spec("18", embed_dim=8, num_classes=10, img_size=SIZE)
    return fam.variant_spec("tiny", num_classes=10, img_size=SIZE).replace(
        depths=(1, 1, 2, 1), embed_dim=16, feature_dim=128, num_heads=2,
        arch={"dims": [16, 32, 64, 128], "kernel_size": 7, "layer_scale": True})


@pytest.fixture(scope="module", params=list(CASES))
def outliers(request, tmp_path_factory):
    from partialdeploy.exporting.onnx import export_onnx
    from partialdeploy.images import natural_batch
    from partialdeploy.models import build_model
    from partialdeploy.models.outliers import inject_activation_outliers
    from partialdeploy.reparam import reparameterize, torch_logits

    family, block = request.param, CASES[request.param]
    spec = _spec(family)
    model = randomize(build_model(spec))
    blk = dict(model.named_modules())[block]
    with torch.no_grad():  # the block's residual branch carries the signal
        for t in ((blk.bn2.weight, blk.bn2.bias) if family == "eca_resnet" else (blk.gamma,)):
            t *= 8.0
    inject_activation_outliers(model, [block], scale=1000.0, channels=1 if family == "eca_resnet" else 2)
    ex, _ = demo.eval_set(spec)
    x = np.concatenate([ex[:100], natural_batch(SIZE, spec.mean, spec.std, n=40)]).astype(np.float32)
    ref = torch_logits(model, x)
    deploy = reparameterize(model, SIZE)
    path = tmp_path_factory.mktemp(family) / "deploy.onnx"
    export_onnx(deploy, path, SIZE, metadata={"architecture": spec.to_json()})
    return family, block, spec, path, x, ref, deploy


def _export_int8(case, out_dir, tolerances=None, target="onnxruntime", **options):
    from partialdeploy.backends import get_target
    from partialdeploy.backends.target import ExportContext
    from partialdeploy.verification import convert_and_verify

    _, _, spec, path, x, ref, deploy = case
    ctx = ExportContext(spec=spec, onnx_path=path, img_size=SIZE, dynamic_batch=False, precision="int8",
                        input_name="input", output_name="logits", parity_inputs=x[:16], reference=ref[:16],
                        calib=x[100:140], calib_source="demo digits and photographs", eval_images=x[16:100],
                        eval_reference=ref[16:100], deploy_model=deploy,
                        options=ExportOptions.from_fields({"batch": 1, **options}),
                        tolerances=tolerances or {})
    out_dir.mkdir()
    return convert_and_verify(get_target(target), ctx, out_dir)


def test_diff_names_the_block_with_outliers(outliers, tmp_path):
    from partialdeploy.analysis.blockdiff import run_diff

    family, block, spec, path = outliers[:4]
    _export_int8(outliers, tmp_path / "plain", LOOSE, int8_fallback=False)
    res = run_diff(path, tmp_path / "plain" / "model.onnx", count=16)
    assert res.first_divergent == block and res.exit_code == 1
    names = [b.block for b in res.blocks]
    assert names == [b for b in families.get(family).boundaries(spec) if b in names]  # the family's order
    before = res.blocks[:names.index(block)]
    assert before and all(b.within for b in before)


def test_fallback_keeps_exactly_that_block_in_float(outliers, tmp_path):
    family, block = outliers[:2]
    art = _export_int8(outliers, tmp_path / "fb", GATE[family])
    fb = art.extra["int8_fallback"]
    assert not fb["before"]["passed"] and fb["after"]["passed"]
    assert fb["ranking"][0] == block and fb["float_blocks"] == [block]
    assert all(p.passed for p in art.parity)


@pytest.mark.slow
def test_openvino_fallback_keeps_that_block_first(outliers, tmp_path):
    """OpenVINO's loop (NNCF's ignored scope, the family's block names as patterns) ranks the block
    with outliers first and keeping it in float is what helps most. NNCF's INT8 of these narrow random
    networks loses more elsewhere than ONNX Runtime's, so it may need further blocks to pass."""
    pytest.importorskip("nncf")
    family, block = outliers[:2]
    art = _export_int8(outliers, tmp_path / "fb", GATE[family], target="openvino")
    fb = art.extra["int8_fallback"]
    assert fb["ranking"][0] == block and fb["float_blocks"][0] == block and fb["after"]["passed"]
    plain, first = fb["attempts"][0], fb["attempts"][1]
    assert not plain["passed"] and first["cosine_min"] > plain["cosine_min"] + 0.05
