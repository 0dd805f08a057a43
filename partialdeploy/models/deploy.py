"""Deploy-form modules of every family, in one place: what the train-form blocks' ``to_deploy``
(:mod:`partialdeploy.models.protocol`) turn into (no BatchNorm, no dropout, no data-dependent
control flow, constants baked). Each is exact up to float rounding and exports to plain ONNX (Conv,
MatMul/Gemm, Split, Concat, HardSigmoid, LayerNormalization, Softmax, ...). A deploy-form module has
no ``to_deploy``: the walker leaves it as it is, so converting a deploy form again changes nothing."""

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


# ----------------------------------------------------------------------------------------------
# PartialNet / PATNet / FasterNet


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

    @classmethod
    def build(cls, dim: int, c1: int, num_heads: int, eps: float, hw: tuple[int, int]) -> "SelfAttnD":
        """Built directly in deploy form (shapes only; load converted weights into it)."""
        c, n = dim - c1, hw[0] * hw[1]
        return cls(nn.Conv2d(c1, c1, 3, 1, 1, bias=False), dim, nn.Linear(c, 3 * c), nn.Linear(c, c),
                   torch.zeros(num_heads, n, n), num_heads, eps, hw)

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

    @classmethod
    def build(cls, hidden: int, c_u: int, c_v: int) -> "SpatialGateD":
        """Built directly in deploy form (shapes only; load converted weights into it)."""
        return cls(nn.Conv2d(hidden, c_u + c_v + 1, 1), c_u, c_v, torch.zeros(c_u))

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


# ----------------------------------------------------------------------------------------------
# whole networks (every family)


class DeployNet(nn.Module):
    """The deploy form of a whole network: a flat chain of folded modules."""

    def __init__(self, stem: nn.Module, body: list[nn.Module], head: nn.Module):
        super().__init__()
        self.stem = stem
        self.body = nn.Sequential(*body)
        self.head = head

    def forward(self, x):
        return self.head(self.body(self.stem(x)))

class DeployHead(nn.Module):
    def __init__(self, conv: nn.Conv2d, act: nn.Module, fc: nn.Module):
        super().__init__()
        self.conv, self.act, self.fc = conv, act, fc

    def forward(self, x):
        x = x.mean((2, 3), keepdim=True)
        return self.fc(torch.flatten(self.act(self.conv(x)), 1))


# ----------------------------------------------------------------------------------------------
# ECA-ResNet / ECA-MobileNetV2


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


# ----------------------------------------------------------------------------------------------
# partial ConvNeXt


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

class PartialGateD(nn.Module):
    """'se' partial conv deploy form: conv(x1) ‖ BN(x2 · hardsigmoid(G [mean; std])) with the gate's BN
    folded into G and the output BN applied as x2·(g·s) + t (s folded into the small gate vector)."""

    def __init__(self, conv: nn.Conv2d, dim: int, gate: nn.Conv2d, s: torch.Tensor, t: torch.Tensor,
                 hw: tuple[int, int]):
        super().__init__()
        self.c1, self.dim = conv.in_channels, dim
        self.n = hw[0] * hw[1]
        self.conv, self.gate = conv, gate
        self.register_buffer("s", s.float().view(1, -1, 1, 1))
        self.register_buffer("t", t.float().view(1, -1, 1, 1))

    def forward(self, x):
        x1, x2 = torch.split(x, [self.c1, self.dim - self.c1], dim=1)
        mean = x2.mean((2, 3), keepdim=True)
        d = x2 - mean
        std = torch.sqrt((d * d).sum((2, 3), keepdim=True) * (1.0 / (self.n - 1)))
        g = F.hardsigmoid(self.gate(torch.cat((mean, std), 1))) * self.s
        return torch.cat((self.conv(x1), x2 * g + self.t), 1)

class PartialSelfAttnD(nn.Module):
    """'self' partial conv deploy form: conv(x1) ‖ proj(softmax(q kᵀ + B) v) on LN(x2), with the LN
    affine and the q-scale in separate q/k/v projections and the iRPE key bias B constant."""

    def __init__(self, conv: nn.Conv2d, dim: int, q: nn.Linear, k: nn.Linear, v: nn.Linear, proj: nn.Linear,
                 bias: torch.Tensor, heads: int, eps: float, hw: tuple[int, int]):
        super().__init__()
        self.c1, self.dim = conv.in_channels, dim
        self.c2 = dim - self.c1
        self.h, self.w = hw
        self.conv, self.q, self.k, self.v, self.proj = conv, q, k, v, proj
        self.heads, self.eps = heads, eps
        self.register_buffer("rpe_bias", bias.float().unsqueeze(0).contiguous())

    def forward(self, x):
        x1, x2 = torch.split(x, [self.c1, self.c2], dim=1)
        C, n, H = self.c2, self.h * self.w, self.heads
        hd = C // H
        t = F.layer_norm(x2.flatten(2).transpose(1, 2), (C,), eps=self.eps)
        q = self.q(t).reshape(-1, n, H, hd).transpose(1, 2)
        kt = self.k(t).reshape(-1, n, H, hd).permute(0, 2, 3, 1)
        v = self.v(t).reshape(-1, n, H, hd).transpose(1, 2)
        a = (torch.matmul(q, kt) + self.rpe_bias).softmax(dim=-1)
        y = self.proj(torch.matmul(a, v).transpose(1, 2).reshape(-1, n, C))
        return torch.cat((self.conv(x1), y.transpose(1, 2).reshape(-1, C, self.h, self.w)), 1)

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
