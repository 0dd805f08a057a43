"""Deploy forms of the PAT layers (:mod:`partialdeploy.models.pat`), one for PartialNet and the
partial ConvNeXt alike: what their ``to_deploy`` turns them into (no BatchNorm, no dropout, no
data-dependent control flow, constants baked). Each is exact up to float rounding and exports to
plain ONNX (Conv, MatMul/Gemm, Split, Concat, HardSigmoid, Softmax, ...). A deploy-form module has no
``to_deploy``: the walker leaves it as it is, so converting a deploy form again changes nothing.

Each can also be built directly in deploy form, shapes only (``build``): loaded with a converted
block's state dict it computes what the converted block does."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ChannelGateD(nn.Module):
    """PAT_ch deploy form: 3×3 conv on the first part; on the rest a channel gate from per-channel mean
    and (unbiased) std -> one Gemm (the (1×2) conv with its BN folded) -> hard-sigmoid -> multiply.

    The output BN: PartialNet hands it to the next 1×1 conv (no ``out_affine``); in the partial
    ConvNeXt it meets a LayerNorm and stays, as ``out_affine`` (s, t): x2·(g·s) + t, its scale on the
    small gate vector."""

    def __init__(self, conv: nn.Conv2d, dim: int, gate: nn.Conv2d, hw: tuple[int, int],
                 out_affine: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__()
        self.c1, self.dim = conv.in_channels, dim
        self.n = hw[0] * hw[1]  # spatial size is static per export
        self.conv = conv
        self.gate = gate  # 1×1 conv (2*c2 -> c2) over [mean; std] as (B, 2*c2, 1, 1)
        self.act = nn.Hardsigmoid()
        s, t = out_affine if out_affine is not None else (None, None)
        self.register_buffer("s", s.float().view(1, -1, 1, 1) if s is not None else None)
        self.register_buffer("t", t.float().view(1, -1, 1, 1) if t is not None else None)

    @classmethod
    def build(cls, dim: int, c1: int, hw: tuple[int, int]) -> "ChannelGateD":
        """Built directly in deploy form (shapes only; load converted weights into it)."""
        c2 = dim - c1
        return cls(nn.Conv2d(c1, c1, 3, 1, 1, bias=False), dim, nn.Conv2d(2 * c2, c2, 1), hw)

    def forward(self, x):
        x1, x2 = torch.split(x, [self.c1, self.dim - self.c1], dim=1)
        mean = x2.mean((2, 3), keepdim=True)
        d = x2 - mean
        std = torch.sqrt((d * d).sum((2, 3), keepdim=True) * (1.0 / (self.n - 1)))  # unbiased, like torch.std
        g = self.act(self.gate(torch.cat((mean, std), 1)))
        if self.s is None:
            return torch.cat((self.conv(x1), x2 * g), 1)
        return torch.cat((self.conv(x1), x2 * (g * self.s) + self.t), 1)


class SelfAttnD(nn.Module):
    """PAT_sf deploy form: conv(x1) ‖ proj(softmax(q kᵀ + B) v) on LN(x2), where the q-scale and the
    LayerNorm affine sit in the q/k/v projections and the iRPE key bias B is a constant (H, L, L).
    ``residual`` (PartialNet's split shortcut folded in): the attention half adds x2 back and the
    identity sits in the 3×3 conv's centre tap, i.e. cat(x1 + conv(x1), x2 + attn(x2)).

    q, k and v are three projections (k reshaped straight to kᵀ) rather than one qkv + gather: with
    one fused qkv, OpenVINO 2026.4's CPU MHA fusion miscomputes the static-shape graph (measured:
    cos 0.990 on the demo model, varying between runs); this form is exact there and everywhere."""

    def __init__(self, conv: nn.Conv2d, dim: int, q: nn.Linear, k: nn.Linear, v: nn.Linear, proj: nn.Linear,
                 bias: torch.Tensor, num_heads: int, eps: float, hw: tuple[int, int], residual: bool):
        super().__init__()
        self.c1, self.dim = conv.in_channels, dim
        self.c2 = dim - self.c1
        self.h, self.w = hw  # static: the iRPE bias was baked for this size
        self.conv, self.q, self.k, self.v, self.proj = conv, q, k, v, proj
        self.num_heads, self.eps = num_heads, eps
        self.residual = residual
        self.register_buffer("rpe_bias", bias.float().unsqueeze(0).contiguous())  # (1, H, L, L)

    @classmethod
    def build(cls, dim: int, c1: int, num_heads: int, eps: float, hw: tuple[int, int],
              residual: bool = True) -> "SelfAttnD":
        """Built directly in deploy form (shapes only; load converted weights into it)."""
        c, n = dim - c1, hw[0] * hw[1]
        return cls(nn.Conv2d(c1, c1, 3, 1, 1, bias=False), dim, *(nn.Linear(c, c) for _ in range(4)),
                   torch.zeros(num_heads, n, n), num_heads, eps, hw, residual)

    def forward(self, x):
        x1, x2 = torch.split(x, [self.c1, self.c2], dim=1)
        C, n, H = self.c2, self.h * self.w, self.num_heads
        hd = C // H
        t = x2.flatten(2).transpose(1, 2)  # B, N, C
        tn = F.layer_norm(t, (C,), eps=self.eps)
        q = self.q(tn).reshape(-1, n, H, hd).transpose(1, 2)  # B, H, N, hd
        kt = self.k(tn).reshape(-1, n, H, hd).permute(0, 2, 3, 1)  # B, H, hd, N
        v = self.v(tn).reshape(-1, n, H, hd).transpose(1, 2)
        attn = (torch.matmul(q, kt) + self.rpe_bias).softmax(dim=-1)
        y = self.proj(torch.matmul(attn, v).transpose(1, 2).reshape(-1, n, C))
        if self.residual:
            y = y + t
        return torch.cat((self.conv(x1), y.transpose(1, 2).reshape(-1, C, self.h, self.w)), 1)


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

    @classmethod
    def build(cls, hidden: int, c_u: int, c_v: int) -> "SpatialGateD":
        """Built directly in deploy form (shapes only; load converted weights into it)."""
        return cls(nn.Conv2d(hidden, c_u + c_v + 1, 1), c_u, c_v, torch.zeros(c_u))

    def forward(self, h):
        u, v, a = torch.split(self.proj(h), [self.c_u, self.c_v, 1], dim=1)
        return torch.cat((u * self.act(a) + self.shift_u, v), 1)
