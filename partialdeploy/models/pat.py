"""The PAT layers shared by PartialNet (``models/partialnet.py``) and the partial ConvNeXt
(``models/convnext.py``), in their training form with the official state-dict layout
(haiduo/PartialNet ``models/partialnet.py``, ``models/irpe.py``): the SRM channel gate of PAT_ch,
LayerNorm2d and the iRPE self-attention of PAT_sf, PAT_sp. Their conversions build the deploy-form
modules of :mod:`partialdeploy.models.pat_deploy`, one for both families.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from partialdeploy.models.fold import bn_affine, conv_with, linear_with
from partialdeploy.models.pat_deploy import SelfAttnD, SpatialGateD
from partialdeploy.models.protocol import DeployResult, Fold

# iRPE as configured by the official PAT_sf: euclidean method, bias mode on keys, ratio 20
IRPE_RATIO = 20
LN_EPS = 1e-6  # timm LayerNorm2d


class SRM(nn.Module):
    """Channel gate of PAT_ch: per-channel mean and std -> (1×2) conv -> BN -> hard-sigmoid."""

    def __init__(self, channel: int):
        super().__init__()
        self.cfc1 = nn.Conv2d(channel, channel, kernel_size=(1, 2), bias=False)
        self.bn = nn.BatchNorm2d(channel)
        self.sigmoid = nn.Hardsigmoid()

    def forward(self, x):
        b, c = x.shape[:2]
        flat = x.reshape(b, c, -1)
        u = torch.cat([flat.mean(-1).view(b, c, 1, 1), flat.std(-1).view(b, c, 1, 1)], dim=-1)
        g = self.sigmoid(self.bn(self.cfc1(u)))
        return x * g.reshape(b, c, 1, 1)

    @torch.no_grad()
    def deploy_gate(self) -> nn.Conv2d:
        """(1×2) conv + BN (rewrite 3) as one 1×1 conv over [mean; std] stacked on channels."""
        s, t = bn_affine(self.bn)
        w = self.cfc1.weight.double()[:, :, 0, :] * s.view(-1, 1, 1)  # c, c, 2
        return conv_with(torch.cat([w[:, :, 0], w[:, :, 1]], 1)[:, :, None, None], t)


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (timm ``LayerNorm2d`` semantics, eps 1e-6)."""

    def __init__(self, num_channels: int, eps: float = LN_EPS):
        super().__init__(num_channels, eps=eps)

    def forward(self, x):
        return F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias,
                            self.eps).permute(0, 3, 1, 2)


def irpe_bucket_ids(height: int, width: int, ratio: float = IRPE_RATIO) -> torch.Tensor:
    """iRPE bucket ids (L, L) for the Euclidean method, the piecewise index of the iRPE paper
    (alpha=ratio, beta=2·ratio, gamma=8·ratio), computed in float32 like the reference."""
    alpha, beta, gamma = 1.0 * ratio, 2.0 * ratio, 8.0 * ratio
    rows = torch.arange(height).view(height, 1).repeat(1, width)
    cols = torch.arange(width).view(1, width).repeat(height, 1)
    pos = torch.stack([rows, cols], 2).view(-1, 2)
    diff = pos.view(-1, 1, 2) - pos.view(1, -1, 2)
    dis = diff.square().sum(2).float().sqrt().round()
    far = dis.abs() > alpha
    idx = dis.round().long()
    if far.any():
        d = dis[far]
        y = torch.sign(d) * (alpha + torch.log(d.abs() / alpha) / math.log(gamma / alpha) * (beta - alpha)
                             ).round().clip(max=beta)
        idx[far] = y.long()
    return idx + int(beta)


class RPEKeyBias(nn.Module):
    """iRPE on keys, bias mode: a learned (heads, buckets) table gathered into an (H, L, L) bias."""

    def __init__(self, num_heads: int, ratio: float = IRPE_RATIO):
        super().__init__()
        self.ratio = ratio
        self.num_buckets = 2 * int(2 * ratio) + 1
        self.lookup_table_bias = nn.Parameter(torch.zeros(num_heads, self.num_buckets))
        self._ids: dict = {}  # per-instance cache keyed by feature size (never class-level)

    def bias(self, h: int, w: int) -> torch.Tensor:
        if (h, w) not in self._ids:
            self._ids[(h, w)] = irpe_bucket_ids(h, w, self.ratio).to(self.lookup_table_bias.device)
        ids = self._ids[(h, w)]
        return self.lookup_table_bias[:, ids.flatten()].view(-1, h * w, h * w)


class RPEAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.attn_drop = nn.Dropout(0.1)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(0.1)
        self.rpe_k = RPEKeyBias(num_heads)

    def forward(self, x):
        B, C, h, w = x.shape
        t = x.reshape(B, C, h * w).transpose(1, 2)
        qkv = self.qkv(t).reshape(B, h * w, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1) + self.rpe_k.bias(h, w).unsqueeze(0)
        attn = self.attn_drop(attn.softmax(dim=-1))
        y = self.proj_drop(self.proj((attn @ v).transpose(1, 2).reshape(B, h * w, C)))
        return y.transpose(1, 2).reshape(B, C, h, w)

    @torch.no_grad()
    def deploy_mixing(self, conv: nn.Conv2d, dim: int, norm: nn.LayerNorm, hw: tuple[int, int],
                      residual: bool) -> SelfAttnD:
        """PAT_sf's deploy form around this attention, fed by LayerNorm ``norm``, beside the partial
        ``conv`` (already in deploy form): the LayerNorm affine and the q-scale fold into separate
        q/k/v projections (rewrite 4: W(γ∘x̂ + β) = (W diag γ) x̂ + W β), the iRPE key bias becomes a
        constant for ``hw``; ``residual``: the block's split shortcut adds the attention's input."""
        c = self.qkv.in_features
        w = self.qkv.weight.double()  # 3c, c
        b = w @ norm.bias.double()
        w = w * norm.weight.double().view(1, -1)
        w[:c] *= self.scale
        b[:c] *= self.scale
        q, k, v = (linear_with(w[i * c:(i + 1) * c], b[i * c:(i + 1) * c]) for i in range(3))
        proj = linear_with(self.proj.weight.double(), self.proj.bias.double())
        return SelfAttnD(conv, dim, q, k, v, proj, self.rpe_k.bias(*hw).detach().clone(), self.num_heads, norm.eps,
                         hw, residual)


def attention_flops(m, inp, out) -> tuple[str, int]:
    """FLOP rule of the PAT_sf attention in either form (``RPEAttention``, ``SelfAttnD``), what the
    Conv/Linear hooks miss: q·kᵀ and attn·v over all heads, 2·N²·C multiply-accumulates."""
    x = inp[0]
    n = x.shape[2] * x.shape[3]
    c = m.c2 if isinstance(m, SelfAttnD) else x.shape[1]
    return "attention", 2 * n * n * c


FLOP_RULES = {RPEAttention: attention_flops, SelfAttnD: attention_flops}  # for Family.flop_rules


class PATSpatial(nn.Module):
    """PAT_sp (official ``partial_spatial_attn_layer_reverse``): split [untouched | conv]; the
    untouched part is gated by hard-sigmoid(1×1 conv -> 1 map) then BN; the other goes BN -> 1×1
    conv; concat."""

    FOLDS = Fold("PAT_sp", "the 1×1 conv before it (the MLP's last), BN -> 1×1 conv, gate conv, gated BN and layer "
                 "scale composed into one 1×1 conv + shift (rewrites 2, 1×1∘1×1)",
                 "the hard-sigmoid spatial gate multiply: it depends on the input")

    def __init__(self, dim: int, n_head: int = 1, partial: float = 0.5):
        super().__init__()
        self.dim_conv = int(partial * dim)
        self.dim_untouched = dim - self.dim_conv
        self.conv = nn.Conv2d(self.dim_conv, self.dim_conv, 1, bias=False)
        self.conv_attn = nn.Conv2d(self.dim_untouched, n_head, 1, bias=False)
        self.norm = nn.BatchNorm2d(self.dim_untouched)
        self.norm2 = nn.BatchNorm2d(self.dim_conv)
        self.act = nn.Hardsigmoid()

    def forward(self, x):
        x1, x2 = torch.split(x, [self.dim_untouched, self.dim_conv], 1)
        x1 = self.norm(x1 * self.act(self.conv_attn(x1)))
        return torch.cat((x1, self.conv(self.norm2(x2))), 1)

    @torch.no_grad()
    def to_deploy(self, ctx, before: nn.Conv2d | None = None, gamma: torch.Tensor | None = None) -> DeployResult:
        """Compose the 1×1 conv ``before`` this layer (the MLP's last, hidden -> dim; none: identity)
        and a layer scale ``gamma`` on the output with this layer: rewrite 2 (BN before 1×1 conv) and
        "two consecutive 1×1 convs compose into one"."""
        if before is None:
            W = torch.eye(self.dim_untouched + self.dim_conv, dtype=torch.float64)
        else:
            W = before.weight.double()[:, :, 0, 0]  # dim, hidden
        cu = self.dim_untouched
        Wu, Wv = W[:cu], W[cu:]
        s_u, t_u = bn_affine(self.norm)
        s_v, t_v = bn_affine(self.norm2)
        Wc = self.conv.weight.double()[:, :, 0, 0]
        rows_u = s_u.view(-1, 1) * Wu
        rows_v = Wc @ (s_v.view(-1, 1) * Wv)
        bias_v = Wc @ t_v
        rows_a = self.conv_attn.weight.double()[:, :, 0, 0] @ Wu
        if gamma is not None:  # layer scale on the block output
            g = gamma.double()
            rows_u, t_u = rows_u * g[:cu].view(-1, 1), t_u * g[:cu]
            rows_v, bias_v = rows_v * g[cu:].view(-1, 1), bias_v * g[cu:]
        w = torch.cat([rows_u, rows_v, rows_a], 0)[:, :, None, None]
        b = torch.cat([torch.zeros(cu, dtype=torch.float64), bias_v, torch.zeros(1, dtype=torch.float64)])
        return DeployResult(SpatialGateD(conv_with(w, b), cu, self.dim_conv, t_u), [self.FOLDS])
