"""Architecture description (no torch needed): the variants of PartialNet / FasterNet as their
official configs define them, and the ArchSpec that a checkpoint resolves to."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

# Official configs: haiduo/PartialNet cfg/PartialNet_*.yaml, JierunChen/FasterNet cfg/fasternet_*.yaml
PARTIALNET_VARIANTS = {
    "t0": dict(embed_dim=32, depths=(1, 2, 8, 2), act="GELU", use_spatial_attn=False),
    "t1": dict(embed_dim=48, depths=(1, 2, 8, 2), act="GELU", use_spatial_attn=True),
    "t2": dict(embed_dim=64, depths=(2, 2, 6, 4), act="RELU", use_spatial_attn=False),
    "s": dict(embed_dim=96, depths=(2, 2, 9, 4), act="RELU", use_spatial_attn=False),
    "m": dict(embed_dim=128, depths=(2, 3, 16, 4), act="RELU", use_spatial_attn=False),
    "l": dict(embed_dim=160, depths=(2, 3, 20, 4), act="RELU", use_spatial_attn=False),
}
FASTERNET_VARIANTS = {
    "t0": dict(embed_dim=40, depths=(1, 2, 8, 2), act="GELU"),
    "t1": dict(embed_dim=64, depths=(1, 2, 8, 2), act="GELU"),
    "t2": dict(embed_dim=96, depths=(1, 2, 8, 2), act="RELU"),
    "s": dict(embed_dim=128, depths=(1, 2, 13, 2), act="RELU"),
    "m": dict(embed_dim=144, depths=(3, 4, 18, 3), act="RELU"),
    "l": dict(embed_dim=192, depths=(3, 4, 18, 3), act="RELU"),
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to rebuild the network with the official state-dict layout."""

    family: str = "partialnet"  # "partialnet" | "fasternet"
    variant: str | None = None  # "t0".."l" when it matches an official config, else None (custom)
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

    @property
    def name(self) -> str:
        fam = "PartialNet" if self.family == "partialnet" else "FasterNet"
        if self.variant:
            return f"{fam}-{self.variant.upper()}"
        return f"{fam}-custom(embed_dim={self.embed_dim}, depths={list(self.depths)})"

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
    """The official configuration of a named variant, e.g. ("partialnet", "t0")."""
    family = family.lower()
    table = PARTIALNET_VARIANTS if family == "partialnet" else FASTERNET_VARIANTS
    v = variant.lower()
    if v not in table:
        from partialdeploy.errors import UserError

        raise UserError(f"unknown {family} variant {variant!r}; choose one of {', '.join(table)}")
    cfg = dict(table[v])
    if family == "fasternet":
        cfg.update(use_channel_attn=False, use_spatial_attn=False)
    cfg["depths"] = tuple(cfg["depths"])
    cfg.update(overrides)
    return ArchSpec(family=family, variant=v, **cfg)


def match_variant(spec: ArchSpec) -> str | None:
    """Name of the official variant whose width/depths match, else None."""
    table = PARTIALNET_VARIANTS if spec.family == "partialnet" else FASTERNET_VARIANTS
    for name, cfg in table.items():
        if cfg["embed_dim"] == spec.embed_dim and tuple(cfg["depths"]) == tuple(spec.depths):
            return name
    return None
