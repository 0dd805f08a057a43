"""The deploy protocol: how a train-form module becomes its deploy form (torch required).

* Every module that changes on the way to deployment has ``to_deploy(ctx, **inputs)`` and returns a
  :class:`DeployResult`: the deploy-form module, what it folded (a list of :class:`Fold`, read by
  ``inspect``) and, rarely, a per-channel affine it leaves for its consumer to fold in (PAT_ch's
  output BatchNorm goes into the next 1×1 conv). ``inputs`` are what only the parent knows (the
  block's shortcut folded into a conv, the 1×1 conv before PAT_sp, a layer scale).
* Each block declares what it folds as class-level :class:`Fold` constants next to its conversion.
* :func:`convert` is the one generic walker: a module with ``to_deploy`` converts itself (and asks
  ``ctx.convert`` for its parts); any other container has each child converted in place; a leaf
  without ``to_deploy`` (Conv2d, Linear, an activation, any deploy-form module) is already in deploy
  form. Converting a deploy form again changes nothing (idempotent); the input is never modified.
  A new block type only needs its own ``to_deploy``: the walker does not name any block.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Fold:
    """What one kind of block folds into its neighbours for deployment, and what stays and why."""

    kind: str  # e.g. "PAT_ch", "PatchEmbed", "Head"
    folds: str
    stays: str


@dataclass
class DeployResult:
    """What every ``to_deploy`` returns."""

    module: nn.Module
    folds: list[Fold] = field(default_factory=list)  # in data-flow order, one entry per block converted
    # per-channel y = s * x + t (float64) left on the output for the consumer to fold in, or None
    affine: tuple[torch.Tensor, torch.Tensor] | None = None


class DeployNet(nn.Module):
    """The deploy form of a whole network, every family's: a flat chain ``stem``, ``body.N``, ``head``
    (each family names the ``body.N``: ``Family.body_names``)."""

    def __init__(self, stem: nn.Module, body: list[nn.Module], head: nn.Module):
        super().__init__()
        self.stem = stem
        self.body = nn.Sequential(*body)
        self.head = head

    def forward(self, x):
        return self.head(self.body(self.stem(x)))


class DeployContext:
    """Handed to every ``to_deploy``: the export size, the input size of any module (from one lazy
    shape-only forward of the whole model) and :meth:`convert` for the module's parts."""

    def __init__(self, root: nn.Module, img_size: int | tuple[int, int] | None):
        self.root = root
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else img_size
        self._sizes: dict[int, tuple[int, int]] | None = None

    def hw(self, module: nn.Module) -> tuple[int, int]:
        """Spatial size (H, W) of ``module``'s input at the export size."""
        if self._sizes is None:
            self._sizes = self._probe()
        try:
            return self._sizes[id(module)]
        except KeyError:
            raise ValueError(f"{type(module).__name__} never sees a 4-D input in a forward of the model at "
                             f"{self.img_size}: its deploy form cannot be sized") from None

    @torch.no_grad()
    def _probe(self) -> dict[int, tuple[int, int]]:
        if self.img_size is None:
            raise ValueError("this model's deploy form depends on the input size: pass img_size")
        sizes: dict[int, tuple[int, int]] = {}

        def pre(mod, inp):
            if inp and isinstance(inp[0], torch.Tensor) and inp[0].dim() == 4:
                sizes.setdefault(id(mod), tuple(int(s) for s in inp[0].shape[2:]))

        hooks = [m.register_forward_pre_hook(pre) for m in self.root.modules() if hasattr(m, "to_deploy")]
        try:
            in_chans = getattr(getattr(self.root, "spec", None), "in_chans", 3)
            self.root(torch.zeros(1, in_chans, *self.img_size))
        finally:
            for h in hooks:
                h.remove()
        return sizes

    def convert(self, module: nn.Module, **inputs) -> DeployResult:
        """The generic walker (see the module docstring)."""
        to_deploy = getattr(module, "to_deploy", None)
        if to_deploy is not None:
            res = to_deploy(self, **inputs)
            if not isinstance(res, DeployResult):
                raise TypeError(f"{type(module).__name__}.to_deploy returned {type(res).__name__}, "
                                "not a DeployResult")
            return res
        if inputs:
            raise TypeError(f"{type(module).__name__} has no to_deploy to take {', '.join(inputs)}")
        folds: list[Fold] = []
        for name, child in list(module.named_children()):
            r = self.convert(child)
            if r.affine is not None:
                raise ValueError(f"{type(child).__name__} ({name}) leaves an affine for its consumer to fold, "
                                 f"and {type(module).__name__} has no to_deploy to take it")
            setattr(module, name, r.module)  # nn.Module registers it as the child `name`
            folds += r.folds
        return DeployResult(module, folds)


@torch.no_grad()
def convert(model: nn.Module, img_size: int | tuple[int, int] | None = None) -> DeployResult:
    """Deploy form of ``model`` (any registered family, or any module tree whose blocks implement
    ``to_deploy``) for input size ``img_size``. Works on a copy in eval mode; the result is in eval
    mode and carries the model's ``spec``."""
    root = copy.deepcopy(model).eval()
    res = DeployContext(root, img_size).convert(root)
    res.module.eval()
    if hasattr(model, "spec") and not hasattr(res.module, "spec"):
        res.module.spec = model.spec
    return res


def fold_table(folds: list[Fold]) -> list[dict]:
    """``inspect``'s table: one row per kind, in first-seen order, with its count."""
    counts = Counter(f.kind for f in folds)
    first: dict[str, Fold] = {}
    for f in folds:
        first.setdefault(f.kind, f)
    return [{"kind": k, "count": counts[k], "folds": f.folds, "stays": f.stays} for k, f in first.items()]
