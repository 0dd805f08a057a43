"""ECA-Net (BangguWu/ECANet): ECA-ResNet-18/34/50/101/152 and ECA-MobileNetV2.

Everything is read from the weights: ResNet block type (basic/bottleneck) and depth per layer, the
ECA kernel size of every layer (``layerN.0.eca.conv.weight`` is (1, 1, k)), the MobileNetV2 width
(channels of every block, hence ``width_mult``), classes. Train/deploy forms: :mod:`partialdeploy.models.eca`.
"""

from __future__ import annotations

import re

from partialdeploy.errors import UserError
from partialdeploy.families.base import Family, register

RESNET_VARIANTS = {
    "18": dict(block="basic", depths=(2, 2, 2, 2)),
    "34": dict(block="basic", depths=(3, 4, 6, 3)),
    "50": dict(block="bottleneck", depths=(3, 4, 6, 3)),
    "101": dict(block="bottleneck", depths=(3, 4, 23, 3)),
    "152": dict(block="bottleneck", depths=(3, 8, 36, 3)),
}
# kernel sizes the ECA paper's adaptive rule gives for ResNet's stage widths (used when building a
# named variant without weights, e.g. for benchmarks); checkpoints always carry their own
PAPER_K = (3, 5, 5, 7)


# the official inverted-residual setting (t, c, n, s) of ECA-MobileNetV2; strides come from here (they
# are not in the weights). Plain data, used by the family (widths, memory) and the model.
MBV2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))
_MBV2_LAST = sum(n for _, _, n, _ in MBV2_SETTING) + 1  # features.18: the last 1×1 conv, part of the head



def mbv2_strides() -> list[int]:
    """The stride of each inverted-residual block, by its position in the official setting."""
    return [s if i == 0 else 1 for _, _, n, s in MBV2_SETTING for i in range(n)]


_RES_BLOCK = re.compile(r"^layer(\d+)\.(\d+)\.")
_MB_FEAT = re.compile(r"^features\.(\d+)\.")


