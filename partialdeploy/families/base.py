"""The :class:`Family` interface and the registry it fills (no torch, no ``ArchSpec``): each module of
``partialdeploy.families`` subclasses ``Family`` and calls :func:`register`; ``partialdeploy.families``
loads them and answers for the registry (``get``, ``all_families``, ``choose``, ...)."""

from __future__ import annotations

import re
from typing import NamedTuple

from partialdeploy.analysis.blocknames import HEAD, find_block
from partialdeploy.families.names import NAMES

FAMILIES: dict[str, "Family"] = {}


class Memory(NamedTuple):
    """What a model needs in memory beyond its parameters (bytes, float32; deliberately high)."""

    constants: int  # tensors baked into the deploy form that are not parameters (attention biases)
    per_image: int  # activations alive at once for one image (the widest point of the network)


class Family:
    name: str = ""  # ArchSpec.family; its title, activations and spec names: families.names
    aliases: tuple[str, ...] = ()  # --variant prefixes (lower case, '-' separated)
    variants: dict = {}  # official named variants: name -> description fields
    hp_model_names: tuple[str, ...] = ()  # substrings of hyper_parameters.model_name that point here

    # --- recognising and reading weights (state_dict with official key names, prefixes stripped)
    def recognise(self, sd: dict) -> float:
        """0: not this family; 1: the layout fits; higher: only this family has these keys."""
        raise NotImplementedError

    def infer(self, sd: dict, hp: dict, variant: str | None, act: str | None, notes: list[str]):
        """ArchSpec from the weights (+ hyper_parameters, + a requested variant of this family)."""
        raise NotImplementedError

    def variant_spec(self, variant: str, **overrides):
        raise NotImplementedError

    def match_variant(self, spec) -> str | None:
        return None

    @property
    def title(self) -> str:
        """Human name, e.g. "ECA-ResNet"."""
        return NAMES[self.name].title

    @property
    def acts(self) -> tuple[str, ...]:
        """Activations ``--act`` may choose."""
        return NAMES[self.name].acts

    def describe(self, spec) -> str:
        """One line for ``inspect``: what the weights say about the architecture."""
        return (f"depths {list(spec.depths)}, act {spec.act}, classes {spec.num_classes}, "
                + ", ".join(f"{k} {v}" for k, v in spec.arch.items()))

    def variant_names(self) -> list[str]:
        return [f"{self.aliases[0]}-{v}" if v else self.aliases[0] for v in self.variants]

    # --- torch side (each implementation imports torch lazily)
    def build(self, spec):
        raise NotImplementedError

    def flop_rules(self) -> dict:
        """{module class: fn(module, inputs, output) -> (kind, MACs)} for what plain Conv/Linear
        hooks miss (attention matmuls, convs through F.conv2d)."""
        return {}

    def body_names(self, spec) -> list[str] | None:
        """Official (train-form) name of each deploy-form ``body.N``; None: keep the exporter's names."""
        return None

    # --- analysis: block names and boundaries, taps, layer -> block, memory (no torch unless said)
    stem_name: str = "stem"  # what the deploy form's ``stem`` is called in this family's graphs
    # block names inside normalized layer names (blocknames.normalize: dotted lower-case tokens);
    # group 1 is the block, which ``canonical`` turns into its official name
    block_pattern: str = r"(?:^|\.)(stem|head)(?=\.|$)"
    canonical_names: dict = {}  # normalized match -> official name ("patch.embed" -> "patch_embed")
    tap_aliases: dict = {}  # boundary -> train-form module whose output it is, when the names differ

    def canonical(self, match: str) -> str:
        return self.canonical_names.get(match, match)

    def boundaries(self, spec) -> list[str]:
        """Every block boundary in execution order: the stem, each body block, ``head`` (the logits)."""
        return [self.stem_name, *(self.body_names(spec) or []), HEAD]

    def block_of_layer(self, name: str, spec=None) -> str | None:
        """The block a runtime's layer name belongs to (ONNX node, OpenVINO layer, TensorRT layer,
        deploy-form ``body.N`` given ``spec``); None if it names none of this family's blocks."""
        bodies = self.body_names(spec) if spec is not None else None
        return find_block(name, _compiled(self.block_pattern), self.canonical, bodies)

    def is_boundary(self, tensor: str) -> bool:
        """Is a tensor name one of this family's block outputs (as ``name_onnx_blocks`` names them)?"""
        return tensor != HEAD and "/" not in tensor and self.block_of_layer(tensor) == tensor

    def tap_modules(self, model) -> dict:
        """{boundary: train-form module whose output it is} in execution order, ``head`` excluded
        (the model's output). Needs the built model (torch), asks nothing else of it."""
        mods = dict(model.named_modules())
        out = {}
        for b in self.boundaries(model.spec)[:-1]:
            m = mods.get(self.tap_aliases.get(b, b))
            if m is not None:
                out[b] = m
        return out

    def memory(self, spec, img_size: int) -> Memory:
        """Constants and per-image activations (bytes, the input image not counted) at ``img_size``;
        the default assumes a stride-4 stem of ``embed_dim`` channels and blocks holding
        ``mlp_ratio + 3`` maps of that size."""
        s = int(img_size)
        return Memory(0, 4 * int((spec.embed_dim or 64) * (s // 4) ** 2 * ((spec.mlp_ratio or 2.0) + 3)))


def register(family: Family) -> Family:
    if family.name not in NAMES:
        raise TypeError(f"family {family.name!r} has no entry in partialdeploy.families.names (its title, "
                        "activations and how its specs are named)")
    FAMILIES[family.name] = family
    return family


def _compiled(pattern: str) -> re.Pattern:
    c = _PATTERNS.get(pattern)
    if c is None:
        c = _PATTERNS[pattern] = re.compile(pattern)
    return c


_PATTERNS: dict[str, re.Pattern] = {}
