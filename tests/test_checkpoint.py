"""Checkpoint formats, safe loading (a pickle payload must never run) and architecture inference."""

import argparse
import os
import sys
import types

import pytest
import torch

from conftest import randomize
from partialdeploy.checkpoint import infer_from_weights, load_checkpoint, load_model, resolve_spec
from partialdeploy.errors import UserError
from partialdeploy.models import build_model
from partialdeploy.families import variant_spec
from partialdeploy.spec import ArchSpec

TINY = dict(embed_dim=16, depths=(1, 1, 2, 1), num_classes=10, feature_dim=64)


@pytest.fixture(scope="module")
def t0():
    m = randomize(build_model(variant_spec("partialnet", "t0")), seed=1)
    return m, m.state_dict()


def _logits(model):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        return model.eval()(x)


def _fake_lightning_attrdict(module_name):
    """Register a stand-in AttributeDict under Lightning's module path (only while saving)."""
    parts = module_name.split(".")
    saved = {}
    for i in range(1, len(parts) + 1):
        name = ".".join(parts[:i])
        saved[name] = sys.modules.get(name)
        sys.modules[name] = types.ModuleType(name)
    cls = type("AttributeDict", (dict,), {"__module__": module_name})
    sys.modules[module_name].AttributeDict = cls
    return cls, saved


def _restore(saved):
    for k, v in saved.items():
        if v is None:
            sys.modules.pop(k, None)
        else:
            sys.modules[k] = v


@pytest.mark.parametrize("fmt", ["lightning_namespace", "lightning_attrdict_pl", "lightning_attrdict_fabric",
                                 "plain", "model_wrapper", "state_dict_wrapper", "module_prefix", "safetensors"])
def test_formats_load_strict_with_same_logits(fmt, t0, tmp_path):
    model, sd = t0
    suffix = ".safetensors" if fmt == "safetensors" else ".ckpt" if fmt.startswith("lightning") else ".pth"
    path = tmp_path / ("m" + suffix)
    if fmt == "lightning_namespace":
        hp = argparse.Namespace(model_name="convnext_tiny", embed_dim=32, depths=[1, 2, 8, 2], act_layer="GELU",
                                use_channel_attn=True, image_size=224)
        teacher = {"criterion.teacher_model.fc.weight": torch.zeros(3, 3)}  # distillation teacher: ignored
        torch.save({"epoch": 299, "pytorch-lightning_version": "1.9.5", "hyper_parameters": hp,
                    "state_dict": {**{"model." + k: v for k, v in sd.items()}, **teacher}}, path)
    elif fmt.startswith("lightning_attrdict"):
        mod = ("pytorch_lightning.utilities.parsing" if fmt.endswith("_pl") else "lightning_fabric.utilities.data")
        cls, saved = _fake_lightning_attrdict(mod)
        try:
            torch.save({"state_dict": {"model." + k: v for k, v in sd.items()},
                        "hyper_parameters": cls(act_layer="GELU", embed_dim=32)}, path)
        finally:
            _restore(saved)
        assert "lightning" not in " ".join(m for m in sys.modules if m.startswith(("lightning", "pytorch_lightning")))
    elif fmt == "plain":
        torch.save(sd, path)
    elif fmt == "model_wrapper":
        torch.save({"model": sd, "epoch": 3}, path)
    elif fmt == "state_dict_wrapper":
        torch.save({"state_dict": sd}, path)
    elif fmt == "module_prefix":
        torch.save({"module." + k: v for k, v in sd.items()}, path)
    else:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    ck = load_checkpoint(path)
    spec, notes = resolve_spec(ck)
    assert spec.variant == "t0" and spec.family == "partialnet" and spec.act == "GELU"
    loaded = load_model(ck, spec)
    assert torch.equal(_logits(loaded), _logits(model))
    if fmt == "lightning_namespace":
        assert ck.format == "lightning" and ck.dropped_prefixes == ["criterion."]
        assert spec.img_size == 224


def test_hostile_pickle_never_runs(tmp_path):
    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    p = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Evil()}, p)
    with pytest.raises(UserError) as e:
        load_checkpoint(p)
    assert not marker.exists()
    assert "refusing to load" in str(e.value) and "system" in str(e.value)


@pytest.mark.parametrize("content,expect", [(b"", "empty"), (b"not a checkpoint at all" * 20, "corrupt"),
                                            ("truncate", "corrupt")])
