"""Model families: one module per family registers everything the pipeline needs (no torch here).

A :class:`Family` says how to recognise its weights (``recognise``), how to read its architecture
from them and from a Lightning ``hyper_parameters`` dict (``infer``), how to build the training
form with the official state-dict layout (``build``), how to count its FLOPs (``flop_rules``) and
the official name of each deploy-form body block (``body_names``, for ONNX node names). The deploy
conversion is not here: the built model's blocks convert themselves and say what they fold
(:mod:`partialdeploy.models.protocol`). The loader, the pipeline and the CLI only talk to this
registry: adding a family adds a module here (and its model in ``partialdeploy.models``), not a
branch there.

Registered: ``partialnet`` and ``fasternet`` (:mod:`.partialnet`), ``eca_resnet`` and
``eca_mobilenetv2`` (:mod:`.eca`), ``convnext`` (:mod:`.convnext`, the partial ConvNeXt of
haiduo/PartialNet).
"""

from __future__ import annotations

from partialdeploy.errors import UserError

FAMILIES: dict[str, "Family"] = {}


class Family:
    name: str = ""  # ArchSpec.family
    title: str = ""  # human name, e.g. "ECA-ResNet"
    aliases: tuple[str, ...] = ()  # --variant prefixes (lower case, '-' separated)
    variants: dict = {}  # official named variants: name -> description fields
    acts: tuple[str, ...] = ("GELU", "RELU")  # activations --act may choose
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

    def spec_name(self, spec) -> str:
        return f"{self.title}-{spec.variant}" if spec.variant else f"{self.title}-custom"

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


def register(family: Family) -> Family:
    FAMILIES[family.name] = family
    return family


def get(name: str) -> Family:
    _load()
    try:
        return FAMILIES[name]
    except KeyError:
        raise UserError(f"unknown model family {name!r}; known: {', '.join(FAMILIES)}") from None


def all_families() -> list[Family]:
    _load()
    return list(FAMILIES.values())


def of(spec_or_model) -> Family:
    spec = getattr(spec_or_model, "spec", spec_or_model)
    return get(spec.family)


def all_variant_names() -> str:
    return ", ".join(n for f in all_families() for n in f.variant_names())


def parse_variant(variant: str) -> tuple[Family, str | None]:
    """``--variant`` -> (family, variant of that family or None). Accepts ``partialnet-t0``,
    ``patnet_s``, ``eca_resnet50``, ``eca-mobilenetv2``, ``convnext-tiny``; ambiguous or unknown
    names are a one-line error listing what to pass."""
    v = variant.strip().lower().replace("_", "-")
    hits = [(a, f) for f in all_families() for a in f.aliases if v == a or v.startswith(a)]
    if not hits:
        partial = sorted({f.aliases[0] for f in all_families() for a in f.aliases if a.startswith(v) and v})
        if len(partial) > 1:
            raise UserError(f"--variant {variant!r} is ambiguous: it could be {' or '.join(partial)}; "
                            f"pass one of {all_variant_names()}")
        if len(partial) == 1:
            return next(f for f in all_families() if f.aliases[0] == partial[0]), None
        raise UserError(f"unknown --variant {variant!r}; pass one of {all_variant_names()}")
    alias, fam = max(hits, key=lambda h: len(h[0]))
    rest = v[len(alias):].lstrip("-") or None
    return fam, rest


def choose(sd: dict, hp: dict, requested: Family | None, notes: list[str]) -> Family:
    """The family whose layout the weights have. A requested family must recognise them; otherwise
    the highest score wins, hyper_parameters.model_name breaking ties; a tie left is ambiguous."""
    scores = {f.name: f.recognise(sd) for f in all_families()}
    fits = [f for f in all_families() if scores[f.name] > 0]
    if requested is not None:
        if scores[requested.name] > 0:
            return requested
        if fits:
            best = max(fits, key=lambda f: scores[f.name])
            raise UserError(f"the weights are {best.title} but {requested.title} was requested: pass --variant "
                            f"{best.variant_names()[0]} (or another of {', '.join(best.variant_names())}), "
                            "or drop --variant")
        raise UserError(f"the weights are not {requested.title} (no {requested.title} keys; first keys: "
                        f"{', '.join(list(sd)[:3])}): check the checkpoint")
    if not fits:
        raise UserError("not a PartialNet/FasterNet/ECA-Net/partial-ConvNeXt checkpoint: no family recognises "
                        f"its keys (first keys: {', '.join(list(sd)[:4])}); known: {all_variant_names()}")
    name = str((hp or {}).get("model_name") or "").lower()
    hinted = [f for f in fits if any(h in name for h in f.hp_model_names)]

    def score(f):
        return scores[f.name] + (1.0 if f in hinted else 0.0)

    top = max(score(f) for f in fits)
    best = [f for f in fits if score(f) == top]
    if len(best) > 1:
        raise UserError(f"ambiguous weights: they fit {' and '.join(f.title for f in best)}; pass --variant "
                        + " or --variant ".join(f.variant_names()[0] for f in best))
    chosen = best[0]
    if name and not hinted and any(any(h in name for h in f.hp_model_names) for f in all_families()):
        notes.append(f"hyper_parameters.model_name is {name!r} but the weights are {chosen.title}: the weights win")
    return chosen


_LOADED = False


def _load() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from partialdeploy.families import convnext, eca, partialnet  # noqa: F401  (they register themselves)
