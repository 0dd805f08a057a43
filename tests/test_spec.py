"""ArchSpec has one serializer (to_dict/from_dict, to_json/from_json) used by every writer and reader
(checkpoint metadata, ONNX metadata, manifest, inspect); from_dict reads untrusted files and validates."""

import json

import pytest

from partialdeploy import families
from partialdeploy.checkpoint import SPEC_METADATA_KEY, load_checkpoint
from partialdeploy.demo import DEMO_CKPT
from partialdeploy.spec import ArchSpec


def _all_specs():
    specs = [f.variant_spec(v) for f in families.all_families() for v in f.variants]
    specs.append(ArchSpec(auto_div=True, dp_splits={"stages.0.blocks.0": 5}, labels=("cat", "dog"),
                          img_size=64, layer_scale=True))
    specs.append(ArchSpec.from_json(load_checkpoint(DEMO_CKPT).metadata[SPEC_METADATA_KEY]))
    return specs


@pytest.mark.parametrize("spec", _all_specs(), ids=lambda s: s.name)
def test_round_trip_is_exact_for_every_family(spec):
    d = spec.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain JSON types only
    back = ArchSpec.from_dict(d)
    assert back == spec and back.to_dict() == d
    assert ArchSpec.from_json(spec.to_json()) == spec
    assert isinstance(back.depths, tuple) and isinstance(back.mean, tuple)


def test_family_specific_fields_take_part_in_equality():
    """Two ConvNeXts that differ only in their widths (``arch``) are different architectures."""
    cx = families.get("convnext").variant_spec("tiny")
    other = cx.replace(arch={**cx.arch, "dims": [8, 16, 32, 64]})
    assert cx != other and ArchSpec.from_dict(other.to_dict()) == other
    hash(cx)  # still hashable (the dict fields are left out of the hash)


@pytest.mark.parametrize("field,value", [
    ("embed_dim", -5), ("embed_dim", "32"), ("embed_dim", True), ("img_size", 100), ("img_size", 100001),
    ("depths", [1, 0]), ("depths", "1,2"), ("act", "os.system"), ("family", "resnet"), ("mean", [0.5]),
    ("std", [0, 1, 1]), ("mlp_ratio", "2"), ("crop_ratio", 3), ("use_channel_attn", "yes"), ("labels", [1, 2]),
    ("arch", []), ("dp_splits", {"stages.0.blocks.0": "5"}), ("variant", 7),
])
def test_from_dict_refuses_each_bad_field(field, value):
    d = {**ArchSpec().to_dict(), field: value}
    with pytest.raises((TypeError, ValueError)):
        ArchSpec.from_dict(d)


def test_from_dict_refuses_non_mappings_and_ignores_derived_keys():
    with pytest.raises(TypeError):
        ArchSpec.from_dict([])
    assert ArchSpec.from_dict({"name": "anything", "unknown": 1}) == ArchSpec()
