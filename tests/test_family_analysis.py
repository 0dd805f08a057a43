"""Every family owns its analysis: block names and boundaries, the train-form modules to tap, the
runtime layer -> block mapping, the memory estimate. Checked on tiny models of all five families:
the exported ONNX lists the family's boundaries, ``diff`` exposes all of them in the train form and
in ONNX Runtime and names the first block that differs, the INT8 fallback ranks them, a per-layer
profile maps every layer to one of them (nothing is ``other``), and the resource budget differs by
family. (Outlier channels injected into one block, with the whole fallback loop: test_family_int8.py.)"""

import numpy as np
import pytest

from conftest import randomize
from partialdeploy import families
from partialdeploy.exporting import budget
from partialdeploy.analysis.blocknames import HEAD
from partialdeploy.profiling.layers import layer_breakdown

pytest.importorskip("onnxruntime")

SIZE = 32


def tiny_spec(family: str):
    fam = families.get(family)
    if family == "partialnet":
        return fam.variant_spec("t0", embed_dim=16, depths=(1, 1, 2, 1), num_classes=10, img_size=SIZE)
    if family == "fasternet":
        return fam.variant_spec("t0", embed_dim=16, depths=(1, 1, 2, 1), num_classes=10, img_size=SIZE)
    if family == "eca_resnet":
        return fam.variant_spec("18", embed_dim=8, num_classes=10, img_size=SIZE)
    if family == "eca_mobilenetv2":
        return fam.variant_spec("0.25", num_classes=10, img_size=SIZE)
    return fam.variant_spec("tiny", num_classes=10, img_size=SIZE).replace(
        depths=(1, 1, 2, 1), embed_dim=16, feature_dim=128, num_heads=2,
        arch={"dims": [16, 32, 64, 128], "kernel_size": 7, "layer_scale": True})


