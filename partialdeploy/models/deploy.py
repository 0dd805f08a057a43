"""Deploy-form modules: what the train-form blocks turn into (no BatchNorm, no dropout, no
data-dependent control flow, constants baked). Each is exact up to float rounding and exports to
plain ONNX (Conv, MatMul/Gemm, Split, Concat, HardSigmoid, LayerNormalization, Softmax, ...)."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


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

    def _rest(self, x2):
        return x2 if self.passthrough_scale == 1.0 else x2 * self.passthrough_scale

    def forward(self, x):
        if self.conv is None:
            return self._rest(x)
        if self.c1 == self.dim:
            return self.conv(x)
        x1, x2 = torch.split(x, [self.c1, self.dim - self.c1], dim=1)
        return torch.cat((self.conv(x1), self._rest(x2)), 1)


class ChannelGateD(nn.Module):
    """PAT_ch deploy form: 3×3 conv on the first part; on the rest a channel gate from per-channel mean
    and (unbiased) std -> one Gemm (the (1×2) conv with its BN folded) -> hard-sigmoid -> multiply.
    The output BN has moved into the next 1×1 conv."""

    def __init__(self, conv: nn.Conv2d, dim: int, gate: nn.Conv2d, hw: tuple[int, int]):
        super().__init__()
        self.c1, self.dim = conv.in_channels, dim
        self.n = hw[0] * hw[1]  # spatial size is static per export
        self.conv = conv
        self.gate = gate  # 1×1 conv (2*c2 -> c2) over [mean; std] as (B, 2*c2, 1, 1)
        self.act = nn.Hardsigmoid()

    def forward(self, x):
        x1, x2 = torch.split(x, [self.c1, self.dim - self.c1], dim=1)
        mean = x2.mean((2, 3), keepdim=True)
        d = x2 - mean
        std = torch.sqrt((d * d).sum((2, 3), keepdim=True) * (1.0 / (self.n - 1)))  # unbiased, like torch.std
        g = self.act(self.gate(torch.cat((mean, std), 1)))
        return torch.cat((self.conv(x1), x2 * g), 1)


class SelfAttnD(nn.Module):
    """PAT_sf deploy form with the block's first shortcut folded in:
    cat(x1 + conv(x1), x2 + proj(softmax(q kᵀ + B) v)) where the identity sits in the 3×3 conv's centre
    tap, q-scale and LayerNorm affine sit in the q/k/v projections, and the iRPE key bias B is a
    constant (H, L, L).

    q, k and v are three projections (k reshaped straight to kᵀ) rather than one qkv + gather: with
    one fused qkv, OpenVINO 2026.4's CPU MHA fusion miscomputes the static-shape graph (measured:
    cos 0.990 on the demo model, varying between runs); this form is exact there and everywhere."""

    def __init__(self, conv: nn.Conv2d, dim: int, qkv: nn.Linear, proj: nn.Linear, bias: torch.Tensor,
                 num_heads: int, eps: float, hw: tuple[int, int]):
        super().__init__()
        self.c1, self.dim = conv.in_channels, dim
        self.c2 = c = dim - self.c1
        self.h, self.w = hw  # static: the iRPE bias was baked for this size
        self.conv = conv
        self.q, self.k, self.v = (nn.Linear(c, c) for _ in range(3))
        with torch.no_grad():
            for i, lin in enumerate((self.q, self.k, self.v)):
                lin.weight.copy_(qkv.weight[i * c:(i + 1) * c])
                lin.bias.copy_(qkv.bias[i * c:(i + 1) * c])
        self.proj = proj
        self.num_heads = num_heads
        self.eps = eps
        self.register_buffer("rpe_bias", bias.float().unsqueeze(0).contiguous())  # (1, H, L, L)

    def forward(self, x):
        x1, x2 = torch.split(x, [self.c1, self.c2], dim=1)
        C, h, w, n, H = self.c2, self.h, self.w, self.h * self.w, self.num_heads
        hd = C // H
        t = x2.flatten(2).transpose(1, 2)  # B, N, C
        tn = F.layer_norm(t, (C,), eps=self.eps)
        q = self.q(tn).reshape(-1, n, H, hd).transpose(1, 2)  # B, H, N, hd
        kt = self.k(tn).reshape(-1, n, H, hd).permute(0, 2, 3, 1)  # B, H, hd, N
        v = self.v(tn).reshape(-1, n, H, hd).transpose(1, 2)
        attn = (torch.matmul(q, kt) + self.rpe_bias).softmax(dim=-1)
        y = torch.matmul(attn, v).transpose(1, 2).reshape(-1, n, C)
        y = self.proj(y) + t
        return torch.cat((self.conv(x1), y.transpose(1, 2).reshape(-1, C, h, w)), 1)


class SpatialGateD(nn.Module):
    """PAT_sp deploy form, fused with the MLP's last 1×1 conv: one conv hidden -> [u, v, a]; the
    untouched part is gated u * hardsigmoid(a) and shifted by the folded BN; v already carries
    BN -> 1×1 conv composed into the same weights."""

    def __init__(self, proj: nn.Conv2d, c_u: int, c_v: int, shift_u: torch.Tensor):
        super().__init__()
        self.proj = proj
        self.c_u, self.c_v = c_u, c_v
        self.register_buffer("shift_u", shift_u.float().view(1, -1, 1, 1))
        self.act = nn.Hardsigmoid()

    def forward(self, h):
        u, v, a = torch.split(self.proj(h), [self.c_u, self.c_v, 1], dim=1)
        return torch.cat((u * self.act(a) + self.shift_u, v), 1)


class BlockD(nn.Module):
    """One deploy-form block: ``x + mlp(mixing(x))`` (shortcut) or, for PAT_sf blocks whose first
    shortcut is already inside ``mixing``, ``y = mixing(x); y + mlp(y)``."""

    def __init__(self, mixing: nn.Module, fc1: nn.Conv2d, act: nn.Module, out: nn.Module, split_shortcut: bool):
        super().__init__()
        self.mixing, self.fc1, self.act, self.out = mixing, fc1, act, out
        self.split_shortcut = split_shortcut

    def forward(self, x):
        y = self.mixing(x)
        if self.split_shortcut:
            x = y
        return x + self.out(self.act(self.fc1(y)))
