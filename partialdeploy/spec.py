"""Architecture description (no torch needed): the ArchSpec that a checkpoint resolves to. The
official variants of each family live with the family (``partialdeploy.families``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to rebuild the network with the official state-dict layout."""

    family: str = "partialnet"  # a registered family: partialnet, fasternet, eca_resnet, eca_mobilenetv2, convnext
    variant: str | None = None  # e.g. "t0".."l", "50", "tiny" when it matches an official config, else None
    embed_dim: int = 32
    depths: tuple[int, ...] = (1, 2, 8, 2)
    act: str = "GELU"  # "GELU" | "RELU"
    n_div: int = 4
    mlp_ratio: float = 2.0
    feature_dim: int = 1280
    num_classes: int = 1000
    in_chans: int = 3
    patch_size: int = 4
    patch_stride: int = 4
    patch_size2: int = 2
    patch_stride2: int = 2
    use_channel_attn: bool = True
    use_spatial_attn: bool = False
    num_heads: int = 4  # PAT_sf heads (official cfgs set patnet_t0=True -> 4)
    auto_div: bool = False  # DPConv
    # DPConv learned split per block, "stages.<i>.blocks.<j>" -> channels convolved (from the buffer)
    dp_splits: dict = field(default_factory=dict, compare=False, hash=False)
    layer_scale: bool = False
    # preprocessing the model was trained with
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    img_size: int = 224
    crop_ratio: float = 0.875  # resize shorter side to img_size / crop_ratio, then centre crop
    labels: tuple[str, ...] | None = None
    # family-specific architecture read from the weights (e.g. ECA kernel sizes, ConvNeXt dims); plain JSON
    arch: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def name(self) -> str:
        from partialdeploy import families

        return families.get(self.family).spec_name(self)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["depths"] = list(self.depths)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["labels"] = list(self.labels) if self.labels else None
        d["name"] = self.name
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ArchSpec":
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("depths", "mean", "std", "labels"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)

    def replace(self, **kw) -> "ArchSpec":
        return replace(self, **kw)


def variant_spec(family: str, variant: str, **overrides) -> ArchSpec:
    """The official configuration of a named variant, e.g. ("partialnet", "t0"), ("eca_resnet", "50")."""
    from partialdeploy import families

    return families.get(family.lower()).variant_spec(variant, **overrides)


def match_variant(spec: ArchSpec) -> str | None:
    """Name of the official variant whose architecture matches, else None."""
    from partialdeploy import families

    return families.get(spec.family).match_variant(spec)
