"""PartialNet (PATNet) and FasterNet in their training form, with the official state-dict layout
(haiduo/PartialNet ``models/partialnet.py``, JierunChen/FasterNet ``models/fasternet.py``): official
checkpoints load with ``strict=True`` and give the same eval-mode logits.

Each block owns its deploy conversion: ``block.to_deploy(ctx)`` returns a ``DeployResult`` (the
protocol of :mod:`partialdeploy.models.protocol`) with the deploy-form module (this family's in
:mod:`partialdeploy.models.partialnet_deploy`; the PAT layers, shared with the partial ConvNeXt, in
:mod:`partialdeploy.models.pat` and :mod:`partialdeploy.models.pat_deploy`) and what it folded,
following the real data flow (the official generic ``--fuse_conv_bn`` fuses a BN into the previously
*registered* conv and is wrong here).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from partialdeploy.models.fold import bn_affine, conv_with, fold_conv_bn, fold_input_affine
from partialdeploy.models.partialnet_deploy import BlockD, DeployHead, PartialConvD, make_act
from partialdeploy.models.pat import LN_EPS, SRM, LayerNorm2d, PATSpatial, RPEAttention
from partialdeploy.models.pat_deploy import ChannelGateD, SelfAttnD
from partialdeploy.models.protocol import DeployNet, DeployResult, Fold
from partialdeploy.spec import ArchSpec


# ----------------------------------------------------------------------------------------------
# spatial mixing variants (the block's ``spatial_mixing``)


class PartialConv(nn.Module):
    """PConv (FasterNet, PartialNet without attention): 3×3 conv on the first dim/n_div channels."""

    FOLDS = Fold("PConv", "split/concat form kept (never in-place slicing, which exports as ScatterND)",
                 "the partial 3×3 conv: already minimal")

    def __init__(self, dim: int, n_div: int):
        super().__init__()
        self.dim, self.dim_conv3 = dim, dim // n_div
        self.dim_untouched = dim - self.dim_conv3
        self.partial_conv3 = nn.Conv2d(self.dim_conv3, self.dim_conv3, 3, 1, 1, bias=False)

    def forward(self, x):  # split/concat form: slicing exports as ScatterND (seen upstream in FasterNet)
        x1, x2 = torch.split(x, [self.dim_conv3, self.dim_untouched], dim=1)
        return torch.cat((self.partial_conv3(x1), x2), 1)

    def to_deploy(self, ctx, identity: bool = False) -> DeployResult:
        """``identity``: the block's shortcut x + mixing(x) goes into the conv's centre tap."""
        return DeployResult(PartialConvD(_with_identity(self.partial_conv3, identity), self.dim,
                                         2.0 if identity else 1.0), [self.FOLDS])


class PATChannel(nn.Module):
    """PAT_ch: split; 3×3 conv on the first part; channel gate then BN on the rest; concat."""

    FOLDS = Fold("PAT_ch", "gate (1×2) conv + BN -> one 1×1 conv over [mean; std] (rewrite 3); output BN -> the "
                 "MLP's first 1×1 conv input columns + bias (rewrite 2)",
                 "per-channel mean/std pooling and the hard-sigmoid gate: they depend on the input")

    def __init__(self, dim: int, n_div: int):
        super().__init__()
        self.dim, self.dim_conv3 = dim, dim // n_div
        self.dim_untouched = dim - self.dim_conv3
        self.partial_conv3 = nn.Conv2d(self.dim_conv3, self.dim_conv3, 3, 1, 1, bias=False)
        self.attn = SRM(self.dim_untouched)
        self.norm = nn.BatchNorm2d(self.dim_untouched)

    def forward(self, x):
        x1, x2 = torch.split(x, [self.dim_conv3, self.dim_untouched], dim=1)
        return torch.cat((self.partial_conv3(x1), self.norm(self.attn(x2))), 1)

    def to_deploy(self, ctx, identity: bool = False) -> DeployResult:
        if identity:
            raise ValueError("PAT_ch is never used with the split shortcut")
        s, t = bn_affine(self.norm)  # the output BN is handed to the next 1×1 conv
        ones = torch.ones(self.dim_conv3, dtype=torch.float64)
        zeros = torch.zeros(self.dim_conv3, dtype=torch.float64)
        mixing = ChannelGateD(_with_identity(self.partial_conv3, False), self.dim, self.attn.deploy_gate(),
                              ctx.hw(self))
        return DeployResult(mixing, [self.FOLDS], affine=(torch.cat([ones, s]), torch.cat([zeros, t])))


class PATSelf(nn.Module):
    """PAT_sf: split; 3×3 conv on the first part; LayerNorm2d + multi-head self-attention with an
    iRPE key bias on the rest; concat. The block adds its input back ("split shortcut")."""

    FOLDS = Fold("PAT_sf", "q-scale and LayerNorm affine -> qkv weights + bias; iRPE key bias -> constant (H, L, L) "
                 "for the export size; dropout removed; the split shortcut -> the 3×3 conv's centre tap (rewrite 4)",
                 "LayerNorm normalisation, softmax attention: they depend on the input")

    def __init__(self, dim: int, n_div: int, num_heads: int):
        super().__init__()
        self.dim, self.dim_conv3 = dim, dim // n_div
        self.dim_untouched = dim - self.dim_conv3
        self.partial_conv3 = nn.Conv2d(self.dim_conv3, self.dim_conv3, 3, 1, 1, bias=False)
        self.attn = RPEAttention(self.dim_untouched, num_heads)
        self.norm = LayerNorm2d(self.dim_untouched)

    def forward(self, x):
        x1, x2 = torch.split(x, [self.dim_conv3, self.dim_untouched], dim=1)
        return torch.cat((self.partial_conv3(x1), self.attn(self.norm(x2))), 1)

    @torch.no_grad()
    def to_deploy(self, ctx, identity: bool = False) -> DeployResult:
        if not identity:
            raise ValueError("PAT_sf is always used with the split shortcut")
        mixing = self.attn.deploy_mixing(_with_identity(self.partial_conv3, True), self.dim, self.norm, ctx.hw(self),
                                         residual=True)
        return DeployResult(mixing, [self.FOLDS])


class DPConv(nn.Module):
    """Dynamic partial conv (DGConv2d, ``auto_div``). In eval it convolves only the first
    ``one_channel`` channels (a learned buffer) with the top-left block of its full weight and passes
    the rest through; its deploy form is a static partial conv with that learned split."""

    FOLDS = Fold("DPConv", "dynamic gated conv -> static partial conv with its learned split (rewrite 5)",
                 "the partial 3×3 conv over the learned channels")

    def __init__(self, dim: int, n_div: int):
        super().__init__()
        self.dim = dim
        self.register_buffer("I", torch.eye(2))
        self.register_buffer("one", torch.ones(2, 2))
        self.register_buffer("c_div", torch.tensor(n_div, dtype=torch.int32))
        self.register_buffer("one_channel", torch.tensor(dim // n_div, dtype=torch.int32))
        self.gate = nn.Parameter(torch.full((int(math.log2(dim)),), 1e-8))
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1, bias=False)

    @property
    def split(self) -> int:
        return int(self.one_channel.item())

    def forward(self, x):
        c1 = self.split
        if c1 <= 0:  # a fully closed gate passes everything through
            return x
        x1, x2 = torch.split(x, [c1, self.dim - c1], dim=1)
        x1 = F.conv2d(x1, self.conv.weight[:c1, :c1], self.conv.bias, self.conv.stride, self.conv.padding)
        return torch.cat((x1, x2), 1)

    @torch.no_grad()
    def to_deploy(self, ctx, identity: bool = False) -> DeployResult:
        c1 = self.split
        scale = 2.0 if identity else 1.0
        if c1 <= 0:
            return DeployResult(PartialConvD(None, self.dim, scale), [self.FOLDS])
        conv = conv_with(self.conv.weight[:c1, :c1].double(),
                         self.conv.bias[:c1].double() if self.conv.bias is not None else None,
                         like=self.conv)
        return DeployResult(PartialConvD(_with_identity(conv, identity), self.dim, scale), [self.FOLDS])


@torch.no_grad()
def _with_identity(conv: nn.Conv2d, identity: bool) -> nn.Conv2d:
    """Copy of a 3×3 'same' conv; with ``identity`` the residual x + conv(x) goes into the centre tap."""
    w = conv.weight.double().clone()
    if identity:
        kh, kw = w.shape[2:]
        w[torch.arange(w.shape[0]), torch.arange(w.shape[0]), kh // 2, kw // 2] += 1.0
    return conv_with(w, conv.bias.double() if conv.bias is not None else None, like=conv)


# ----------------------------------------------------------------------------------------------
# block, stages, network


class MLPBlock(nn.Module):
    FOLDS = Fold("MLP", "first 1×1 conv -> BN folded (rewrite 1); drop path removed; layer scale -> last conv",
                 "activation")

    def __init__(self, dim: int, spec: ArchSpec, channel_type: str, split_shortcut: bool):
        super().__init__()
        n_div = spec.n_div
        if spec.auto_div:
            mixing: nn.Module = DPConv(dim, n_div)
        elif spec.use_channel_attn and channel_type == "se":
            mixing = PATChannel(dim, n_div)
        elif spec.use_channel_attn and channel_type == "self":
            mixing = PATSelf(dim, n_div, spec.num_heads)
        else:
            mixing = PartialConv(dim, n_div)
        hidden = int(dim * spec.mlp_ratio)
        layers = [nn.Conv2d(dim, hidden, 1, bias=False), nn.BatchNorm2d(hidden), make_act(spec.act, inplace=True),
                  nn.Conv2d(hidden, dim, 1, bias=False)]
        if spec.use_spatial_attn and spec.family == "partialnet":
            layers.append(PATSpatial(dim, 1))
        # registration order = the official state_dict order (FasterNet registers the MLP first)
        if spec.family == "fasternet":
            self.mlp = nn.Sequential(*layers)
            self.spatial_mixing = mixing
        else:
            self.spatial_mixing = mixing
            self.mlp = nn.Sequential(*layers)
        self.split_shortcut = split_shortcut
        self.channel_type = channel_type
        if spec.layer_scale:
            self.layer_scale = nn.Parameter(torch.ones(dim))
        else:
            self.layer_scale = None
        self.act_name = spec.act

    def forward(self, x):
        if self.split_shortcut:
            x = x + self.spatial_mixing(x)
            y = x
        else:
            y = self.spatial_mixing(x)
        m = self.mlp(y)
        if self.layer_scale is not None:
            m = self.layer_scale.view(1, -1, 1, 1) * m
        return x + m

    @classmethod
    def deploy_form(cls, dim: int, spec: ArchSpec, channel_type: str, split_shortcut: bool, hw: tuple[int, int],
                    split: int | None = None) -> BlockD:
        """This block built directly in deploy form (timm fastvit's ``inference_mode``): the modules
        ``to_deploy`` produces, with their shapes and no weights — load a converted block's state dict
        into it. ``hw``: the block's input size; ``split``: DPConv's learned split (channels convolved)."""
        c1 = dim // spec.n_div
        scale = 2.0 if split_shortcut else 1.0
        if spec.auto_div:
            mixing: nn.Module = PartialConvD.build(dim, c1 if split is None else split, scale)
        elif spec.use_channel_attn and channel_type == "se":
            mixing = ChannelGateD.build(dim, c1, hw)
        elif spec.use_channel_attn and channel_type == "self":
            mixing = SelfAttnD.build(dim, c1, spec.num_heads, LN_EPS, hw)
        else:
            mixing = PartialConvD.build(dim, c1, scale)
        spatial = None
        if spec.use_spatial_attn and spec.family == "partialnet":
            sp = PATSpatial(dim, 1)
            spatial = (sp.dim_untouched, sp.dim_conv)
        return BlockD.build(mixing, dim, int(dim * spec.mlp_ratio), spec.act, split_shortcut, spatial)

    @torch.no_grad()
    def to_deploy(self, ctx) -> DeployResult:
        mix = ctx.convert(self.spatial_mixing, identity=self.split_shortcut)
        fc1, bn1, _, fc2 = self.mlp[:4]
        # affine left by the mixing (PAT_ch output BN) -> fc1 input columns; then fc1 -> BN1
        w, b = fold_input_affine(fc1, *(mix.affine if mix.affine is not None else (None, None)))
        s1, t1 = bn_affine(bn1)
        fc1_d = conv_with(w * s1.view(-1, 1, 1, 1), b * s1 + t1)
        gamma = self.layer_scale.detach() if self.layer_scale is not None else None
        folds = [*mix.folds, self.FOLDS]
        if len(self.mlp) > 4:
            sp = ctx.convert(self.mlp[4], before=fc2, gamma=gamma)
            out, folds = sp.module, folds + sp.folds
        else:
            w2 = fc2.weight.double()
            if gamma is not None:
                w2 = w2 * gamma.double().view(-1, 1, 1, 1)
            out = conv_with(w2, None)
        return DeployResult(BlockD(mix.module, fc1_d, make_act(self.act_name), out, self.split_shortcut), folds)


class BasicStage(nn.Module):
    def __init__(self, dim: int, depth: int, spec: ArchSpec, channel_type: str, split_shortcut: bool):
        super().__init__()
        self.blocks = nn.Sequential(*[MLPBlock(dim, spec, channel_type, split_shortcut) for _ in range(depth)])

    def forward(self, x):
        return self.blocks(x)


class PatchEmbed(nn.Module):
    FOLDS = Fold("PatchEmbed", "stem conv -> BN folded into the conv (rewrite 1)", "nothing")

    def __init__(self, patch_size: int, patch_stride: int, in_chans: int, embed_dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_stride, bias=False)
        self.norm = nn.BatchNorm2d(embed_dim)

    def forward(self, x):
        return self.norm(self.proj(x))

    def to_deploy(self, ctx) -> DeployResult:
        return DeployResult(fold_conv_bn(self.proj, self.norm), [self.FOLDS])


class PatchMerging(nn.Module):
    FOLDS = Fold("PatchMerging", "merging conv -> BN folded into the conv (rewrite 1)", "nothing")

    def __init__(self, patch_size2: int, patch_stride2: int, dim: int):
        super().__init__()
        self.reduction = nn.Conv2d(dim, 2 * dim, kernel_size=patch_size2, stride=patch_stride2, bias=False)
        self.norm = nn.BatchNorm2d(2 * dim)

    def forward(self, x):
        return self.norm(self.reduction(x))

    def to_deploy(self, ctx) -> DeployResult:
        return DeployResult(fold_conv_bn(self.reduction, self.norm), [self.FOLDS])


class PartialNet(nn.Module):
    """PartialNet / PATNet, or FasterNet when ``spec.family == "fasternet"`` (same skeleton, no
    attention, plain shortcut in every stage)."""

    HEAD = Fold("Head", "nothing to fold", "pooling, 1×1 conv, activation, classifier")

    def __init__(self, spec: ArchSpec):
        super().__init__()
        self.spec = spec
        E = spec.embed_dim
        self.patch_embed = PatchEmbed(spec.patch_size, spec.patch_stride, spec.in_chans, E)
        stages = []
        n = len(spec.depths)
        for i, depth in enumerate(spec.depths):
            dim = E * 2 ** i
            last = i == n - 1
            split = spec.family == "partialnet" and last
            stages.append(BasicStage(dim, depth, spec, "self" if last else "se", split))
            if not last:
                stages.append(PatchMerging(spec.patch_size2, spec.patch_stride2, dim))
        self.stages = nn.Sequential(*stages)
        self.num_features = E * 2 ** (n - 1)
        self.avgpool_pre_head = nn.Sequential(nn.AdaptiveAvgPool2d(1),
                                              nn.Conv2d(self.num_features, spec.feature_dim, 1, bias=False),
                                              make_act(spec.act, inplace=True))
        self.head = nn.Linear(spec.feature_dim, spec.num_classes) if spec.num_classes > 0 else nn.Identity()
        self.apply(_init_weights)
        for m in self.modules():
            if isinstance(m, DPConv):
                with torch.no_grad():
                    m.gate.fill_(1e-8)

    def forward(self, x):
        x = self.stages(self.patch_embed(x))
        return self.head(torch.flatten(self.avgpool_pre_head(x), 1))

    @torch.no_grad()
    def to_deploy(self, ctx) -> DeployResult:
        """A flat chain: stem, every block and merging layer in order (``body.N``), head."""
        parts = [ctx.convert(self.patch_embed)]
        for stage in self.stages:
            parts += [ctx.convert(b) for b in stage.blocks] if hasattr(stage, "blocks") else [ctx.convert(stage)]
        head = DeployHead(copy.deepcopy(self.avgpool_pre_head[1]), make_act(self.spec.act), copy.deepcopy(self.head))
        net = DeployNet(parts[0].module, [p.module for p in parts[1:]], head).eval()
        return DeployResult(net, [*(f for p in parts for f in p.folds), self.HEAD])


def _init_weights(m):
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