class ECAResNetFamily(Family):
    name = "eca_resnet"
    aliases = ("eca-resnet",)
    variants = RESNET_VARIANTS
    hp_model_names = ("eca_resnet", "eca-resnet", "ecaresnet")

    def variant_names(self):
        return [f"eca-resnet{v}" for v in self.variants]

    def recognise(self, sd):
        return 2.0 if "conv1.weight" in sd and "layer1.0.eca.conv.weight" in sd and "fc.weight" in sd else 0.0

    def describe(self, spec) -> str:
        return (f"{spec.arch.get('block')} blocks, depths {list(spec.depths)}, ECA kernel sizes per layer "
                f"{spec.arch.get('k_sizes')}, classes {spec.num_classes}")

    def _spec(self, block, depths, k_sizes, num_classes=1000, in_chans=3, stem=64, variant=None):
        from partialdeploy.spec import ArchSpec

        return ArchSpec(family=self.name, variant=variant, embed_dim=stem, depths=tuple(depths), act="RELU",
                        num_classes=num_classes, in_chans=in_chans, n_div=1,
                        mlp_ratio=4.0 if block == "bottleneck" else 1.0,
                        use_channel_attn=False, num_heads=0, feature_dim=0,
                        arch={"block": block, "k_sizes": [int(k) for k in k_sizes]})

    def variant_spec(self, variant, **overrides):
        v = str(variant).lower()
        if v not in self.variants:
            raise UserError(f"unknown ECA-ResNet variant {variant!r}; choose one of {', '.join(self.variant_names())}")
        cfg = self.variants[v]
        spec = self._spec(cfg["block"], cfg["depths"], PAPER_K, variant=v)
        return spec.replace(**overrides) if overrides else spec

    def match_variant(self, spec):
        for name, cfg in self.variants.items():
            if cfg["block"] == spec.arch.get("block") and tuple(cfg["depths"]) == tuple(spec.depths) \
                    and spec.embed_dim == 64:
                return name
        return None

    def infer(self, sd, hp, variant, act, notes):
        blocks: dict[int, set] = {}
        for k in sd:
            m = _RES_BLOCK.match(k)
            if m:
                blocks.setdefault(int(m.group(1)), set()).add(int(m.group(2)))
        layers = sorted(blocks)
        if layers != list(range(1, len(layers) + 1)):
            raise UserError(f"ECA-ResNet layers {layers} are not consecutive: the checkpoint is damaged")
        depths = [max(blocks[i]) + 1 for i in layers]
        block = "bottleneck" if "layer1.0.conv3.weight" in sd else "basic"
        ks = []
        for i in layers:
            kk = {int(sd[f"layer{i}.{j}.eca.conv.weight"].shape[-1]) for j in range(depths[i - 1])
                  if f"layer{i}.{j}.eca.conv.weight" in sd}
            if len(kk) != 1:
                raise UserError(f"ECA kernel sizes differ inside layer{i} ({sorted(kk)}): not an official ECA-ResNet")
            ks.append(kk.pop())
        w = sd["conv1.weight"]
        spec = self._spec(block, depths, ks, num_classes=int(sd["fc.weight"].shape[0]), in_chans=int(w.shape[1]),
                          stem=int(w.shape[0]))
        matched = self.match_variant(spec)
        if variant:
            v = variant.lower().lstrip("-")
            if v not in self.variants:
                raise UserError(f"unknown variant eca-resnet{variant}; choose one of {', '.join(self.variant_names())}")
            if v != matched:
                raise UserError(f"--variant eca-resnet{v} expects {self.variants[v]['block']} blocks, depths="
                                f"{list(self.variants[v]['depths'])} but the checkpoint has {block} blocks, depths="
                                f"{depths}: pass --variant " + (f"eca-resnet{matched}" if matched else "eca-resnet"))
        notes.append(f"ECA-ResNet: {block} blocks, depths {depths}, ECA kernel sizes {ks} (from the weights)")
        if hp and hp.get("image_size"):
            spec = spec.replace(img_size=int(hp["image_size"]))
        return spec.replace(variant=matched)

    def build(self, spec):
        from partialdeploy.models.eca import ECAResNet

        return ECAResNet(spec)

    def body_names(self, spec):
        return [f"layer{i + 1}.{j}" for i, n in enumerate(spec.depths) for j in range(n)]

    # the official stem is four root modules (conv1, bn1, relu, maxpool): its boundary is "stem",
    # tapped after maxpool; the classifier (avgpool, fc) is the head
    stem_name = "stem"
    tap_aliases = {"stem": "maxpool"}
    block_pattern = r"(?:^|\.)(stem|layer\d+\.\d+|head|conv1|bn1|maxpool|avgpool|fc)(?=\.|$)"
    canonical_names = {"conv1": "stem", "bn1": "stem", "maxpool": "stem", "avgpool": "head", "fc": "head"}

    def memory(self, spec, img_size):
        """The stem's 7×7/2 output (embed × (size/2)²) and a block's widest map (bottleneck: 4 ×
        planes × (size/4)²), about four such maps alive at once."""
        from partialdeploy.families.base import Memory

        s, e = int(img_size), int(spec.embed_dim or 64)
        widest = max(e * (s // 2) ** 2, e * (4 if spec.arch.get("block") == "bottleneck" else 1) * (s // 4) ** 2)
        return Memory(0, 4 * 4 * widest)


def _mb_features(sd):
    return sorted({int(m.group(1)) for k in sd if (m := _MB_FEAT.match(k))})


class ECAMobileNetV2Family(Family):
    name = "eca_mobilenetv2"
    aliases = ("eca-mobilenetv2", "eca-mobilenet-v2")
    variants = {"1.0": dict(width_mult=1.0)}
    hp_model_names = ("eca_mobilenet", "mobilenet")

    def variant_names(self):
        return ["eca-mobilenetv2"]

    def recognise(self, sd):
        return 2.0 if "features.0.0.weight" in sd and any(k.endswith(".eca.conv.weight") or re.search(
            r"^features\.\d+\.conv\.\d+\.conv\.weight$", k) for k in sd) and "classifier.1.weight" in sd else 0.0

    @staticmethod
    def arch_for_width(width_mult: float) -> dict:
        stem = int(32 * width_mult)
        outs, hiddens, ks = [], [], []
        inp = stem
        for t, c, n, _ in MBV2_SETTING:
            for _i in range(n):
                outs.append(int(c * width_mult))
                hiddens.append(int(round(inp * t)))
                ks.append(1 if c < 96 else 3)
                inp = outs[-1]
        return {"stem": stem, "outs": outs, "hiddens": hiddens, "k_sizes": ks,
                "last_channel": int(1280 * max(1.0, width_mult)), "width_mult": width_mult}

    def describe(self, spec) -> str:
        a = spec.arch
        return (f"width_mult {a.get('width_mult', 'custom')}, stem {a['stem']}, block outputs {a['outs']}, "
                f"last {a['last_channel']}, ECA kernel sizes {a['k_sizes']}, classes {spec.num_classes}")

    def _spec(self, arch, num_classes=1000, in_chans=3, variant=None):
        from partialdeploy.spec import ArchSpec

        depths = tuple(n for _, _, n, _ in MBV2_SETTING)
        return ArchSpec(family=self.name, variant=variant, embed_dim=arch["stem"], depths=depths, act="RELU6",
                        num_classes=num_classes, in_chans=in_chans, n_div=1, mlp_ratio=6.0, use_channel_attn=False,
                        num_heads=0, feature_dim=arch["last_channel"], arch=arch)

    def variant_spec(self, variant, **overrides):
        try:
            w = float(str(variant).lstrip("-") or 1.0)
        except ValueError:
            raise UserError(f"unknown ECA-MobileNetV2 width {variant!r}: pass e.g. eca-mobilenetv2-1.0") from None
        spec = self._spec(self.arch_for_width(w), variant=f"{w:g}")
        return spec.replace(**overrides) if overrides else spec

    def infer(self, sd, hp, variant, act, notes):
        feats = _mb_features(sd)
        n_blocks = sum(n for _, _, n, _ in MBV2_SETTING)
        if feats != list(range(n_blocks + 2)):
            raise UserError(f"ECA-MobileNetV2 has features.0..{n_blocks + 1}; this checkpoint has "
                            f"{len(feats)} feature entries: not the official layout")
        stem = int(sd["features.0.0.weight"].shape[0])
        outs, hiddens, ks = [], [], []
        for i in range(1, n_blocks + 1):
            p = f"features.{i}.conv."
            idx = sorted({int(k[len(p):].split(".")[0]) for k in sd if k.startswith(p)})
            first = sd[f"{p}0.0.weight"]
            expand = first.shape[-1] == 1  # expand 1×1 conv first; else the depthwise 3×3 comes first
            dw = sd[f"{p}1.0.weight"] if expand else first
            hiddens.append(int(dw.shape[0]))
            pw = sd[f"{p}{idx[-3]}.weight"]
            outs.append(int(pw.shape[0]))
            ks.append(int(sd[f"{p}{idx[-1]}.conv.weight"].shape[-1]))
        arch = {"stem": stem, "outs": outs, "hiddens": hiddens, "k_sizes": ks,
                "last_channel": int(sd[f"features.{n_blocks + 1}.0.weight"].shape[0])}
        # width_mult: the official multiplier that gives exactly these channels, if any
        for w in (1.0, 0.75, 0.5, 0.35, 0.25, 1.3, 1.4, 1.5, 2.0) + tuple(x / 100 for x in range(10, 301, 5)):
            ref = self.arch_for_width(w)
            if all(ref[k] == arch[k] for k in ("stem", "outs", "hiddens", "k_sizes", "last_channel")):
                arch["width_mult"] = w
                break
        else:
            notes.append("ECA-MobileNetV2 channels match no width_mult of the official code: built from the "
                         "channels found in the weights")
        spec = self._spec(arch, num_classes=int(sd["classifier.1.weight"].shape[0]),
                          in_chans=int(sd["features.0.0.weight"].shape[1]))
        w = arch.get("width_mult")
        if variant:
            try:
                want = float(variant.lstrip("-"))
            except ValueError:
                raise UserError(f"unknown ECA-MobileNetV2 variant {variant!r}: pass --variant eca-mobilenetv2 "
                                "(the width is read from the weights)") from None
            if w is None or abs(want - w) > 1e-9:
                raise UserError(f"--variant eca-mobilenetv2-{variant} expects width {want:g} but the weights have "
                                f"stem {stem} (width {w if w is not None else 'custom'}): "
                                "pass --variant eca-mobilenetv2")
        notes.append(f"ECA-MobileNetV2: width {w if w is not None else 'custom'}, stem {stem}, "
                     f"last {arch['last_channel']}, "
                     "ECA kernel sizes from the weights")
        if hp and hp.get("image_size"):
            spec = spec.replace(img_size=int(hp["image_size"]))
        return spec.replace(variant=f"{w:g}" if w is not None else None)

    def build(self, spec):
        from partialdeploy.models.eca import ECAMobileNetV2

        return ECAMobileNetV2(spec, mbv2_strides())

    def body_names(self, spec):
        return [f"features.{i}" for i in range(1, len(spec.arch["outs"]) + 1)]

    # features.0 is the stem, features.1..17 the inverted residuals; the last 1×1 conv
    # (features.18) and the classifier are the deploy form's head
    stem_name = "features.0"
    block_pattern = r"(?:^|\.)(features\.\d+|stem|head|classifier)(?=\.|$)"

    canonical_names = {"stem": "features.0", "classifier": "head", f"features.{_MBV2_LAST}": "head"}

    def memory(self, spec, img_size):
        """The widest expanded map: each block's hidden channels at its input size (the expansion
        comes before the stride-2 depthwise conv); three such maps alive at once."""
        from partialdeploy.families.base import Memory

        a, s = spec.arch, int(img_size)
        strides = mbv2_strides()
        res, widest = s // 2, int(a["stem"]) * (s // 2) ** 2
        for hidden, st in zip(a["hiddens"], strides):
            widest = max(widest, int(hidden) * res * res)
            res = max(1, res // st)
        return Memory(0, 4 * 3 * widest)


ECA_RESNET = register(ECAResNetFamily())
ECA_MOBILENETV2 = register(ECAMobileNetV2Family())
