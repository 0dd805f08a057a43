"""Deploy forms of the partial ConvNeXt's own modules (:mod:`partialdeploy.models.convnext`): the
LayerNorms with their affine folded where it can be, the block, the head. Its PAT layers' deploy forms
are PartialNet's (:mod:`partialdeploy.models.pat_deploy`); the whole network is a ``protocol.DeployNet``."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class LN2dD(nn.Module):
    """LayerNorm over the channels of NCHW, affine optional (folded elsewhere when it can be)."""

    def __init__(self, c: int, eps: float, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
        super().__init__()
        self.c, self.eps = c, eps
        self.weight = nn.Parameter(weight.detach().clone()) if weight is not None else None
        self.bias = nn.Parameter(bias.detach().clone()) if bias is not None else None

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), (self.c,), self.weight, self.bias, self.eps).permute(0, 3, 1, 2)


class ConvLND(nn.Module):
    """conv -> (LN2d)  or  (LN2d) -> conv, with the LN affine folded wherever possible."""

    def __init__(self, conv: nn.Conv2d, norm: LN2dD, norm_first: bool):
        super().__init__()
        self.conv, self.norm, self.norm_first = conv, norm, norm_first

    def forward(self, x):
        return self.conv(self.norm(x)) if self.norm_first else self.norm(self.conv(x))


class ConvNeXtBlockD(nn.Module):
    """x + fc2(act(fc1(LN(mixing(x))))) in channels-last (LN affine in fc1, gamma in fc2); with
    PAT_sp: x + SpatialGate(conv2(act(conv1(LN(mixing(x))))))."""

    def __init__(self, mixing: nn.Module, c: int, eps: float, fc1: nn.Module, fc2: nn.Module, spatial: bool):
        super().__init__()
        self.mixing, self.c, self.eps = mixing, c, eps
        self.fc1, self.fc2 = fc1, fc2
        self.spatial = spatial

    def forward(self, x):
        y = self.mixing(x).permute(0, 2, 3, 1)
        y = F.layer_norm(y, (self.c,), eps=self.eps)
        if self.spatial:
            y = self.fc2(F.gelu(self.fc1(y.permute(0, 3, 1, 2))))
            return x + y
        y = self.fc2(F.gelu(self.fc1(y)))
        return x + y.permute(0, 3, 1, 2)


class HeadD(nn.Module):
    def __init__(self, c: int, eps: float, fc: nn.Module):
        super().__init__()
        self.c, self.eps, self.fc = c, eps, fc

    def forward(self, x):
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(F.layer_norm(x, (self.c,), eps=self.eps))


class AffineD(nn.Module):
    """x * w + b (a headless ConvNeXt's head LayerNorm affine, with no classifier to fold it into)."""

    def __init__(self, w, b):
        super().__init__()
        self.register_buffer("w", w.detach().clone())
        self.register_buffer("b", b.detach().clone())

    def forward(self, x):
        return x * self.w + self.b
