"""Model families: one module per family registers everything the pipeline needs (no torch here).

A ``Family`` (:mod:`.base`) says how to recognise its weights (``recognise``), how to read its architecture
from them and from a Lightning ``hyper_parameters`` dict (``infer``), how to build the training
form with the official state-dict layout (``build``), how to count its FLOPs (``flop_rules``), and
everything the analysis needs to speak its names: the official name of each deploy-form body block
(``body_names``, for ONNX node names) and its stem (``stem_name``), its block boundaries in
execution order (``boundaries``: what ``diff`` compares and the INT8 fallback ranks), the train-form
modules whose outputs are those boundaries (``tap_modules``), how a runtime's layer name maps to a
block (``block_pattern`` / ``block_of_layer``, per-layer profiles) and what it needs in memory
(``memory``, the resource budget). The deploy
conversion is not here: the built model's blocks convert themselves and say what they fold
(:mod:`partialdeploy.models.protocol`). What an ``ArchSpec`` itself needs — the family's title,
activations and spec names — is :mod:`.names` (no imports), so ``spec`` never imports the families.
The loader, the pipeline and the CLI only talk to this registry: adding a family adds a module here,
its entry in :mod:`.names` (and its model in ``partialdeploy.models``), not a branch there.

Registered: ``partialnet`` and ``fasternet`` (:mod:`.partialnet`), ``eca_resnet`` and
``eca_mobilenetv2`` (:mod:`.eca`), ``convnext`` (:mod:`.convnext`, the partial ConvNeXt of
haiduo/PartialNet).
"""

from __future__ import annotations

from partialdeploy.errors import UserError
from partialdeploy.families.base import FAMILIES, Family


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


def variant_spec(family: str, variant: str, **overrides):
    """The official configuration of a named variant as an ``ArchSpec``, e.g. ("partialnet", "t0"),
    ("eca_resnet", "50"); ``overrides`` replace fields."""
    return get(family.lower()).variant_spec(variant, **overrides)


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


def family_of(model_info) -> "Family | None":
    """The family of an ArchSpec, a manifest's ``model`` dict or a family name; None if not known."""
    name = model_info if isinstance(model_info, str) else (
        model_info.get("family") if isinstance(model_info, dict) else getattr(model_info, "family", None))
    _load()
    return FAMILIES.get(name) if name else None


def block_of_layer(name: str, spec=None) -> str:
    """A runtime layer name -> its official block. With a spec (or a manifest's ``model`` dict) its
    family decides; without one, the longest block any family finds (a bare model file). ``other``
    when nothing maps."""
    fam = family_of(spec) if spec is not None else None
    if fam is not None:
        return fam.block_of_layer(name, spec_of(spec)) or "other"
    hits = [b for f in all_families() if (b := f.block_of_layer(name))]
    return max(hits, key=len) if hits else "other"


def is_boundary(tensor: str) -> bool:
    """Is a tensor name a block output of any family (files without a ``block_outputs`` list)?"""
    return any(f.is_boundary(tensor) for f in all_families())


def spec_of(model_info):
    """An ArchSpec from an ArchSpec or a manifest's ``model`` dict; None when it cannot be read (an
    old or damaged manifest: layer names still map by pattern, ``body.N`` stays as it is)."""
    if not isinstance(model_info, dict):
        return model_info if hasattr(model_info, "depths") else None
    from partialdeploy.spec import ArchSpec

    try:
        return ArchSpec.from_dict(model_info)
    except Exception:
        return None


_LOADED = False


def _load() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        from partialdeploy.families import convnext, eca, partialnet  # noqa: F401  (they register themselves)
