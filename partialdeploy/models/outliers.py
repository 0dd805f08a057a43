"""Activation outlier channels, injected into named blocks (INT8 stress tests, bench).

Trained networks often have a few activation channels far larger than the rest; per-tensor INT8
activation scales then crush the other channels. ``inject_activation_outliers`` reproduces this in
the blocks named (official names, as ``Family.boundaries`` lists them), for each block type where
an activation inside the block survives into the deploy form:

* PartialNet / FasterNet (PAT_ch / PConv block): a few channels of the partial 3×3 conv's output are
  multiplied by ``scale`` and the MLP's first 1×1 conv divides its input columns by ``scale``;
* ECA-ResNet (basic and bottleneck blocks): the first BatchNorm's output channels (its weight and
  bias, which fold into the first conv) times ``scale``, the second conv's input columns divided by
  it — exact, as ReLU commutes with a positive scale;
* ConvNeXt: the MLP's hidden channels (fc1 rows) times ``scale``, fc2's input columns divided by it
  — GELU is not homogeneous, so the function moves a little (negative pre-activations).

The first two leave the function unchanged (up to float rounding), in the deploy form too, but the
activation inside the block has outlier channels.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def inject_activation_outliers(model, blocks, scale: float = 300.0, channels: int = 2):
    mods = dict(model.named_modules())
    for name in blocks:
        blk = mods.get(name)
        if blk is None:
            raise ValueError(f"{name}: no such block")
        first, second = _pair(name, blk)
        for c in range(min(channels, first[0].shape[0])):
            for t in first:
                t[c] *= scale
            second.weight[:, c] /= scale
    return model


def _pair(name, blk):
    """(tensors whose channel c is scaled up, the layer whose input column c is scaled down)."""
    sm = getattr(blk, "spatial_mixing", None)
    conv = getattr(sm, "partial_conv3", None)
    if conv is not None and not getattr(blk, "split_shortcut", True):
        return [conv.weight], blk.mlp[0]
    if hasattr(blk, "bn1") and hasattr(blk, "conv2"):
        return [blk.bn1.weight, blk.bn1.bias], blk.conv2
    fc1 = getattr(getattr(blk, "mlp", None), "fc1", None)
    if fc1 is not None:
        return [fc1.weight, fc1.bias], blk.mlp.fc2
    raise ValueError(f"{name}: not a PAT_ch/PConv, ECA-ResNet or ConvNeXt MLP block (no activation to put "
                     "outliers into)")
