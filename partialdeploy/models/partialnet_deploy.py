"""Deploy forms of PartialNet / PATNet / FasterNet's own modules (:mod:`partialdeploy.models.partialnet`):
the partial conv, the block, the head. The PAT layers' deploy forms are shared with the partial
ConvNeXt (:mod:`partialdeploy.models.pat_deploy`); the whole network is a ``protocol.DeployNet``."""

from __future__ import annotations

import torch
import torch.nn as nn

from partialdeploy.models.pat_deploy import SpatialGateD


def make_act(name: str, inplace: bool = False) -> nn.Module:
    name = name.upper()
    if name == "GELU":
        return nn.GELU()
    if name == "RELU":
        return nn.ReLU(inplace=inplace)
    raise ValueError(f"unknown activation {name!r} (GELU or RELU)")


class PartialConvD(nn.Module):
    """split [c1 | rest] -> 3×3 conv on c1 (optionally with the block's identity folded in) -> concat.
    Deploy form of PConv, DPConv (learned split) and the conv half of PAT blocks."""

    def __init__(self, conv: nn.Conv2d | None, dim: int, passthrough_scale: float = 1.0):
        super().__init__()
        self.c1 = conv.in_channels if conv is not None else 0
        self.dim = dim
        self.conv = conv
        # with the block's identity folded in, the untouched channels come out as x2 + x2
        self.passthrough_scale = passthrough_scale

    @classmethod
    def build(cls, dim: int, c1: int, passthrough_scale: float = 1.0) -> "PartialConvD":
        """Built directly in deploy form (shapes only; load converted weights into it)."""
        return cls(nn.Conv2d(c1, c1, 3, 1, 1, bias=False) if c1 > 0 else None, dim, passthrough_scale)

    def _rest(self, x2):
        return x2 if self.passthrough_scale == 1.0 else x2 * self.passthrough_scale

    def forward(self, x):
        if self.conv is None:
            return self._rest(x)
        if self.c1 == self.dim:
            return self.conv(x)
        x1, x2 = torch.split(x, [self.c1, self.dim - self.c1], dim=1)
        return torch.cat((self.conv(x1), self._rest(x2)), 1)


class BlockD(nn.Module):
    """One deploy-form block: ``x + mlp(mixing(x))`` (shortcut) or, for PAT_sf blocks whose first
    shortcut is already inside ``mixing``, ``y = mixing(x); y + mlp(y)``."""

    def __init__(self, mixing: nn.Module, fc1: nn.Conv2d, act: nn.Module, out: nn.Module, split_shortcut: bool):
        super().__init__()
        self.mixing, self.fc1, self.act, self.out = mixing, fc1, act, out
        self.split_shortcut = split_shortcut

    @classmethod
    def build(cls, mixing: nn.Module, dim: int, hidden: int, act: str, split_shortcut: bool,
              spatial: tuple[int, int] | None = None) -> "BlockD":
        """Built directly in deploy form around a deploy-form ``mixing`` (shapes only; load converted
        weights into it). ``spatial``: (untouched, convolved) channels of a PAT_sp gate fused into the
        last 1×1 conv."""
        out = SpatialGateD.build(hidden, *spatial) if spatial else nn.Conv2d(hidden, dim, 1, bias=False)
        return cls(mixing, nn.Conv2d(dim, hidden, 1), make_act(act), out, split_shortcut)

    def forward(self, x):
        y = self.mixing(x)
        if self.split_shortcut:
            x = y
        return x + self.out(self.act(self.fc1(y)))


class DeployHead(nn.Module):
    """Global average pool -> 1×1 conv -> activation -> classifier."""

    def __init__(self, conv: nn.Conv2d, act: nn.Module, fc: nn.Module):
        super().__init__()
        self.conv, self.act, self.fc = conv, act, fc

    def forward(self, x):
        x = x.mean((2, 3), keepdim=True)
        return self.fc(torch.flatten(self.act(self.conv(x)), 1))
