"""Architecture description (no torch needed): the ArchSpec that a checkpoint resolves to. What it
knows of its family (title, activations, display name) comes from ``partialdeploy.families.names``;
the families themselves, their official variants included (``families.variant_spec``), build on
this module and are never imported by it."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace

from partialdeploy.families.names import NAMES

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
    dp_splits: dict = field(default_factory=dict, hash=False)
    layer_scale: bool = False
    # preprocessing the model was trained with
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    img_size: int = 224
    crop_ratio: float = 0.875  # resize shorter side to img_size / crop_ratio, then centre crop
    labels: tuple[str, ...] | None = None
    # family-specific architecture read from the weights (e.g. ECA kernel sizes, ConvNeXt dims); plain JSON
    arch: dict = field(default_factory=dict, hash=False)

    @property
    def name(self) -> str:
        return NAMES[self.family].spec_name(self)

    # ---- the one serializer: to_dict/from_dict (plain JSON types), to_json/from_json around them.
    # Everything that stores or ships a spec (checkpoint metadata, ONNX metadata, manifest, inspect)
    # goes through these; from_dict reads untrusted input (a checkpoint's metadata) and validates.

    def to_dict(self) -> dict:
        """Plain JSON types (lists, not tuples), plus the derived ``name`` (ignored by from_dict)."""
        d = asdict(self)
        d["depths"] = list(self.depths)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        d["labels"] = list(self.labels) if self.labels else None
        d["name"] = self.name
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ArchSpec":
        """The inverse of :meth:`to_dict` (unknown keys such as ``name`` ignored), validated: raises
        ``ValueError``/``TypeError`` naming the first bad field."""
        if not isinstance(d, dict):
            raise TypeError("an architecture must be a mapping")
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("depths", "mean", "std", "labels"):
            if kw.get(k) is not None:
                if not isinstance(kw[k], (list, tuple)):
                    raise TypeError(f"{k}={kw[k]!r}")
                kw[k] = tuple(kw[k])
        return cls(**kw).validate()

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> "ArchSpec":
        return cls.from_dict(json.loads(text))

    _INTS = ("embed_dim", "n_div", "feature_dim", "num_classes", "in_chans", "patch_size", "patch_stride",
             "patch_size2", "patch_stride2", "num_heads", "img_size")

    def validate(self) -> "ArchSpec":
        """Every field of the right type and in range (for specs read from files); returns self."""
        for k in self._INTS:
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1 << 20:
                raise TypeError(f"{k}={v!r}")
        if not all(isinstance(x, int) and not isinstance(x, bool) and 0 < x <= 1024 for x in self.depths):
            raise TypeError(f"depths={list(self.depths)!r}")
        if isinstance(self.mlp_ratio, bool) or not (isinstance(self.mlp_ratio, (int, float))
                                                    and 0 < self.mlp_ratio <= 64):
            raise TypeError(f"mlp_ratio={self.mlp_ratio!r}")
        if len(self.mean) != self.in_chans or len(self.std) != self.in_chans or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 for x in self.std) or not all(
                isinstance(x, (int, float)) and not isinstance(x, bool) for x in self.mean):
            raise TypeError("mean/std")
        if not (isinstance(self.crop_ratio, (int, float)) and 0 < self.crop_ratio <= 1):
            raise TypeError(f"crop_ratio={self.crop_ratio!r}")
        for k in ("use_channel_attn", "use_spatial_attn", "auto_div", "layer_scale"):
            if not isinstance(getattr(self, k), bool):
                raise TypeError(f"{k}={getattr(self, k)!r}")
        if not isinstance(self.family, str) or self.family not in NAMES \
                or not isinstance(self.act, str) or self.act.upper() not in NAMES[self.family].acts:
            raise TypeError(f"act={self.act!r}, family={self.family!r}")
        if self.variant is not None and not isinstance(self.variant, str):
            raise TypeError(f"variant={self.variant!r}")
        if self.labels is not None and not all(isinstance(x, str) for x in self.labels):
            raise TypeError("labels")
        if not isinstance(self.arch, dict):
            raise TypeError("arch")
        if not isinstance(self.dp_splits, dict) or not all(isinstance(k, str) and isinstance(v, int)
                                                           and not isinstance(v, bool)
                                                           for k, v in self.dp_splits.items()):
            raise TypeError("dp_splits")
        if self.img_size < 32 or self.img_size % 32:
            raise TypeError(f"img_size={self.img_size!r}")
        return self

    def replace(self, **kw) -> "ArchSpec":
        return replace(self, **kw)
