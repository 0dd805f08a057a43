"""Exact linear-algebra folds used by the blocks' ``to_deploy`` methods."""

from __future__ import annotations

import torch
import torch.nn as nn


@torch.no_grad()
def bn_affine(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = s * x + t (per channel)."""
    s = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        s = s * bn.weight.double()
    t = -bn.running_mean.double() * s
    if bn.bias is not None:
        t = t + bn.bias.double()
    return s, t


@torch.no_grad()
def conv_with(weight: torch.Tensor, bias: torch.Tensor | None, like: nn.Conv2d | None = None,
              **conv_kw) -> nn.Conv2d:
    """A Conv2d carrying ``weight``/``bias`` (float64 inputs are rounded to float32 once, here)."""
    out_c, in_c_g, kh, kw = weight.shape
    if like is not None:
        conv_kw = dict(stride=like.stride, padding=like.padding, dilation=like.dilation, groups=like.groups,
                       **conv_kw)
    groups = conv_kw.get("groups", 1)
    conv = nn.Conv2d(in_c_g * groups, out_c, (kh, kw), bias=bias is not None, **conv_kw)
    conv.weight.copy_(weight.float())
    if bias is not None:
        conv.bias.copy_(bias.float())
    return conv


@torch.no_grad()
def copy_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A new Conv2d with the same weights and geometry."""
    return conv_with(conv.weight.double(), conv.bias.double() if conv.bias is not None else None, like=conv)


@torch.no_grad()
def linear_with(w: torch.Tensor, b: torch.Tensor | None) -> nn.Linear:
    """A Linear carrying ``w``/``b`` (float64 inputs are rounded to float32 once, here)."""
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    lin.weight.copy_(w.float())
    if b is not None:
        lin.bias.copy_(b.float())
    return lin


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d | None) -> nn.Conv2d:
    """conv -> BN  ==>  one conv with bias (rewrite 1)."""
    w = conv.weight.double()
    b = conv.bias.double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    if bn is not None and not isinstance(bn, nn.Identity):
        s, t = bn_affine(bn)
        w = w * s.view(-1, 1, 1, 1)
        b = b * s + t
    return conv_with(w, b, like=conv)


@torch.no_grad()
def fold_input_affine(conv: nn.Conv2d, s: torch.Tensor | None,
                      t: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """A per-channel affine y = s*x + t applied *before* a 1×1 conv without padding folds into that
    conv's input columns plus a bias (rewrite 2). Returns (weight, bias) in float64."""
    assert conv.kernel_size == (1, 1) and conv.padding in ((0, 0), 0) and conv.groups == 1
    w = conv.weight.double()
    b = conv.bias.double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64)
    if s is not None:
        b = b + (w[:, :, 0, 0] @ t.double())
        w = w * s.double().view(1, -1, 1, 1)
    return w, b
