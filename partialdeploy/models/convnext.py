"""The partial ConvNeXt of haiduo/PartialNet (``models/convnext.py``, built by ``models/model_api.py``
for ``model_name: convnext_tiny`` with ``n_div``, ``pconv_fw_type``, ``use_channel_attn`` and
``use_spatial_attn``): timm's ConvNeXt layout (``stem``, ``stages.<i>.downsample``,
``stages.<i>.blocks.<j>``, ``head.norm``, ``head.fc``) whose depthwise conv is a partial conv with
the PAT options (``conv_dw.partial_conv`` 7×7 on dim/n_div channels; SRM channel gate + BN on the
rest in stages 1-3, LayerNorm2d + iRPE self-attention in stage 4), and optionally the PAT_sp MLP
(``mlp_conv1``/``mlp_conv2``/``mlp_spatial``). Without ``use_channel_attn`` it is timm's plain ConvNeXt.
Official state_dicts load with ``strict=True`` and give the same eval logits.

Deploy form: every LayerNorm affine that feeds a linear map without padding folds into it (block
norm -> fc1 / mlp_conv1, downsample norm -> its 2×2 conv, head norm -> fc, PAT_sf norm -> q/k/v);
layer scale ``gamma`` folds into fc2 (or the PAT_sp composition); the SRM gate's BN folds into its
(1×2) conv; iRPE becomes a constant bias; dropout and drop path vanish. What stays: the normalisation
itself (input dependent), the stem LayerNorm's affine (the next op is a padded 7×7 conv, where a
folded bias would be wrong at the borders) and the BN after the SRM gate (it meets a LayerNorm).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from partialdeploy.models.deploy import SpatialGateD
from partialdeploy.models.fold import bn_affine, conv_with
from partialdeploy.models.partialnet import SRM, LayerNorm2d, PATSpatial, RPEAttention
from partialdeploy.spec import ArchSpec

LN_EPS = 1e-6


class LayerNormCL(nn.LayerNorm):
    """timm ``LayerNorm`` (channels last, eps 1e-6)."""

    def __init__(self, c: int, eps: float = LN_EPS):
        super().__init__(c, eps=eps)


# ----------------------------------------------------------------------------------------------
# deploy modules


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


@torch.no_grad()
def _linear(w: torch.Tensor, b: torch.Tensor | None) -> nn.Linear:
    lin = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
    lin.weight.copy_(w.float())
    if b is not None:
        lin.bias.copy_(b.float())
    return lin


@torch.no_grad()
def _copy_conv(conv: nn.Conv2d) -> nn.Conv2d:
    return conv_with(conv.weight.double(), conv.bias.double() if conv.bias is not None else None, like=conv)


# ----------------------------------------------------------------------------------------------
# train form


class PartialConvNeXt(nn.Module):
    """Official ``Partial_conv``: 'se' (SRM gate + BN) or 'self' (LN2d + iRPE attention), keys
    ``partial_conv``, ``attn``, ``norm``."""

    def __init__(self, dim: int, n_div: int, kernel_size: int, channel_type: str, num_heads: int):
        super().__init__()
        self.dim, self.dim_conv3 = dim, dim // n_div
        self.dim_untouched = dim - self.dim_conv3
        self.channel_type = channel_type
        self.partial_conv = nn.Conv2d(self.dim_conv3, self.dim_conv3, kernel_size, 1, (kernel_size - 1) // 2, bias=True)
        if channel_type == "self":
            self.attn = RPEAttention(self.dim_untouched, num_heads)
            self.norm = LayerNorm2d(self.dim_untouched)
        else:
            self.attn = SRM(self.dim_untouched)
            self.norm = nn.BatchNorm2d(self.dim_untouched)
        self.kind = "PAT_sf" if channel_type == "self" else "PAT_ch"

    def forward(self, x):
        x1, x2 = torch.split(x, [self.dim_conv3, self.dim_untouched], dim=1)
        if self.channel_type == "self":
            x2 = self.attn(self.norm(x2))
        else:
            x2 = self.norm(self.attn(x2))
        return torch.cat((self.partial_conv(x1), x2), 1)

    @torch.no_grad()
    def to_deploy(self, hw):
        conv = _copy_conv(self.partial_conv)
        if self.channel_type == "self":
            a, c = self.attn, self.dim_untouched
            w = a.qkv.weight.double()
            b = w @ self.norm.bias.double()
            w = w * self.norm.weight.double().view(1, -1)
            w[:c] *= a.scale
            b[:c] *= a.scale
            q, k, v = (_linear(w[i * c:(i + 1) * c], b[i * c:(i + 1) * c]) for i in range(3))
            proj = _linear(a.proj.weight.double(), a.proj.bias.double())
            return PartialSelfAttnD(conv, self.dim, q, k, v, proj, a.rpe_k.bias(*hw).detach().clone(),
                                    a.num_heads, self.norm.eps, hw)
        s, t = bn_affine(self.norm)
        return PartialGateD(conv, self.dim, self.attn.deploy_gate(), s, t, hw)


class ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, spec: ArchSpec, channel_type: str):
        super().__init__()
        a = spec.arch
        self.gamma = nn.Parameter(torch.ones(dim)) if a.get("layer_scale", True) else None
        k = int(a.get("kernel_size", 7))
        if spec.use_channel_attn:
            self.conv_dw = PartialConvNeXt(dim, spec.n_div, k, channel_type, spec.num_heads)
        else:
            self.conv_dw = nn.Conv2d(dim, dim, k, 1, (k - 1) // 2, groups=dim, bias=True)
        self.norm = LayerNormCL(dim)
        self.use_spatial_attn = spec.use_spatial_attn
        hidden = int(spec.mlp_ratio * dim)
        if spec.use_spatial_attn:
            self.mlp_conv1 = nn.Conv2d(dim, hidden, 1, bias=False)
            self.mlp_act = nn.GELU()
            self.mlp_conv2 = nn.Conv2d(hidden, dim, 1, bias=False)
            self.mlp_spatial = PATSpatial(dim, 1)
        else:
            self.mlp = nn.Module()
            self.mlp.fc1 = nn.Linear(dim, hidden)
            self.mlp.act = nn.GELU()
            self.mlp.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        y = self.conv_dw(x)
        y = self.norm(y.permute(0, 2, 3, 1))
        if self.use_spatial_attn:
            y = self.mlp_spatial(self.mlp_conv2(self.mlp_act(self.mlp_conv1(y.permute(0, 3, 1, 2)))))
        else:
            y = self.mlp.fc2(self.mlp.act(self.mlp.fc1(y))).permute(0, 3, 1, 2)
        if self.gamma is not None:
            y = y * self.gamma.view(1, -1, 1, 1)
        return x + y

    @property
    def kind(self) -> str:
        return self.conv_dw.kind if isinstance(self.conv_dw, PartialConvNeXt) else "DWConv"

    @torch.no_grad()
    def to_deploy(self, hw) -> ConvNeXtBlockD:
        mixing = self.conv_dw.to_deploy(hw) if isinstance(self.conv_dw, PartialConvNeXt) else _copy_conv(self.conv_dw)
        g_ln, b_ln = self.norm.weight.double(), self.norm.bias.double()
        gamma = self.gamma.double() if self.gamma is not None else None
        c = g_ln.numel()
        if self.use_spatial_attn:
            w1 = self.mlp_conv1.weight.double()[:, :, 0, 0]
            fc1 = conv_with((w1 * g_ln.view(1, -1))[:, :, None, None], w1 @ b_ln)
            return ConvNeXtBlockD(mixing, c, self.norm.eps, fc1,
                                  self.mlp_spatial.fuse_after(self.mlp_conv2, self.gamma), True)
        w1, b1 = self.mlp.fc1.weight.double(), self.mlp.fc1.bias.double()
        fc1 = _linear(w1 * g_ln.view(1, -1), b1 + w1 @ b_ln)
        w2, b2 = self.mlp.fc2.weight.double(), self.mlp.fc2.bias.double()
        if gamma is not None:
            w2, b2 = w2 * gamma.view(-1, 1), b2 * gamma
        return ConvNeXtBlockD(mixing, c, self.norm.eps, fc1, _linear(w2, b2), False)


class ConvNeXtStage(nn.Module):
    def __init__(self, in_c: int, out_c: int, depth: int, spec: ArchSpec, channel_type: str):
        super().__init__()
        if in_c != out_c:
            self.downsample = nn.Sequential(LayerNorm2d(in_c), nn.Conv2d(in_c, out_c, 2, 2, bias=True))
        else:
            self.downsample = nn.Identity()
        self.blocks = nn.Sequential(*[ConvNeXtBlock(out_c, spec, channel_type) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(self.downsample(x))


class ConvNeXtHead(nn.Module):
    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.norm = LayerNorm2d(c)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(c, num_classes) if num_classes > 0 else nn.Identity()

    def forward(self, x):
        return self.fc(self.flatten(self.norm(self.global_pool(x))))


class ConvNeXt(nn.Module):
    def __init__(self, spec: ArchSpec):
        super().__init__()
        self.spec = spec
        dims = list(spec.arch["dims"])
        p = spec.patch_size
        self.stem = nn.Sequential(nn.Conv2d(spec.in_chans, dims[0], p, p, bias=True), LayerNorm2d(dims[0]))
        prev = dims[0]
        stages = []
        for i, (d, n) in enumerate(zip(dims, spec.depths)):
            stages.append(ConvNeXtStage(prev, d, n, spec, "se" if i <= 2 else "self"))
            prev = d
        self.stages = nn.Sequential(*stages)
        self.norm_pre = nn.Identity()
        self.head = ConvNeXtHead(prev, spec.num_classes)

    def forward(self, x):
        return self.head(self.stages(self.stem(x)))

    @torch.no_grad()
    def to_deploy(self, img_size) -> nn.Module:
        from partialdeploy.models.partialnet import DeployNet

        h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
        conv, ln = self.stem
        stem = ConvLND(_copy_conv(conv), LN2dD(ln.normalized_shape[0], ln.eps, ln.weight, ln.bias), False)
        h, w = h // self.spec.patch_size, w // self.spec.patch_size
        body: list[nn.Module] = []
        for stage in self.stages:
            if not isinstance(stage.downsample, nn.Identity):
                ln, dconv = stage.downsample
                W, b = dconv.weight.double(), dconv.bias.double()
                b = b + (W * ln.bias.double().view(1, -1, 1, 1)).sum((1, 2, 3))
                W = W * ln.weight.double().view(1, -1, 1, 1)
                body.append(ConvLND(conv_with(W, b, like=dconv), LN2dD(ln.normalized_shape[0], ln.eps), True))
                h, w = (h - 2) // 2 + 1, (w - 2) // 2 + 1
            for blk in stage.blocks:
                body.append(blk.to_deploy((h, w)))
        hn, fc = self.head.norm, self.head.fc
        if isinstance(fc, nn.Linear):
            W = fc.weight.double()
            fc = _linear(W * hn.weight.double().view(1, -1), fc.bias.double() + W @ hn.bias.double())
            head = HeadD(hn.normalized_shape[0], hn.eps, fc)
        else:
            head = HeadD(hn.normalized_shape[0], hn.eps, nn.Identity())
            head.fc = _AffineD(hn.weight, hn.bias)
        return DeployNet(stem, body, head).eval()


class _AffineD(nn.Module):
    def __init__(self, w, b):
        super().__init__()
        self.register_buffer("w", w.detach().clone())
        self.register_buffer("b", b.detach().clone())

    def forward(self, x):
        return x * self.w + self.b


__all__ = ["ConvNeXt", "SpatialGateD"]
