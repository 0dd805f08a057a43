"""The partial ConvNeXt of haiduo/PartialNet (``model_name: convnext_tiny`` in its released
``cfg/PartialNet_t0.yaml``): depths and widths are ConvNeXt's own (Tiny: 3-3-9-3, 96-192-384-768),
read from the weights, as are the partial ratio (``n_div`` from ``conv_dw.partial_conv``), the
attention options, heads and classes. The config's ``embed_dim``/``depths`` are not used by that
model and are ignored. Train/deploy forms: :mod:`partialdeploy.models.convnext`."""

from __future__ import annotations

import re

from partialdeploy.errors import UserError
from partialdeploy.families.base import Family, register

VARIANTS = {
    "tiny": dict(depths=(3, 3, 9, 3), dims=(96, 192, 384, 768)),
    "small": dict(depths=(3, 3, 27, 3), dims=(96, 192, 384, 768)),
    "base": dict(depths=(3, 3, 27, 3), dims=(128, 256, 512, 1024)),
}
_BLOCK = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.")


class ConvNeXtFamily(Family):
    name = "convnext"
    aliases = ("convnext", "partial-convnext")
    variants = VARIANTS
    hp_model_names = ("convnext",)

    def recognise(self, sd):
        return 2.0 if "stem.0.weight" in sd and "head.fc.weight" in sd or (
            "stem.0.weight" in sd and any(".conv_dw." in k for k in sd)) else 0.0

    def describe(self, spec) -> str:
        return (f"depths {list(spec.depths)}, dims {spec.arch.get('dims')}, "
                + (f"partial conv n_div {spec.n_div} (PAT_ch stages 1-3, PAT_sf stage 4, {spec.num_heads} heads)"
                   if spec.use_channel_attn else "depthwise conv")
                + (", PAT_sp MLP" if spec.use_spatial_attn else "") + f", layer scale {spec.layer_scale}, "
                f"classes {spec.num_classes}")

    def _spec(self, depths, dims, n_div=4, channel=True, spatial=False, num_classes=1000, in_chans=3, patch=4,
              heads=4, mlp_ratio=4.0, layer_scale=True, kernel_size=7, variant=None):
        from partialdeploy.spec import ArchSpec

        return ArchSpec(family=self.name, variant=variant, embed_dim=int(dims[0]), depths=tuple(depths), act="GELU",
                        n_div=int(n_div), mlp_ratio=float(mlp_ratio), feature_dim=int(dims[-1]),
                        num_classes=int(num_classes), in_chans=int(in_chans), patch_size=int(patch),
                        patch_stride=int(patch), use_channel_attn=bool(channel), use_spatial_attn=bool(spatial),
                        num_heads=int(heads), layer_scale=bool(layer_scale),
                        arch={"dims": [int(d) for d in dims], "kernel_size": int(kernel_size),
                              "layer_scale": bool(layer_scale)})

    def variant_spec(self, variant, **overrides):
        v = str(variant).lower().lstrip("-")
        if v not in self.variants:
            raise UserError(f"unknown ConvNeXt variant {variant!r}; choose one of {', '.join(self.variant_names())}")
        cfg = self.variants[v]
        spec = self._spec(cfg["depths"], cfg["dims"], variant=v)
        return spec.replace(**overrides) if overrides else spec

    def match_variant(self, spec):
        for name, cfg in self.variants.items():
            if tuple(cfg["depths"]) == tuple(spec.depths) and list(cfg["dims"]) == list(spec.arch.get("dims", [])):
                return name
        return None

    def infer(self, sd, hp, variant, act, notes):
        blocks: dict[int, set] = {}
        for k in sd:
            m = _BLOCK.match(k)
            if m:
                blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        stages = sorted(blocks)
        if stages != list(range(len(stages))) or not stages:
            raise UserError(f"ConvNeXt stages {stages} are not consecutive: the checkpoint is damaged")
        depths = [max(blocks[i]) + 1 for i in stages]
        dims = [int(sd[f"stages.{i}.blocks.0.norm.weight"].shape[0]) for i in stages]
        b0 = "stages.0.blocks.0."
        channel = f"{b0}conv_dw.partial_conv.weight" in sd
        if channel:
            pc = sd[f"{b0}conv_dw.partial_conv.weight"]
            n_div = dims[0] // int(pc.shape[0])
            ksize = int(pc.shape[-1])
        else:
            n_div, ksize = 1, int(sd[f"{b0}conv_dw.weight"].shape[-1])
        spatial = f"{b0}mlp_spatial.conv_attn.weight" in sd
        hidden = sd[f"{b0}mlp_conv1.weight" if spatial else f"{b0}mlp.fc1.weight"].shape[0]
        heads = [int(v.shape[0]) for k, v in sd.items() if k.endswith("rpe_k.lookup_table_bias")]
        w = sd["stem.0.weight"]
        spec = self._spec(depths, dims, n_div=n_div, channel=channel, spatial=spatial,
                          num_classes=int(sd["head.fc.weight"].shape[0]) if "head.fc.weight" in sd else 0,
                          in_chans=int(w.shape[1]), patch=int(w.shape[-1]), heads=heads[0] if heads else 4,
                          mlp_ratio=hidden / dims[0], layer_scale=f"{b0}gamma" in sd, kernel_size=ksize)
        matched = self.match_variant(spec)
        if variant:
            v = variant.lower().lstrip("-")
            if v not in self.variants:
                raise UserError(f"unknown variant convnext-{v}; choose one of {', '.join(self.variant_names())}")
            if v != matched:
                cfg = self.variants[v]
                raise UserError(f"--variant convnext-{v} expects depths={list(cfg['depths'])}, "
                                f"dims={list(cfg['dims'])} "
                                f"but the weights have depths={depths}, dims={dims}: pass --variant "
                                + (f"convnext-{matched}" if matched else "convnext"))
        if hp:
            ignored = [k for k in ("embed_dim", "depths") if k in hp]
            if ignored:
                notes.append(f"hyper_parameters {', '.join(ignored)} ignored: the official convnext_tiny builder "
                             "does not pass them (depths/dims are ConvNeXt's own, read from the weights)")
            hp_ndiv = hp.get("n_div")
            if channel and hp_ndiv and int(hp_ndiv) != n_div:
                raise UserError(f"hyper_parameters say n_div={hp_ndiv} but the weights have n_div={n_div}: the "
                                "checkpoint is inconsistent")
            if hp.get("image_size"):
                spec = spec.replace(img_size=int(hp["image_size"]))
            if hp.get("test_crop_ratio"):
                spec = spec.replace(crop_ratio=float(hp["test_crop_ratio"]))
        notes.append(f"ConvNeXt: depths {depths}, dims {dims}, "
                     + (f"partial conv n_div={n_div} with PAT attention" if channel else "depthwise conv")
                     + (", PAT_sp MLP" if spatial else "") + " (from the weights)")
        return spec.replace(variant=matched)

    def build(self, spec):
        from partialdeploy.models.convnext import ConvNeXt

        return ConvNeXt(spec)

    def flop_rules(self) -> dict:
        from partialdeploy.models.pat import FLOP_RULES

        return dict(FLOP_RULES)

    # stem, stages.N.downsample (N ≥ 1), stages.N.blocks.M, head — the official module names
    stem_name = "stem"
    block_pattern = r"(?:^|\.)(stem|stages\.\d+\.(?:downsample|blocks\.\d+)|head)(?=\.|$)"

    def memory(self, spec, img_size):
        """Stage 1's maps (dims[0] × (size/4)², mlp_ratio + 3 alive); the partial variant's last
        stage (PAT_sf) bakes an attention bias (heads × L × L, L = (size/32)²) per block and holds 3
        score maps of that size per image."""
        from partialdeploy.families.base import Memory

        s = int(img_size)
        dims = spec.arch.get("dims") or [spec.embed_dim]
        heads, L = (int(spec.num_heads or 0), (s // 32) ** 2) if spec.use_channel_attn else (0, 0)
        maps = int(dims[0]) * (s // 4) ** 2 * ((spec.mlp_ratio or 4.0) + 3)
        return Memory(4 * heads * L * L * int(spec.depths[-1]), 4 * int(maps + 3 * heads * L * L))

    def body_names(self, spec):
        names = []
        for i, n in enumerate(spec.depths):
            if i:
                names.append(f"stages.{i}.downsample")
            names += [f"stages.{i}.blocks.{j}" for j in range(n)]
        return names


CONVNEXT = register(ConvNeXtFamily())
