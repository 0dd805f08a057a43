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
Each block converts itself (``to_deploy``, :mod:`partialdeploy.models.protocol`) and says what it
folds; its deploy-form modules live in :mod:`partialdeploy.models.convnext_deploy`, those of its PAT
layers (shared with PartialNet) in :mod:`partialdeploy.models.pat_deploy`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from partialdeploy.models.convnext_deploy import AffineD, ConvLND, ConvNeXtBlockD, HeadD, LN2dD
from partialdeploy.models.fold import bn_affine, conv_with, copy_conv, linear_with
from partialdeploy.models.pat import LN_EPS, SRM, LayerNorm2d, PATSpatial, RPEAttention
from partialdeploy.models.pat_deploy import ChannelGateD
from partialdeploy.models.protocol import DeployNet, DeployResult, Fold
from partialdeploy.spec import ArchSpec


class LayerNormCL(nn.LayerNorm):
    """timm ``LayerNorm`` (channels last, eps 1e-6)."""

    def __init__(self, c: int, eps: float = LN_EPS):
        super().__init__(c, eps=eps)


# ----------------------------------------------------------------------------------------------
# train form


class PartialConvNeXt(nn.Module):
    """Official ``Partial_conv``: 'se' (SRM gate + BN) or 'self' (LN2d + iRPE attention), keys
    ``partial_conv``, ``attn``, ``norm``."""

    FOLDS_SE = Fold("PAT_ch", "SRM gate (1×2) conv + BN -> one 1×1 conv over [mean; std]; the output BN's scale -> "
                    "the gate vector", "mean/std pooling, hard-sigmoid gate, the BN shift (it meets a LayerNorm)")
    FOLDS_SELF = Fold("PAT_sf", "LayerNorm affine and q-scale -> separate q/k/v projections; iRPE -> constant "
                      "(H, L, L) bias; dropout removed", "LayerNorm normalisation, softmax attention")

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

    def forward(self, x):
        x1, x2 = torch.split(x, [self.dim_conv3, self.dim_untouched], dim=1)
        if self.channel_type == "self":
            x2 = self.attn(self.norm(x2))
        else:
            x2 = self.norm(self.attn(x2))
        return torch.cat((self.partial_conv(x1), x2), 1)

    @torch.no_grad()
    def to_deploy(self, ctx) -> DeployResult:
        hw = ctx.hw(self)
        conv = copy_conv(self.partial_conv)
        if self.channel_type == "self":
            mixing = self.attn.deploy_mixing(conv, self.dim, self.norm, hw, residual=False)
            return DeployResult(mixing, [self.FOLDS_SELF])
        s, t = bn_affine(self.norm)
        return DeployResult(ChannelGateD(conv, self.dim, self.attn.deploy_gate(), hw, out_affine=(s, t)),
                            [self.FOLDS_SE])


class ConvNeXtBlock(nn.Module):
    FOLDS = Fold("MLP", "block LayerNorm affine -> fc1; layer scale gamma -> fc2 (or the PAT_sp composition); drop "
                 "path removed", "LayerNorm normalisation, GELU")
    FOLDS_DW = Fold("DWConv", "nothing", "the depthwise 7×7 conv")

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

    @torch.no_grad()
    def to_deploy(self, ctx) -> DeployResult:
        if isinstance(self.conv_dw, PartialConvNeXt):
            mixing = ctx.convert(self.conv_dw)
        else:
            mixing = DeployResult(copy_conv(self.conv_dw), [self.FOLDS_DW])
        folds = [*mixing.folds, self.FOLDS]
        g_ln, b_ln = self.norm.weight.double(), self.norm.bias.double()
        gamma = self.gamma.double() if self.gamma is not None else None
        c = g_ln.numel()
        if self.use_spatial_attn:
            w1 = self.mlp_conv1.weight.double()[:, :, 0, 0]
            fc1 = conv_with((w1 * g_ln.view(1, -1))[:, :, None, None], w1 @ b_ln)
            out = ctx.convert(self.mlp_spatial, before=self.mlp_conv2, gamma=self.gamma)
            return DeployResult(ConvNeXtBlockD(mixing.module, c, self.norm.eps, fc1, out.module, True),
                                folds + out.folds)
        w1, b1 = self.mlp.fc1.weight.double(), self.mlp.fc1.bias.double()
        fc1 = linear_with(w1 * g_ln.view(1, -1), b1 + w1 @ b_ln)
        w2, b2 = self.mlp.fc2.weight.double(), self.mlp.fc2.bias.double()
        if gamma is not None:
            w2, b2 = w2 * gamma.view(-1, 1), b2 * gamma
        return DeployResult(ConvNeXtBlockD(mixing.module, c, self.norm.eps, fc1, linear_with(w2, b2), False), folds)


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
    STEM = Fold("Stem", "nothing (its LayerNorm affine stays: the next op is a padded 7×7 conv)", "conv, LayerNorm")
    DOWNSAMPLE = Fold("Downsample", "LayerNorm affine -> the 2×2 stride-2 conv (no padding: exact)",
                      "LayerNorm normalisation")
    HEAD = Fold("Head", "head LayerNorm affine -> the classifier", "pooling, LayerNorm normalisation")

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
    def to_deploy(self, ctx) -> DeployResult:
        conv, ln = self.stem
        stem = ConvLND(copy_conv(conv), LN2dD(ln.normalized_shape[0], ln.eps, ln.weight, ln.bias), False)
        body: list[nn.Module] = []
        folds = [self.STEM]
        for stage in self.stages:
            if not isinstance(stage.downsample, nn.Identity):
                ln, dconv = stage.downsample
                W, b = dconv.weight.double(), dconv.bias.double()
                b = b + (W * ln.bias.double().view(1, -1, 1, 1)).sum((1, 2, 3))
                W = W * ln.weight.double().view(1, -1, 1, 1)
                body.append(ConvLND(conv_with(W, b, like=dconv), LN2dD(ln.normalized_shape[0], ln.eps), True))
                folds.append(self.DOWNSAMPLE)
            for blk in stage.blocks:
                r = ctx.convert(blk)
                body.append(r.module)
                folds += r.folds
        hn, fc = self.head.norm, self.head.fc
        if isinstance(fc, nn.Linear):
            W = fc.weight.double()
            fc = linear_with(W * hn.weight.double().view(1, -1), fc.bias.double() + W @ hn.bias.double())
            head = HeadD(hn.normalized_shape[0], hn.eps, fc)
        else:
            head = HeadD(hn.normalized_shape[0], hn.eps, nn.Identity())
            head.fc = AffineD(hn.weight, hn.bias)
        return DeployResult(DeployNet(stem, body, head).eval(), [*folds, self.HEAD])