def test_corrupt_files(content, expect, tmp_path, t0):
    p = tmp_path / "bad.pth"
    if content == "truncate":
        torch.save(t0[1], p)
        p.write_bytes(p.read_bytes()[:4096])
    else:
        p.write_bytes(content)
    with pytest.raises(UserError) as e:
        load_checkpoint(p)
    assert expect in str(e.value)


def test_corrupt_safetensors(tmp_path):
    p = tmp_path / "bad.safetensors"
    p.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(UserError, match="not a valid safetensors"):
        load_checkpoint(p)


@pytest.mark.parametrize("family,variant", [("partialnet", v) for v in ("t0", "t1", "t2", "s", "m", "l")]
                         + [("fasternet", v) for v in ("t0", "t1", "t2", "s", "m", "l")])
def test_variant_inference_from_shapes(family, variant):
    ref = variant_spec(family, variant)
    sd = build_model(ref).state_dict()
    info = infer_from_weights(sd)
    assert info["embed_dim"] == ref.embed_dim and tuple(info["depths"]) == tuple(ref.depths)
    assert info["use_channel_attn"] == ref.use_channel_attn and info["use_spatial_attn"] == ref.use_spatial_attn
    from partialdeploy.checkpoint import Checkpoint
    spec, _ = resolve_spec(Checkpoint(path=None, format="state_dict", state_dict=sd))
    assert (spec.family, spec.variant, spec.act) == (family, variant, ref.act)


def test_custom_architecture_inference_dpconv_heads_classes_ndiv():
    spec = ArchSpec(**TINY, auto_div=True, n_div=2, num_heads=2, use_spatial_attn=True)
    m = build_model(spec)
    dps = [mod for mod in m.modules() if type(mod).__name__ == "DPConv"]
    for mod, s in zip(dps, [4, 16, 8, 2, 100]):
        mod.one_channel.fill_(min(s, mod.dim))
    info = infer_from_weights(m.state_dict())
    assert info["auto_div"] and info["n_div"] == 2 and info["num_classes"] == 10 and info["feature_dim"] == 64
    assert list(info["dp_splits"].values()) == [4, 16, 8, 2, 100]
    pn = ArchSpec(**TINY, num_heads=2)
    info2 = infer_from_weights(build_model(pn).state_dict())
    assert info2["num_heads"] == 2 and info2["use_channel_attn"]


def test_custom_size_needs_act(tmp_path):
    from partialdeploy.checkpoint import Checkpoint
    sd = build_model(ArchSpec(**TINY)).state_dict()
    ck = Checkpoint(path=None, format="state_dict", state_dict=sd)
    with pytest.raises(UserError, match="--act"):
        resolve_spec(ck)
    spec, _ = resolve_spec(ck, act="relu")
    assert spec.act == "RELU"


def test_plain_pconv_weights_default_to_fasternet_and_variant_overrides():
    from partialdeploy.checkpoint import Checkpoint
    sd = build_model(variant_spec("fasternet", "t0")).state_dict()
    spec, notes = resolve_spec(Checkpoint(None, "state_dict", sd))
    assert spec.family == "fasternet" and any("FasterNet" in n for n in notes)
    sd2 = build_model(ArchSpec(embed_dim=32, depths=(1, 2, 8, 2), use_channel_attn=False)).state_dict()
    spec2, _ = resolve_spec(Checkpoint(None, "state_dict", sd2), variant="partialnet-t0")
    assert spec2.family == "partialnet" and spec2.variant == "t0"


def test_wrong_architecture_names_keys_and_shapes(t0):
    from partialdeploy.checkpoint import Checkpoint
    _, sd = t0
    ck = Checkpoint(None, "state_dict", dict(sd))
    with pytest.raises(UserError) as e:
        resolve_spec(ck, variant="partialnet-t1")
    assert "embed_dim=48" in str(e.value) and "\n" not in str(e.value)
    bad = dict(sd)
    bad["head.weight"] = torch.zeros(5, 7)
    ck2 = Checkpoint(None, "state_dict", bad)
    spec, _ = resolve_spec(ck2, act="gelu")
    with pytest.raises(UserError) as e2:
        load_model(ck2, spec)
    assert "head.weight" in str(e2.value) and "(5, 7)" in str(e2.value)


def test_not_a_partialnet(tmp_path):
    p = tmp_path / "resnet.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(10, 64)}, p)
    with pytest.raises(UserError, match="not a PartialNet"):
        resolve_spec(load_checkpoint(p))
