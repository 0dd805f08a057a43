"""What an ``ArchSpec`` knows about its family, and nothing more: the registered family names, each
family's human title, the activations ``--act`` may choose for it, and how it names a spec (the
``name`` in manifests, reports and ONNX metadata). Plain data and string formatting, no imports:
:mod:`partialdeploy.spec` reads it, and the families, which build specs, sit above both — so spec
never imports the families. A new family adds its entry here (``register`` refuses one without)."""

from __future__ import annotations

from typing import Callable, NamedTuple


class Names(NamedTuple):
    title: str  # human name, e.g. "ECA-ResNet"
    acts: tuple[str, ...]  # activations --act may choose
    spec_name: Callable  # spec -> its display name


def _partialnet_like(title: str) -> Callable:
    def name(spec) -> str:
        if spec.variant:
            return f"{title}-{spec.variant.upper()}"
        return f"{title}-custom(embed_dim={spec.embed_dim}, depths={list(spec.depths)})"
    return name


def _eca_resnet(spec) -> str:
    ks = "".join(str(k) for k in spec.arch.get("k_sizes", []))
    base = f"ECA-ResNet-{spec.variant}" if spec.variant else f"ECA-ResNet-custom(depths={list(spec.depths)})"
    return f"{base} (k={ks})" if ks else base


def _eca_mobilenetv2(spec) -> str:
    w = spec.arch.get("width_mult")
    return f"ECA-MobileNetV2-{w:g}x" if w else "ECA-MobileNetV2-custom"


def _convnext(spec) -> str:
    kind = f"partial(n_div={spec.n_div})" if spec.use_channel_attn else "plain"
    base = f"ConvNeXt-{spec.variant.capitalize()}" if spec.variant else \
        f"ConvNeXt-custom(depths={list(spec.depths)}, dims={list(spec.arch.get('dims', []))})"
    return f"{base} {kind}" + (" +PAT_sp" if spec.use_spatial_attn else "")


NAMES: dict[str, Names] = {
    "partialnet": Names("PartialNet", ("GELU", "RELU"), _partialnet_like("PartialNet")),
    "fasternet": Names("FasterNet", ("GELU", "RELU"), _partialnet_like("FasterNet")),
    "eca_resnet": Names("ECA-ResNet", ("RELU",), _eca_resnet),
    "eca_mobilenetv2": Names("ECA-MobileNetV2", ("RELU6",), _eca_mobilenetv2),
    "convnext": Names("ConvNeXt", ("GELU",), _convnext),
}