FAMILIES = ["partialnet", "fasternet", "eca_resnet", "eca_mobilenetv2", "convnext"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """family -> (spec, train-form model, deploy ONNX path), built once."""
    from partialdeploy.exporting.onnx import export_onnx
    from partialdeploy.models import build_model
    from partialdeploy.reparam import reparameterize

    out = {}
    for name in FAMILIES:
        spec = tiny_spec(name)
        model = randomize(build_model(spec))
        path = tmp_path_factory.mktemp(name) / "deploy.onnx"
        export_onnx(reparameterize(model, SIZE), path, SIZE, metadata={"architecture": spec.to_json()})
        out[name] = (spec, model, path)
    return out


def test_every_family_names_its_boundaries():
    expect = {"partialnet": ["patch_embed", "stages.0.blocks.0", "stages.1", "stages.2.blocks.0", "stages.3"],
              "eca_resnet": ["stem", "layer1.0", "layer1.1", "layer2.0"],
              "eca_mobilenetv2": ["features.0", "features.1", "features.2"],
              "convnext": ["stem", "stages.0.blocks.0", "stages.1.downsample", "stages.1.blocks.0"]}
    for name, first in expect.items():
        b = families.get(name).boundaries(tiny_spec(name))
        assert b[:len(first)] == first and b[-1] == HEAD, (name, b)
    assert families.get("eca_mobilenetv2").boundaries(tiny_spec("eca_mobilenetv2"))[-2] == "features.17"


def test_every_registered_family_implements_its_analysis():
    """The extension point "a new model family" (docs/architecture.md): a family that does not name
    its blocks, or whose names do not map back to themselves, fails here."""
    assert sorted(f.name for f in families.all_families()) == sorted(FAMILIES)
    for fam in families.all_families():
        spec = tiny_spec(fam.name)
        b = fam.boundaries(spec)
        assert fam.body_names(spec) and b[0] == fam.stem_name and b[-1] == HEAD and len(set(b)) == len(b)
        assert all(fam.block_of_layer(x, spec) == x for x in b), fam.name
        assert all(fam.is_boundary(x) for x in b[:-1]) and not fam.is_boundary(HEAD)
        assert families.block_of_layer(f"{b[1]}/Conv", spec.to_dict()) == b[1]
        assert fam.memory(spec, SIZE).per_image > 0


@pytest.mark.parametrize("name", FAMILIES)
def test_onnx_and_train_form_expose_every_boundary(exported, name, real_images):
    import onnx

    from partialdeploy.backends.onnxruntime.runner import onnx_boundaries
    from partialdeploy.analysis.taps import open_taps

    spec, model, path = exported[name]
    want = families.get(name).boundaries(spec)
    m = onnx.load(str(path))
    assert onnx_boundaries(m) == want[:-1]
    del m.metadata_props[:]  # an ONNX without the recorded list: the family's names still find them
    assert onnx_boundaries(m) == want[:-1]
    x = real_images(SIZE, 4)
    ort = open_taps(path, "onnxruntime").collect(x)
    pt = open_taps(None, "torch", module=model, input_shape=(None, 3, SIZE, SIZE)).collect(x)
    assert list(ort) == list(pt) == want  # same names, same order, in both runtimes
    for b in want:  # and the same numbers: the deploy form computes what the train form does, block by block
        assert ort[b].shape == pt[b].shape, b
        np.testing.assert_allclose(ort[b], pt[b], rtol=1e-3, atol=1e-3 * float(np.abs(pt[b]).max()), err_msg=b)


@pytest.mark.parametrize("name", FAMILIES)
def test_per_layer_profile_maps_every_layer_to_a_block(exported, name, tmp_path):
    from partialdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner

    spec, _, path = exported[name]
    r = OnnxRuntimeRunner(path, profile_layers=True, scratch_dir=str(tmp_path)).load()
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    for _ in range(3):
        r.run(x)
    rows = r.layer_times()
    r.close()
    lb = layer_breakdown(rows, model=spec.to_dict())  # what the profiler has: the manifest's model dict
    blocks = {b["block"] for b in lb["blocks"]}
    assert "other" not in blocks and not any(b.startswith("body.") for b in blocks), blocks
    assert blocks <= set(families.get(name).boundaries(spec))
    assert {families.get(name).stem_name, "head"} <= blocks


@pytest.mark.parametrize("name", FAMILIES)
def test_openvino_per_layer_profile_maps_every_layer_to_a_block(exported, name, tmp_path):
    ov = pytest.importorskip("openvino")
    from partialdeploy.backends.openvino.runner import OpenVINORunner

    spec, _, path = exported[name]
    ov.save_model(ov.convert_model(str(path)), str(tmp_path / "m.xml"))
    r = OpenVINORunner(tmp_path / "m.xml", profile_layers=True).load()
    for _ in range(2):
        r.run(np.zeros((1, 3, SIZE, SIZE), np.float32))
    rows = r.layer_times()
    r.close()
    lb = layer_breakdown(rows, model=spec.to_dict())
    blocks = {b["block"] for b in lb["blocks"]}
    assert "other" not in blocks and blocks <= set(families.get(name).boundaries(spec)), blocks
    named = [row for row in rows if families.get(name).block_of_layer(row["name"], spec)]
    assert len(named) >= len(rows) // 2  # most layers carry their block's name; the rest follow the one before


@pytest.mark.parametrize("name", FAMILIES)
def test_diff_names_the_first_divergent_block(exported, name, tmp_path):
    """`diff` between a model and a copy whose one block changed names that block, in every family:
    the blocks before it agree, it and the logits do not."""
    import copy

    import torch

    from partialdeploy.analysis.blockdiff import run_diff
    from partialdeploy.exporting.onnx import export_onnx
    from partialdeploy.reparam import reparameterize

    spec, model, path = exported[name]
    fam = families.get(name)
    block = list(fam.tap_modules(model))[len(fam.boundaries(spec)) // 2]  # a body block mid-network
    changed = copy.deepcopy(model)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in fam.tap_modules(changed)[block].parameters():
            p.mul_(1.0 + torch.randn(p.shape, generator=g))
    cand = tmp_path / "changed.onnx"
    export_onnx(reparameterize(changed, SIZE), cand, SIZE, metadata={"architecture": spec.to_json()})
    res = run_diff(path, cand, count=4)
    names = [b.block for b in res.blocks]
    assert names == fam.boundaries(spec) and res.first_divergent == block and res.exit_code == 1, (block, names)
    assert all(b.within for b in res.blocks[:names.index(block)])


@pytest.mark.parametrize("name", FAMILIES)
def test_int8_fallback_ranks_the_familys_blocks(exported, name, tmp_path, real_images):
    """What the INT8 fallback ranks, in every family: the error each block adds in a Q/DQ INT8 model
    (ONNX Runtime), keyed by the family's block names; the top one's nodes are found by its name and,
    kept in float, it adds less."""
    from partialdeploy.backends.tensorrt.precision import to_qdq_int8
    from partialdeploy.backends.onnxruntime.quantizer import block_nodes
    from partialdeploy.exporting.int8fallback import added_error
    from partialdeploy.analysis.taps import collector

    spec, _, path = exported[name]
    x = real_images(SIZE, 8)
    ref = collector(path, "onnxruntime")(x)
    order = [b for b in ref if b != HEAD] + [HEAD]  # as the loop orders them

    def sensitivity(float_blocks):
        q = tmp_path / f"q{len(float_blocks)}.onnx"
        to_qdq_int8(path, q, x, "input", exclude=float_blocks)
        return added_error(ref, collector(q, "onnxruntime")(x), order)

    sens = sensitivity([])
    assert list(sens) == families.get(name).boundaries(spec)
    top = max(sens, key=sens.get)
    assert sens[top] > 0 and block_nodes(path, [top])
    assert sensitivity([top])[top] < sens[top]


@pytest.mark.parametrize("name,layer,block", [
    ("eca_resnet", "layer3.1/convs.0/Conv", "layer3.1"),
    ("eca_resnet", "node_Conv_4_layer2_0_downsample_0", "layer2.0"),
    ("eca_resnet", "/conv1/Conv", "stem"),  # a plain export of the train form
    ("eca_mobilenetv2", "features.7/convs/convs.1/Conv/WithoutBiases", "features.7"),
    ("eca_mobilenetv2", "/features/features.18/features.18.0/Conv", "head"),
    ("convnext", "stages.2.downsample/Conv", "stages.2.downsample"),
    ("convnext", "/stages/stages.2/blocks/blocks.1/mlp/fc1/MatMul", "stages.2.blocks.1"),
    ("fasternet", "Reformat + /stages/stages.3/Conv", "stages.3"),
])
def test_layer_names_of_every_runtime_map_to_the_family_block(name, layer, block):
    assert families.get(name).block_of_layer(layer, tiny_spec(name)) == block


def test_memory_estimate_is_the_familys():
    """The budget asks the family: attention constants only where the family bakes them, activations
    from the family's widest point (ECA-ResNet's stem output is 4× PartialNet's stride-4 map per channel)."""
    pn = families.get("partialnet").variant_spec("t0")
    fn = families.get("fasternet").variant_spec("t0")
    er = families.get("eca_resnet").variant_spec("50")
    mb = families.get("eca_mobilenetv2").variant_spec("1.0")
    cn = families.get("convnext").variant_spec("tiny")
    mem = {s.family: families.get(s.family).memory(s, 224) for s in (pn, fn, er, mb, cn)}
    assert mem["partialnet"].constants > 0 and mem["convnext"].constants > 0
    assert mem["fasternet"].constants == mem["eca_resnet"].constants == mem["eca_mobilenetv2"].constants == 0
    assert mem["eca_resnet"].per_image == 4 * 4 * 64 * 112 * 112  # four maps of the stem's output
    assert mem["eca_mobilenetv2"].per_image == 4 * 3 * 96 * 112 * 112  # the first expansion, before its stride
    assert budget.estimate(er, 25_000_000, 224).activations > budget.estimate(pn, 25_000_000, 224).activations


@pytest.mark.parametrize("name", FAMILIES)
def test_torch_per_block_times_cover_every_boundary(exported, name):
    """Eager PyTorch's per-layer pass: one time per boundary of the family, in its names."""
    from partialdeploy.backends.torch.runner import TorchRunner

    spec, model, _ = exported[name]
    r = TorchRunner(module=model, input_shape=(None, 3, SIZE, SIZE), profile_layers=True).load()
    for _ in range(2):
        r.run(np.zeros((1, 3, SIZE, SIZE), np.float32))
    rows = r.layer_times()
    r.close()
    assert [row["name"] for row in rows] == families.get(name).boundaries(spec)
    assert all(row["time_ms"] > 0 for row in rows)
    lb = layer_breakdown(rows, model=spec)
    assert {b["block"] for b in lb["blocks"]} == set(families.get(name).boundaries(spec))


@pytest.mark.parametrize("name", ["eca_resnet", pytest.param("convnext", marks=pytest.mark.slow)])
def test_cli_diff_of_a_checkpoint_and_its_export_names_every_block(exported, name, tmp_path):
    """What a user of these families runs: export a checkpoint, then `diff` it against the export.
    Before the family owned its analysis, only the logits of these families were compared."""
    import json

    from safetensors.torch import save_file

    from conftest import run_cli

    spec, model, _ = exported[name]
    ckpt = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    r = run_cli("export", ckpt, "--target", "onnx", "-o", tmp_path / "dist")
    assert r.returncode == 0, r.stderr
    r = run_cli("diff", ckpt, tmp_path / "dist", "--count", "4", "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    want = families.get(name).boundaries(spec)
    assert [b["block"] for b in res["blocks"]] == want and res["agree"] and not res["missing"]["cand"]
