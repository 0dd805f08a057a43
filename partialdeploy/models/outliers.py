"""Activation outlier channels, injected without changing the function (INT8 stress tests, bench).

Trained networks often have a few activation channels far larger than the rest; per-tensor INT8
activation scales then crush the other channels. ``inject_activation_outliers`` reproduces this on
any PartialNet: in each named block the output of a few channels of the partial 3×3 conv is
multiplied by ``scale`` and the MLP's first 1×1 conv divides its input columns by ``scale`` — the
network computes the same function (exactly, up to float rounding) but the activation entering the
MLP has outlier channels, in the deploy form too.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def inject_activation_outliers(model, blocks, scale: float = 300.0, channels: int = 2):
    mods = dict(model.named_modules())
    for name in blocks:
        blk = mods.get(name)
        conv = getattr(getattr(blk, "spatial_mixing", None), "partial_conv3", None)
        if conv is None or getattr(blk, "split_shortcut", True):
            raise ValueError(f"{name}: not a PAT_ch/PConv block (outliers go into its partial conv output)")
        fc1 = blk.mlp[0]
        for c in range(min(channels, conv.out_channels)):
            conv.weight[c] *= scale
            fc1.weight[:, c] /= scale
    return model
