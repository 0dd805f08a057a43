"""ECA-Net (efficient channel attention) in its training form, with the official state-dict layout of
BangguWu/ECANet (``models/eca_resnet.py``, ``models/eca_mobilenetv2.py``, ``models/eca_module.py``):
ECA-ResNet-18/34/50/101/152 and ECA-MobileNetV2. Official checkpoints load with ``strict=True`` and
give the same eval-mode logits. Each block owns its deploy conversion (``to_deploy``, the protocol of
:mod:`partialdeploy.models.protocol`) and says what it folds; the deploy-form modules live in
:mod:`partialdeploy.models.eca_deploy`.

ECA: global average pool -> 1-D conv across channels (kernel k, zero padding, no bias) -> sigmoid
-> scale. Its deploy form (:class:`ECAGateD`) is chosen per kernel size, see there.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from partialdeploy.models.eca_deploy import ConvActD, ECAGateD, InvertedResidualD, PoolFcHeadD, ResBlockD, ResStemD
from partialdeploy.models.fold import fold_conv_bn
from partialdeploy.models.protocol import DeployNet, DeployResult, Fold
from partialdeploy.spec import ArchSpec

# ----------------------------------------------------------------------------------------------
# ECA


class ECALayer(nn.Module):
    """Official ``eca_layer``: keys ``conv.weight`` (1, 1, k)."""

    FOLDS = Fold("ECA", "1-D conv across channels kept as one Conv on the pooled vector reshaped to (B, 1, C): "
                 "no Transpose pair (k = 1: a scalar Mul)",
                 "global average pool, sigmoid, scale: they depend on the input")

    def __init__(self, k_size: int = 3):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2, bias=False)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x):
        y = self.avg_pool(x)
        y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
        return x * self.sigmoid(y)

    @torch.no_grad()
    def to_deploy(self, ctx) -> DeployResult:
        return DeployResult(ECAGateD(self.conv.weight.detach().clone()), [self.FOLDS])


# ----------------------------------------------------------------------------------------------
# ECA-ResNet


def _conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    return fold_conv_bn(conv, bn)


def _downsample(inplanes, outplanes, stride):
    if stride != 1 or inplanes != outplanes:
        return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False), nn.BatchNorm2d(outplanes))
    return None


class ECABasicBlock(nn.Module):
    expansion = 1
    FOLDS = Fold("ECABasicBlock", "both 3×3 conv -> BN folded; downsample 1×1 conv -> BN folded",
                 "ReLUs, residual add, the ECA gate")

    def __init__(self, inplanes, planes, stride=1, k_size=3):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.eca = ECALayer(k_size)
        self.downsample = _downsample(inplanes, planes, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.eca(self.bn2(self.conv2(out)))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))

    @torch.no_grad()
    def to_deploy(self, ctx) -> DeployResult:
        ds = _conv_bn(*self.downsample) if self.downsample is not None else None
        eca = ctx.convert(self.eca)
        return DeployResult(ResBlockD([_conv_bn(self.conv1, self.bn1), _conv_bn(self.conv2, self.bn2)], eca.module, ds),
                            [self.FOLDS, *eca.folds])


class ECABottleneck(nn.Module):
    expansion = 4
    FOLDS = Fold("ECABottleneck", "1×1, 3×3, 1×1 conv -> BN folded; downsample 1×1 conv -> BN folded",
                 "ReLUs, residual add, the ECA gate")

    def __init__(self, inplanes, planes, stride=1, k_size=3):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.eca = ECALayer(k_size)
        self.downsample = _downsample(inplanes, planes * 4, stride)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.eca(self.bn3(self.conv3(out)))
        return self.relu(out + (self.downsample(x) if self.downsample is not None else x))

    @torch.no_grad()
    def to_deploy(self, ctx) -> DeployResult:
        ds = _conv_bn(*self.downsample) if self.downsample is not None else None
        eca = ctx.convert(self.eca)
        return DeployResult(ResBlockD([_conv_bn(self.conv1, self.bn1), _conv_bn(self.conv2, self.bn2),
                                       _conv_bn(self.conv3, self.bn3)], eca.module, ds), [self.FOLDS, *eca.folds])


class ECAResNet(nn.Module):
    """Official ``ResNet`` of eca_resnet.py (stem 7×7/2 + max pool, layer1..4, avg pool, fc)."""

    STEM = Fold("ResNetStem", "7×7 conv -> BN folded into the conv (rewrite 1)", "ReLU, 3×3 max pool")
    HEAD = Fold("Head", "dropout removed (1×1 conv -> BN folded for MobileNetV2)", "global average pool, classifier")

    def __init__(self, spec: ArchSpec):
        super().__init__()
        self.spec = spec
        block = ECABottleneck if spec.arch.get("block") == "bottleneck" else ECABasicBlock
        ks = list(spec.arch.get("k_sizes") or [3] * len(spec.depths))
        self.inplanes = spec.embed_dim
        self.conv1 = nn.Conv2d(spec.in_chans, self.inplanes, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, n in enumerate(spec.depths):
            planes = spec.embed_dim * 2 ** i
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(n):
                blocks.append(block(self.inplanes, planes, stride if j == 0 else 1, int(ks[i])))
                self.inplanes = planes * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(self.inplanes, spec.num_classes)

    def layers(self):
        return [getattr(self, f"layer{i + 1}") for i in range(len(self.spec.depths))]

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for layer in self.layers():
            x = layer(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))

    @torch.no_grad()
    def to_deploy(self, ctx) -> DeployResult:
        body = [ctx.convert(blk) for layer in self.layers() for blk in layer]
        fc = nn.Linear(self.fc.in_features, self.fc.out_features)
        fc.load_state_dict(self.fc.state_dict())
        net = DeployNet(ResStemD(_conv_bn(self.conv1, self.bn1)), [b.module for b in body], PoolFcHeadD(fc)).eval()
        return DeployResult(net, [self.STEM, *(f for b in body for f in b.folds), self.HEAD])


# ----------------------------------------------------------------------------------------------
# ECA-MobileNetV2



class ConvBNReLU(nn.Sequential):
    def __init__(self, inp, oup, kernel_size=3, stride=1, groups=1):
        super().__init__(nn.Conv2d(inp, oup, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))

    @torch.no_grad()
    def to_deploy(self, ctx) -> DeployResult:  # its folds are told by the block or stem/head it belongs to
        return DeployResult(ConvActD(_conv_bn(self[0], self[1])))


class InvertedResidual(nn.Module):
    FOLDS = Fold("InvertedResidual", "expand 1×1, depthwise 3×3 and project 1×1 conv -> BN folded",
                 "ReLU6, residual add, the ECA gate")

    def __init__(self, inp, oup, hidden, stride, k_size):
        super().__init__()
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if hidden != inp:  # expand_ratio != 1
            layers.append(ConvBNReLU(inp, hidden, kernel_size=1))
        layers += [ConvBNReLU(hidden, hidden, stride=stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False),
                   nn.BatchNorm2d(oup), ECALayer(k_size)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res_connect else self.conv(x)

    @torch.no_grad()
    def to_deploy(self, ctx) -> DeployResult:
        *cbr, pw, bn, eca = list(self.conv)
        convs = [ctx.convert(m).module for m in cbr] + [_conv_bn(pw, bn)]
        gate = ctx.convert(eca)
        return DeployResult(InvertedResidualD(convs, gate.module, self.use_res_connect), [self.FOLDS, *gate.folds])


def mbv2_blocks(stem: int, outs: list[int], hiddens: list[int], k_sizes: list[int], strides: list[int]) -> list[tuple]:
    """(inp, oup, hidden, stride, k) per block; ``strides``: one per block (the official setting's,
    which the family knows: they are not in the weights)."""
    blocks, inp = [], stem
    for i, (o, h, k) in enumerate(zip(outs, hiddens, k_sizes)):
        blocks.append((inp, o, h, strides[i], k))
        inp = o
    return blocks


class ECAMobileNetV2(nn.Module):
    """Official ``ECA_MobileNetV2`` (features[0] stem, 17 inverted residuals with ECA, 1×1 conv to
    last_channel, mean pool, dropout + linear)."""

    STEM = Fold("MBV2Stem", "3×3 conv -> BN folded (rewrite 1)", "ReLU6 (Clip)")
    HEAD = ECAResNet.HEAD

    def __init__(self, spec: ArchSpec, strides: list[int]):
        super().__init__()
        self.spec = spec
        a = spec.arch
        feats: list[nn.Module] = [ConvBNReLU(spec.in_chans, a["stem"], stride=2)]
        for inp, oup, hidden, stride, k in mbv2_blocks(a["stem"], a["outs"], a["hiddens"], a["k_sizes"], strides):
            feats.append(InvertedResidual(inp, oup, hidden, stride, k))
        feats.append(ConvBNReLU(a["outs"][-1], a["last_channel"], kernel_size=1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.25), nn.Linear(a["last_channel"], spec.num_classes))

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.mean(-1).mean(-1))

    @torch.no_grad()
    def to_deploy(self, ctx) -> DeployResult:
        feats = list(self.features)
        fc = nn.Linear(self.classifier[1].in_features, self.classifier[1].out_features)
        fc.load_state_dict(self.classifier[1].state_dict())
        head = PoolFcHeadD(fc, ctx.convert(feats[-1]).module.conv, "RELU6")
        stem = ctx.convert(feats[0]).module
        body = [ctx.convert(b) for b in feats[1:-1]]
        net = DeployNet(stem, [b.module for b in body], head).eval()
        return DeployResult(net, [self.STEM, *(f for b in body for f in b.folds), self.HEAD])
