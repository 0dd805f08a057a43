"""Deploy forms of ECA-ResNet and ECA-MobileNetV2's modules (:mod:`partialdeploy.models.eca`): every
BN folded into its conv, the ECA gate in the form that exports best. The whole network is a
``protocol.DeployNet``."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ECAGateD(nn.Module):
    """ECA deploy form. The (B, C, 1, 1) pooled vector is *reshaped* (not transposed: the unit dims
    make it a pure reshape) to (B, 1, C) for the 1-D conv, so the export has no Transpose pair:
    GlobalAveragePool -> Reshape -> Conv -> Reshape -> Sigmoid -> Mul. With k = 1 (ECA-MobileNetV2's
    narrow blocks) the conv is a scalar: GlobalAveragePool -> Mul -> Sigmoid -> Mul.
    (A banded C×C 1×1 conv avoids both reshapes but ships C² weights, 16 MB per ECA-ResNet-50 stage-4
    block; measured in scripts/bench.py --eca-forms.)"""

    def __init__(self, weight: torch.Tensor):
        super().__init__()
        self.k = int(weight.shape[-1])
        if self.k == 1:
            self.register_buffer("scale", weight.reshape(()).float().clone())
            self.conv = None
        else:
            self.conv = nn.Conv1d(1, 1, self.k, padding=(self.k - 1) // 2, bias=False)
            self.conv.weight.data.copy_(weight)

    def forward(self, x):
        y = F.adaptive_avg_pool2d(x, 1)
        if self.conv is None:
            g = torch.sigmoid(y * self.scale)
        else:
            b, c = x.shape[0], x.shape[1]
            g = torch.sigmoid(self.conv(y.reshape(b, 1, c)).reshape(b, c, 1, 1))
        return x * g


class ResBlockD(nn.Module):
    """Deploy form of an ECA-ResNet block: folded convs (ReLU between), ECA gate, shortcut (a folded
    1×1 conv when downsampling), ReLU."""

    def __init__(self, convs: list[nn.Conv2d], eca: ECAGateD, shortcut: nn.Module | None):
        super().__init__()
        self.convs = nn.ModuleList(convs)
        self.eca = eca
        self.shortcut = shortcut

    def forward(self, x):
        y = x
        for i, c in enumerate(self.convs):
            y = c(y)
            if i < len(self.convs) - 1:
                y = F.relu(y)
        y = self.eca(y)
        return F.relu(y + (self.shortcut(x) if self.shortcut is not None else x))


class ResStemD(nn.Module):
    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return F.max_pool2d(F.relu(self.conv(x)), 3, 2, 1)


class PoolFcHeadD(nn.Module):
    """Global average pool -> (optional 1×1 conv + activation) -> linear classifier."""

    def __init__(self, fc: nn.Module, pre: nn.Module | None = None, act: str | None = None):
        super().__init__()
        self.pre, self.act, self.fc = pre, act, fc

    def forward(self, x):
        if self.pre is not None:
            x = self.pre(x)
            x = F.relu6(x) if self.act == "RELU6" else F.relu(x)
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class ConvActD(nn.Module):
    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        self.conv = conv

    def forward(self, x):
        return F.relu6(self.conv(x))


class InvertedResidualD(nn.Module):
    def __init__(self, convs: list[nn.Module], eca: ECAGateD, residual: bool):
        super().__init__()
        self.convs = nn.Sequential(*convs)
        self.eca = eca
        self.residual = residual

    def forward(self, x):
        y = self.eca(self.convs(x))
        return x + y if self.residual else y
