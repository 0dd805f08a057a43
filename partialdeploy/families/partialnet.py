"""PartialNet (PATNet) and FasterNet: one skeleton (``patch_embed``, ``stages.<i>.blocks.<j>``,
``avgpool_pre_head``, ``head``), told apart by the attention / DPConv weights. Train and deploy
forms live in :mod:`partialdeploy.models.partialnet`."""

from __future__ import annotations

import re

from partialdeploy.errors import UserError
from partialdeploy.families.base import Family, register

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

_BLOCK = re.compile(r"^stages\.(\d+)\.blocks\.(\d+)\.")


def body_names(depths) -> list[str]:
    """Official name of each deploy-form ``body.N``: the blocks of stage 0, the merging layer
    (``stages.1``), the blocks of stage 1 (``stages.2.blocks.*``), ..."""
    names: list[str] = []
    for i, d in enumerate(depths or []):
        if i:
            names.append(f"stages.{2 * i - 1}")
        names += [f"stages.{2 * i}.blocks.{j}" for j in range(int(d))]
    return names


def is_skeleton(sd: dict) -> bool:
    return "patch_embed.proj.weight" in sd and any(_BLOCK.match(k) for k in sd)


def has_attention(sd: dict) -> bool:
    return any(".spatial_mixing.attn." in k or k.endswith("spatial_mixing.one_channel")
               or re.search(r"\.mlp\.4\.conv_attn\.weight$", k) for k in sd)


def infer_from_weights(sd: dict) -> dict:
    """Everything the tensor shapes tell: widths, depths, split ratio, attention kinds, DPConv splits,
    heads, classes."""
    if "patch_embed.proj.weight" not in sd:
        raise UserError("not a PartialNet/FasterNet checkpoint: no 'patch_embed.proj.weight' "
                        f"(first keys: {', '.join(list(sd)[:4])})")
    w = sd["patch_embed.proj.weight"]
    info: dict = dict(embed_dim=int(w.shape[0]), in_chans=int(w.shape[1]), patch_size=int(w.shape[2]),
                      patch_stride=int(w.shape[2]))
    blocks: dict[int, set] = {}
    for k in sd:
        m = _BLOCK.match(k)
        if m:
            blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
    stage_ids = sorted(blocks)
    if not stage_ids:
        raise UserError("not a PartialNet/FasterNet checkpoint: no 'stages.<i>.blocks.<j>' keys")
    info["depths"] = tuple(max(blocks[i]) + 1 for i in stage_ids)
    b0 = f"stages.{stage_ids[0]}.blocks.0."
    dim0 = info["embed_dim"]
    if f"{b0}mlp.0.weight" in sd:
        info["mlp_ratio"] = sd[f"{b0}mlp.0.weight"].shape[0] / dim0
    if f"{b0}spatial_mixing.partial_conv3.weight" in sd:
        info["n_div"] = dim0 // int(sd[f"{b0}spatial_mixing.partial_conv3.weight"].shape[0])
        info["auto_div"] = False
    elif f"{b0}spatial_mixing.conv.weight" in sd and f"{b0}spatial_mixing.one_channel" in sd:
        info["auto_div"] = True
        info["n_div"] = int(sd[f"{b0}spatial_mixing.c_div"].item()) if f"{b0}spatial_mixing.c_div" in sd else 4
        info["dp_splits"] = {f"stages.{m.group(1)}.blocks.{m.group(2)}": int(v.item()) for k, v in sd.items()
                             if (m := _BLOCK.match(k)) and k.endswith("spatial_mixing.one_channel")}
    info["use_channel_attn"] = any(".spatial_mixing.attn." in k for k in sd)
    info["use_spatial_attn"] = any(re.search(r"\.mlp\.4\.conv_attn\.weight$", k) for k in sd)
    info["layer_scale"] = any(k.endswith(".layer_scale") for k in sd)
    heads = [v.shape[0] for k, v in sd.items() if k.endswith("rpe_k.lookup_table_bias")]
    if heads:
        info["num_heads"] = int(heads[0])
    if "avgpool_pre_head.1.weight" in sd:
        info["feature_dim"] = int(sd["avgpool_pre_head.1.weight"].shape[0])
    if "head.weight" in sd:
        info["num_classes"] = int(sd["head.weight"].shape[0])
    else:
        info["num_classes"] = 0
    mk = "stages.1.reduction.weight"
    if mk in sd:
        info["patch_size2"] = info["patch_stride2"] = int(sd[mk].shape[2])
    info["attention"] = info["use_channel_attn"] or info["use_spatial_attn"] or info.get("auto_div", False)
    return info


def _hp_get(hp: dict, *names, default=None):
    for n in names:
        if n in hp and hp[n] is not None:
            return hp[n]
    return default


