"""ECA-Net (efficient channel attention) in its training form, with the official state-dict layout of
BangguWu/ECANet (``models/eca_resnet.py``, ``models/eca_mobilenetv2.py``, ``models/eca_module.py``):
ECA-ResNet-18/34/50/101/152 and ECA-MobileNetV2. Official checkpoints load with ``strict=True`` and
give the same eval-mode logits. Each block owns its deploy conversion (``to_deploy``).

ECA: global average pool -> 1-D conv across channels (kernel k, zero padding, no bias) -> sigmoid
-> scale. Its deploy form (:class:`ECAGateD`) is chosen per kernel size, see there.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from partialdeploy.models.fold import fold_conv_bn
from partialdeploy.spec import ArchSpec

# ----------------------------------------------------------------------------------------------
# ECA and its deploy form


class ECALayer(nn.Module):
    """Official ``eca_layer``: keys ``conv.weight`` (1, 1, k)."""

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
    def to_deploy(self) -> "ECAGateD":
        return ECAGateD(self.conv.weight.detach().clone())


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


# ----------------------------------------------------------------------------------------------
# ECA-ResNet


def _conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    return fold_conv_bn(conv, bn)


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


def _downsample(inplanes, outplanes, stride):
    if stride != 1 or inplanes != outplanes:
        return nn.Sequential(nn.Conv2d(inplanes, outplanes, 1, stride=stride, bias=False), nn.BatchNorm2d(outplanes))
    return None


class ECABasicBlock(nn.Module):
    expansion = 1
    kind = "ECABasicBlock"

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
    def to_deploy(self) -> ResBlockD:
        ds = _conv_bn(*self.downsample) if self.downsample is not None else None
        return ResBlockD([_conv_bn(self.conv1, self.bn1), _conv_bn(self.conv2, self.bn2)], self.eca.to_deploy(), ds)


class ECABottleneck(nn.Module):
    expansion = 4
    kind = "ECABottleneck"

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
    def to_deploy(self) -> ResBlockD:
        ds = _conv_bn(*self.downsample) if self.downsample is not None else None
        return ResBlockD([_conv_bn(self.conv1, self.bn1), _conv_bn(self.conv2, self.bn2),
                          _conv_bn(self.conv3, self.bn3)], self.eca.to_deploy(), ds)


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


class ECAResNet(nn.Module):
    """Official ``ResNet`` of eca_resnet.py (stem 7×7/2 + max pool, layer1..4, avg pool, fc)."""

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
    def to_deploy(self, img_size=None) -> nn.Module:
        from partialdeploy.models.partialnet import DeployNet

        body = [blk.to_deploy() for layer in self.layers() for blk in layer]
        fc = nn.Linear(self.fc.in_features, self.fc.out_features)
        fc.load_state_dict(self.fc.state_dict())
        return DeployNet(ResStemD(_conv_bn(self.conv1, self.bn1)), body, PoolFcHeadD(fc)).eval()


# ----------------------------------------------------------------------------------------------
# ECA-MobileNetV2

# the official inverted-residual setting (t, c, n, s); strides come from here (they are not in weights)
MBV2_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))


class ConvBNReLU(nn.Sequential):
    def __init__(self, inp, oup, kernel_size=3, stride=1, groups=1):
        super().__init__(nn.Conv2d(inp, oup, kernel_size, stride, (kernel_size - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(oup), nn.ReLU6(inplace=True))

    @torch.no_grad()
    def to_deploy(self) -> "ConvActD":
        return ConvActD(_conv_bn(self[0], self[1]))


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


class InvertedResidual(nn.Module):
    kind = "InvertedResidual"

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
    def to_deploy(self) -> InvertedResidualD:
        *cbr, pw, bn, eca = list(self.conv)
        convs = [m.to_deploy() for m in cbr] + [_conv_bn(pw, bn)]
        return InvertedResidualD(convs, eca.to_deploy(), self.use_res_connect)


def mbv2_blocks(stem: int, outs: list[int], hiddens: list[int], k_sizes: list[int]) -> list[tuple]:
    """(inp, oup, hidden, stride, k) per block; strides by position in the official setting."""
    strides = [s if i == 0 else 1 for _, _, n, s in MBV2_SETTING for i in range(n)]
    blocks, inp = [], stem
    for i, (o, h, k) in enumerate(zip(outs, hiddens, k_sizes)):
        blocks.append((inp, o, h, strides[i], k))
        inp = o
    return blocks


class ECAMobileNetV2(nn.Module):
    """Official ``ECA_MobileNetV2`` (features[0] stem, 17 inverted residuals with ECA, 1×1 conv to
    last_channel, mean pool, dropout + linear)."""

    def __init__(self, spec: ArchSpec):
        super().__init__()
        self.spec = spec
        a = spec.arch
        feats: list[nn.Module] = [ConvBNReLU(spec.in_chans, a["stem"], stride=2)]
        for inp, oup, hidden, stride, k in mbv2_blocks(a["stem"], a["outs"], a["hiddens"], a["k_sizes"]):
            feats.append(InvertedResidual(inp, oup, hidden, stride, k))
        feats.append(ConvBNReLU(a["outs"][-1], a["last_channel"], kernel_size=1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.25), nn.Linear(a["last_channel"], spec.num_classes))

    def forward(self, x):
        x = self.features(x)
        return self.classifier(x.mean(-1).mean(-1))

    @torch.no_grad()
    def to_deploy(self, img_size=None) -> nn.Module:
        from partialdeploy.models.partialnet import DeployNet

        feats = list(self.features)
        fc = nn.Linear(self.classifier[1].in_features, self.classifier[1].out_features)
        fc.load_state_dict(self.classifier[1].state_dict())
        head = PoolFcHeadD(fc, feats[-1].to_deploy().conv, "RELU6")
        return DeployNet(feats[0].to_deploy(), [b.to_deploy() for b in feats[1:-1]], head).eval()
