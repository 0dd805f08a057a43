"""ECA-Net (BangguWu/ECANet) and the partial ConvNeXt (haiduo/PartialNet models/convnext.py) through
the same family registry as PartialNet/FasterNet.

Fixtures in tests/fixtures/official/ were written by the official code (README there): the key
layout of every variant, and small models with every tensor non-trivial with their eval logits on
real photographs. Our code must find the architecture from the weights alone, load them strict,
give the official logits, and keep them through the deploy form and every target."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from official_weights import fill_state_dict
from partialdeploy import families, parity
from partialdeploy.checkpoint import Checkpoint, load_checkpoint, load_model, resolve_spec
from partialdeploy.errors import UserError
from partialdeploy.models import build_model

FIX = Path(__file__).parent / "fixtures" / "official"
LAYOUTS = sorted(FIX.glob("keys_eca_*.json")) + sorted(FIX.glob("keys_convnext_*.json"))
SLOW_LAYOUTS = {"keys_eca_resnet101", "keys_eca_resnet152"}
NUMERIC = ["eca_resnet18_k3557", "eca_resnet50_k3557", "eca_mobilenetv2_w025", "convnext_small_partial",
           "convnext_small_partial_sp_div2", "convnext_small_plain"]
IMAGES = load_file(str(FIX / "real_images_64.safetensors"))


def _layout_sd(d):
    return {k: torch.empty(s, dtype=getattr(torch, dt), device="meta") for k, s, dt in d["state_dict"]}


def _official(name):
    """(meta, state_dict) of a numerical fixture; ECA-ResNets are too large to commit, their weights
    follow the recipe in tests/official_weights.py (the official run used the same recipe)."""
    meta = json.loads((FIX / f"{name}.json").read_text())
    if meta["weights"] == "safetensors":
        return meta, load_file(str(FIX / f"{name}.safetensors"))
    layout = json.loads((FIX / f"keys_{meta['config']['constructor']}.json").read_text())
    sd = {k: torch.zeros(s, dtype=getattr(torch, dt)) for k, s, dt in layout["state_dict"]}
    n = meta["config"]["num_classes"]
    sd["fc.weight"], sd["fc.bias"] = torch.zeros(n, sd["fc.weight"].shape[1]), torch.zeros(n)
    for i, k in enumerate(meta["config"]["k_size"]):  # the layout file has the default k=3 everywhere
        for key in [key for key in sd if key.startswith(f"layer{i + 1}.") and key.endswith("eca.conv.weight")]:
            sd[key] = torch.zeros(1, 1, k)
    return meta, fill_state_dict(sd)


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow) if p.stem in SLOW_LAYOUTS else p
                                  for p in LAYOUTS], ids=[p.stem for p in LAYOUTS])
def test_layout_identical_to_official_and_architecture_found(path):
    d = json.loads(path.read_text())
    spec, _ = resolve_spec(Checkpoint(None, "state_dict", _layout_sd(d)))
    assert spec.family == d["family"]
    cfg = d["config"]
    if d["family"] == "eca_resnet":
        assert spec.variant == cfg["constructor"].replace("eca_resnet", "") and spec.arch["k_sizes"] == cfg["k_size"]
    elif d["family"] == "eca_mobilenetv2":
        assert spec.arch["width_mult"] == cfg["width_mult"]
    else:
        assert list(spec.depths) == cfg["depths"] and spec.arch["dims"] == cfg["dims"] and spec.variant == "tiny"
        assert spec.use_channel_attn == cfg["use_channel_attn"] and spec.use_spatial_attn == cfg["use_spatial_attn"]
        assert spec.n_div == (cfg["n_div"] if cfg["use_channel_attn"] else 1)
    with torch.device("meta"):
        ours = build_model(spec).state_dict()
    assert [[k, list(v.shape), str(v.dtype).replace("torch.", "")] for k, v in ours.items()] == d["state_dict"]


@pytest.mark.parametrize("name", NUMERIC)
def test_official_weights_strict_official_logits_deploy_and_onnx(name, tmp_path):
    from partialdeploy.exporting.onnx import export_onnx
    from partialdeploy.reparam import reparameterize, torch_logits
    from partialdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner

    meta, sd = _official(name)
    spec, _ = resolve_spec(Checkpoint(None, "state_dict", sd))
    assert spec.family == meta["family"]
    model = load_model(Checkpoint(None, "state_dict", sd), spec)  # strict=True
    x = IMAGES["images"].numpy()
    ref = np.asarray(meta["logits"], np.float32)
    np.testing.assert_allclose(torch_logits(model, x), ref, rtol=1e-5, atol=2e-6)
    deploy = reparameterize(model, 64)
    parity.gate(ref, torch_logits(deploy, x), "official -> deploy form", "fp32")
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Dropout)) or
                   isinstance(m, torch.nn.Module) and type(m).__name__ in ("ECALayer", "SRM") for m in deploy.modules())
    export_onnx(deploy, tmp_path / "m.onnx", 64, dynamic_batch=True)
    with OnnxRuntimeRunner(tmp_path / "m.onnx") as r:
        parity.gate(ref, r.run(x), "official -> ONNX Runtime", "fp32")
    if "logits_b" in meta:  # non-square: the attention map is 2×3, its iRPE bias baked for that size
        xb = IMAGES["images_b"].numpy()
        refb = np.asarray(meta["logits_b"], np.float32)
        np.testing.assert_allclose(torch_logits(model, xb), refb, rtol=1e-5, atol=2e-6)
        parity.gate(refb, torch_logits(reparameterize(model, (64, 96)), xb), "official -> deploy (64×96)", "fp32")


def test_eca_deploy_has_no_transpose_and_no_batchnorm(tmp_path):
    import onnx

    from partialdeploy.exporting.onnx import export_onnx, naive_export
    from partialdeploy.reparam import reparameterize

    _, sd = _official("eca_mobilenetv2_w025")
    spec, _ = resolve_spec(Checkpoint(None, "state_dict", sd))
    model = load_model(Checkpoint(None, "state_dict", sd), spec)
    naive_export(model, tmp_path / "naive.onnx", 64)
    export_onnx(reparameterize(model, 64), tmp_path / "ours.onnx", 64)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "ours.onnx")).graph.node]
    naive_ops = [n.op_type for n in onnx.load(str(tmp_path / "naive.onnx")).graph.node]
    assert naive_ops.count("Transpose") == 2 * 17  # the official transpose pair around every Conv1d
    assert "Transpose" not in ops and "BatchNormalization" not in ops
    # k = 1 ECA gates (c < 96 in the official table) carry no conv at all
    n_eca_conv = len([k for k in sd if k.endswith("eca.conv.weight") or (k.endswith(".conv.weight") and sd[k].dim() == 3
                                                                        and sd[k].shape[-1] > 1)])
    assert ops.count("Conv") == len([k for k in sd if k.endswith(".weight") and sd[k].dim() == 4]) + n_eca_conv


def test_checkpoint_formats_official_and_lightning(tmp_path):
    """The official ECA training script's checkpoint (DataParallel 'module.' keys, epoch/arch/optimizer)
    and a Lightning checkpoint of the partial ConvNeXt written with the released PartialNet_t0.yaml
    hyper_parameters (model_name convnext_tiny, embed_dim 32, depths [1, 2, 8, 2]: not what that model
    uses, so they must not be trusted)."""
    meta, sd = _official("eca_resnet18_k3557")
    p = tmp_path / "model_best.pth.tar"
    torch.save({"epoch": 90, "arch": "eca_resnet18", "state_dict": {"module." + k: v for k, v in sd.items()},
                "best_prec1": 70.1, "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]}}, p)
    ck = load_checkpoint(p)
    spec, _ = resolve_spec(ck)
    assert spec.name == "ECA-ResNet-18 (k=3557)"
    out = load_model(ck, spec)(IMAGES["images"]).detach().numpy()
    np.testing.assert_allclose(out, np.asarray(meta["logits"]), rtol=1e-5, atol=2e-6)

    meta, sd = _official("convnext_small_partial")
    hp = {"model_name": "convnext_tiny", "embed_dim": 32, "depths": [1, 2, 8, 2], "n_div": 4, "act_layer": "GELU",
          "use_channel_attn": True, "use_spatial_attn": False, "image_size": 224, "test_crop_ratio": 0.9}
    p = tmp_path / "last.ckpt"
    torch.save({"epoch": 3, "pytorch-lightning_version": "2.1.0", "hyper_parameters": hp,
                "state_dict": {**{"model." + k: v for k, v in sd.items()},
                               "criterion.teacher.fc.weight": torch.zeros(2, 2)}}, p)
    ck = load_checkpoint(p)
    spec, notes = resolve_spec(ck, img_size=64)
    assert spec.family == "convnext" and spec.arch["dims"] == [8, 16, 32, 64] and spec.crop_ratio == 0.9
    assert any("ignored" in n for n in notes)
    out = load_model(ck, spec)(IMAGES["images"]).detach().numpy()
    np.testing.assert_allclose(out, np.asarray(meta["logits"]), rtol=1e-5, atol=2e-6)
    hp_bad = dict(hp, n_div=2)
    torch.save({"epoch": 3, "hyper_parameters": hp_bad, "state_dict": {"model." + k: v for k, v in sd.items()}}, p)
    with pytest.raises(UserError, match="n_div=2"):
        resolve_spec(load_checkpoint(p))


def _one_line(e):
    msg = str(e.value)
    assert "\n" not in msg and "--variant" in msg
    return msg


def test_wrong_family_and_wrong_variant_say_what_to_pass():
    _, cnx = _official("convnext_small_partial")
    _, mb = _official("eca_mobilenetv2_w025")
    with pytest.raises(UserError) as e:
        resolve_spec(Checkpoint(None, "state_dict", cnx), variant="eca-resnet50")
    assert "ConvNeXt" in _one_line(e) and "convnext" in str(e.value)
    with pytest.raises(UserError) as e:
        resolve_spec(Checkpoint(None, "state_dict", mb), variant="partialnet-t0")
    assert "ECA-MobileNetV2" in _one_line(e) and "eca-mobilenetv2" in str(e.value)
    _, r18 = _official("eca_resnet18_k3557")
    with pytest.raises(UserError) as e:
        resolve_spec(Checkpoint(None, "state_dict", r18), variant="eca_resnet50")
    assert "--variant eca-resnet18" in _one_line(e)
    with pytest.raises(UserError) as e:
        resolve_spec(Checkpoint(None, "state_dict", mb), variant="eca-mobilenetv2-1.0")
    assert "width 0.25" in _one_line(e)
    # the right family by name, any spelling
    for v in ("eca_resnet18", "ECA-ResNet18", "eca-resnet"):
        spec, _ = resolve_spec(Checkpoint(None, "state_dict", r18), variant=v)
        assert spec.family == "eca_resnet" and spec.variant == "18"


def test_ambiguous_inputs_say_what_to_pass():
    _, r18 = _official("eca_resnet18_k3557")
    _, mb = _official("eca_mobilenetv2_w025")
    with pytest.raises(UserError) as e:  # two models saved in one file
        resolve_spec(Checkpoint(None, "state_dict", {**r18, **mb}))
    assert "ambiguous" in _one_line(e) and "eca-resnet" in str(e.value) and "eca-mobilenetv2" in str(e.value)
    spec, _ = resolve_spec(Checkpoint(None, "state_dict", {**r18, **mb}), variant="eca-mobilenetv2")
    assert spec.family == "eca_mobilenetv2"
    with pytest.raises(UserError) as e:
        resolve_spec(Checkpoint(None, "state_dict", mb), variant="eca")
    assert "ambiguous" in _one_line(e)
    with pytest.raises(UserError) as e:
        resolve_spec(Checkpoint(None, "state_dict", {"conv1.weight": torch.zeros(64, 3, 7, 7),
                                                     "fc.weight": torch.zeros(10, 64)}))
    assert "no family recognises" in str(e.value) and "\n" not in str(e.value)


def test_hyper_parameters_name_another_family_weights_win():
    from partialdeploy.families import variant_spec

    sd = build_model(variant_spec("partialnet", "t0")).state_dict()
    spec, notes = resolve_spec(Checkpoint(None, "lightning", sd, {"model_name": "convnext_tiny", "act_layer": "GELU"}))
    assert spec.family == "partialnet" and any("weights win" in n for n in notes)


def test_registry_is_the_only_switch():
    """Every family registers the whole contract; the loader, pipeline and CLI name none of them."""
    names = {f.name for f in families.all_families()}
    assert names == {"partialnet", "fasternet", "eca_resnet", "eca_mobilenetv2", "convnext"}
    import re

    src = Path(__file__).parents[1] / "partialdeploy"
    files = [src / f for f in ("checkpoint.py", "reparam.py", "analysis/inspect.py")]
    files += sorted((src / "exporting").glob("*.py"))
    files += sorted((src / "cli").glob("*.py"))
    assert len(files) > 5
    for f in files:
        text = f.read_text().lower()
        assert not re.search(r"\beca|convnext|mobilenet|resnet", text), f
    for fam in families.all_families():
        assert fam.variant_names() and fam.acts and fam.title


@pytest.mark.parametrize("name", ["eca_mobilenetv2_w025", "convnext_small_partial"])
def test_inspect_describes_family(name, tmp_path):
    from partialdeploy.analysis.inspect import inspect_checkpoint

    _, sd = _official(name)
    p = tmp_path / "m.pth"
    torch.save(sd, p)
    r = inspect_checkpoint(p, img_size=64)
    kinds = {b["kind"]: b for b in r["blocks"]}
    if name.startswith("eca"):
        assert r["family"] == "ECA-MobileNetV2" and kinds["ECA"]["count"] == 17 and "width_mult 0.25" in r["summary"]
        assert kinds["InvertedResidual"]["count"] == 17
        assert r["batchnorm"]["after"] == 0 and r["flops"]["by_kind_before"]["conv"] > 0
    else:
        assert r["family"] == "ConvNeXt" and kinds["PAT_ch"]["count"] == 4 and kinds["PAT_sf"]["count"] == 1
        assert "dims [8, 16, 32, 64]" in r["summary"] and "n_div 4" in r["summary"]
        assert r["layernorm_affine_folded"] >= 5 and r["flops"]["by_kind_after"]["attention"] > 0
    assert abs(r["flops"]["after"] - r["flops"]["before"]) <= 0.02 * r["flops"]["before"]


@pytest.mark.parametrize("name", ["eca_mobilenetv2_w025", "convnext_small_partial_sp_div2",
                                  pytest.param("eca_resnet18_k3557", marks=pytest.mark.slow)])
def test_every_target_with_its_parity_gate(name, tmp_path):
    from partialdeploy.exporting.request import ExportRequest
    from partialdeploy.exporting.run import run_export

    _, sd = _official(name)
    p = tmp_path / "m.pth"
    torch.save(sd, p)
    res = run_export(ExportRequest(checkpoint=p, targets=("onnx", "onnxruntime", "openvino", "coreml", "tensorrt"),
                                   img_size=64, out_dir=tmp_path / "dist", parity_images=4))
    assert res.exit_code == 0 and not res.failures and not res.skipped
    got = {a.target: a for a in res.artifacts}
    assert set(got) == {"onnx", "onnxruntime", "openvino", "coreml", "tensorrt"}
    for t in ("onnxruntime", "openvino"):
        assert got[t].parity and all(g.cosine_min > 0.99999 for g in got[t].parity)