class _PartialNetLike(Family):
    def variant_spec(self, variant: str, **overrides):
        from partialdeploy.spec import ArchSpec

        v = variant.lower()
        if v not in self.variants:
            raise UserError(f"unknown {self.name} variant {variant!r}; choose one of {', '.join(self.variants)}")
        cfg = dict(self.variants[v])
        if self.name == "fasternet":
            cfg.update(use_channel_attn=False, use_spatial_attn=False)
        cfg["depths"] = tuple(cfg["depths"])
        cfg.update(overrides)
        return ArchSpec(family=self.name, variant=v, **cfg)

    def match_variant(self, spec) -> str | None:
        for name, cfg in self.variants.items():
            if cfg["embed_dim"] == spec.embed_dim and tuple(cfg["depths"]) == tuple(spec.depths):
                return name
        return None

    def describe(self, spec) -> str:
        return (f"embed_dim {spec.embed_dim}, depths {list(spec.depths)}, act {spec.act}, n_div {spec.n_div}, "
                f"heads {spec.num_heads}, classes {spec.num_classes}, channel attn {spec.use_channel_attn}, "
                f"spatial attn {spec.use_spatial_attn}, DPConv {spec.auto_div}")

    def infer(self, sd, hp, variant, act, notes):
        from partialdeploy.spec import ArchSpec

        fam = self.name
        info = infer_from_weights(sd)
        if fam == "fasternet" and info["attention"]:
            raise UserError("checkpoint has PartialNet attention/DPConv weights but FasterNet was requested; "
                            "drop --variant fasternet-* or use partialnet-*")
        if fam == "fasternet" and not variant and not any(
                h in str((hp or {}).get("model_name") or "").lower() for h in self.hp_model_names):
            notes.append("no attention weights and no hyper_parameters: read as FasterNet "
                         "(pass --variant partialnet-<v> for a PartialNet without attention)")
        kw: dict = {k: v for k, v in info.items() if k in ArchSpec.__dataclass_fields__}
        if hp:
            hp_act = _hp_get(hp, "act_layer")
            if hp_act:
                kw["act"] = str(hp_act).upper()
                notes.append(f"activation {kw['act']} from hyper_parameters.act_layer")
            if _hp_get(hp, "image_size"):
                kw["img_size"] = int(_hp_get(hp, "image_size"))
            hp_depths = _hp_get(hp, "depths")
            if hp_depths is not None and tuple(hp_depths) != tuple(info["depths"]):
                raise UserError(f"hyper_parameters say depths={list(hp_depths)} but the weights have "
                                f"{list(info['depths'])}: the checkpoint is inconsistent")
        if variant:
            if variant not in self.variants:
                raise UserError(f"unknown variant {variant!r}; choose one of " + ", ".join(self.variant_names()))
            ref = self.variant_spec(variant)
            if (ref.embed_dim, tuple(ref.depths)) != (info["embed_dim"], tuple(info["depths"])):
                raise UserError(f"--variant {fam}-{variant} expects embed_dim={ref.embed_dim}, "
                                f"depths={list(ref.depths)} "
                                f"but the checkpoint has embed_dim={info['embed_dim']}, depths={list(info['depths'])}")
        spec = ArchSpec(family=fam, **{k: v for k, v in kw.items() if k != "family"})
        matched = variant or self.match_variant(spec)
        spec = spec.replace(variant=matched)
        if "act" not in kw and not act:
            if matched:
                spec = spec.replace(act=self.variants[matched]["act"])
                notes.append(f"activation {spec.act} from the official {fam}-{matched} config "
                             "(not stored in the weights; override with --act)")
            else:
                raise UserError("cannot infer the activation of this custom-size model (it is not in the weights): "
                                "pass --act gelu or --act relu")
        if info.get("num_heads") is None and fam == "partialnet" and spec.use_channel_attn:
            notes.append("heads defaulted to 4")
        return spec

    def build(self, spec):
        from partialdeploy.models.partialnet import PartialNet

        return PartialNet(spec)

    def flop_rules(self) -> dict:
        from partialdeploy.models.partialnet import DPConv
        from partialdeploy.models.pat import FLOP_RULES

        def dpconv(m, inp, out):  # DPConv calls F.conv2d on a slice of its weight
            c1 = m.split
            return "conv", out.shape[2] * out.shape[3] * c1 * c1 * 9

        return {DPConv: dpconv, **FLOP_RULES}

    def body_names(self, spec) -> list[str]:
        return body_names(spec.depths)

    # patch_embed, stages.N (a merging layer), stages.N.blocks.M, head; the train form's
    # avgpool_pre_head is reported as itself, the deploy form's stem as patch_embed
    stem_name = "patch_embed"
    block_pattern = r"(?:^|\.)(patch\.embed|stem|stages\.\d+(?:\.blocks\.\d+)?|avgpool\.pre\.head|head)(?=\.|$)"
    canonical_names = {"patch.embed": "patch_embed", "stem": "patch_embed", "avgpool.pre.head": "avgpool_pre_head"}

    def memory(self, spec, img_size):
        """PAT_sf blocks (last stage) bake the iRPE key bias as a constant (heads × L × L, L =
        (size/32)²) and hold 3 attention-score maps of that size per image."""
        from partialdeploy.families.base import Memory

        s = int(img_size)
        attn = self.name == "partialnet" and bool(spec.use_channel_attn)
        heads, L = (int(spec.num_heads or 0), (s // 32) ** 2) if attn else (0, 0)
        depths = tuple(spec.depths or (1,))
        maps = (spec.embed_dim or 64) * (s // 4) ** 2 * ((spec.mlp_ratio or 2.0) + 3)
        return Memory(4 * heads * L * L * depths[-1], 4 * int(maps + 3 * heads * L * L))


class PartialNetFamily(_PartialNetLike):
    name = "partialnet"
    aliases = ("partialnet", "patnet")
    variants = PARTIALNET_VARIANTS
    hp_model_names = ("partialnet", "patnet")

    def recognise(self, sd):
        if not is_skeleton(sd):
            return 0.0
        return 3.0 if has_attention(sd) else 1.0


class FasterNetFamily(_PartialNetLike):
    name = "fasternet"
    aliases = ("fasternet",)
    variants = FASTERNET_VARIANTS
    hp_model_names = ("fasternet",)

    def recognise(self, sd):
        # the same skeleton without attention: FasterNet unless hyper_parameters say PartialNet
        return 1.5 if is_skeleton(sd) and not has_attention(sd) else 0.0


PARTIALNET = register(PartialNetFamily())
FASTERNET = register(FasterNetFamily())
