"""What ``inspect`` reports: the architecture found, what each block type folds into and what stays
(and why), parameters and FLOPs before -> after."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

# what each train-form block kind becomes (DESIGN.md §5), and what stays and why
FOLDS = {
    "PatchEmbed": ("stem conv -> BN folded into the conv (rewrite 1)", "nothing"),
    "PatchMerging": ("merging conv -> BN folded into the conv (rewrite 1)", "nothing"),
    "PConv": ("split/concat form kept (never in-place slicing, which exports as ScatterND)",
              "the partial 3×3 conv: already minimal"),
    "PAT_ch": ("gate (1×2) conv + BN -> one 1×1 conv over [mean; std] (rewrite 3); output BN -> the MLP's first "
               "1×1 conv input columns + bias (rewrite 2)",
               "per-channel mean/std pooling and the hard-sigmoid gate: they depend on the input"),
    "PAT_sf": ("q-scale and LayerNorm affine -> qkv weights + bias; iRPE key bias -> constant (H, L, L) for "
               "the export size; dropout removed; the split shortcut -> the 3×3 conv's centre tap "
               "(rewrite 4)",
               "LayerNorm normalisation, softmax attention: they depend on the input"),
    "PAT_sp": ("MLP's last 1×1 conv, BN -> 1×1 conv, gate conv and gated BN composed into one 1×1 conv + "
               "shift (rewrites 2, 1×1∘1×1)",
               "the hard-sigmoid spatial gate multiply: it depends on the input"),
    "DPConv": ("dynamic gated conv -> static partial conv with its learned split (rewrite 5)",
               "the partial 3×3 conv over the learned channels"),
    "MLP": ("first 1×1 conv -> BN folded (rewrite 1); drop path removed; layer scale -> last conv",
            "activation"),
    "Head": ("nothing to fold", "pooling, 1×1 conv, activation, classifier"),
}


@dataclass
class FlopCount:
    macs: int = 0
    by_kind: Counter = field(default_factory=Counter)

    @property
    def flops(self) -> int:
        return 2 * self.macs


@torch.no_grad()
def count_flops(model: nn.Module, img_size: int) -> FlopCount:
    """Multiply-accumulates of convs, linears and attention matmuls for one image (FLOPs = 2·MAC)."""
    from partialdeploy.models.deploy import SelfAttnD
    from partialdeploy.models.partialnet import RPEAttention

    fc = FlopCount()
    hooks = []

    def conv_hook(m, inp, out):
        k = m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]
        fc.macs += out[0].numel() * k
        fc.by_kind["conv"] += out[0].numel() * k

    def conv_fn_hook(m, inp, out):  # DPConv calls F.conv2d on a slice of its weight
        c1 = m.split
        n = out.shape[2] * out.shape[3] * c1 * c1 * 9
        fc.macs += n
        fc.by_kind["conv"] += n

    def lin_hook(m, inp, out):
        n = out[0].numel() * m.in_features
        fc.macs += n
        fc.by_kind["linear"] += n

    def attn_hook(m, inp, out):
        x = inp[0]
        L = x.shape[2] * x.shape[3] if x.dim() == 4 else x.shape[1]
        c = m.c2 if isinstance(m, SelfAttnD) else x.shape[1]
        n = 2 * L * L * c  # q·kᵀ and attn·v, all heads
        fc.macs += n
        fc.by_kind["attention"] += n

    from partialdeploy.models.partialnet import DPConv

    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
        elif isinstance(m, DPConv):
            hooks.append(m.register_forward_hook(conv_fn_hook))
        if isinstance(m, (RPEAttention, SelfAttnD)):
            hooks.append(m.register_forward_hook(attn_hook))
    try:
        was = model.training
        model.eval()
        model(torch.zeros(1, 3, img_size, img_size))
        model.train(was)
    finally:
        for h in hooks:
            h.remove()
    return fc


def count_params(model: nn.Module) -> int:
    """Parameters plus constant buffers that ship in the artifact (BN statistics, baked biases)."""
    seen = set()
    n = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen or not t.is_floating_point():
            continue
        seen.add(id(t))
        n += t.numel()
    return n


def block_kinds(model: nn.Module) -> Counter:
    from partialdeploy.models.partialnet import MLPBlock, PATSpatial, PatchEmbed, PatchMerging

    c: Counter = Counter()
    for m in model.modules():
        if isinstance(m, PatchEmbed):
            c["PatchEmbed"] += 1
        elif isinstance(m, PatchMerging):
            c["PatchMerging"] += 1
        elif isinstance(m, MLPBlock):
            c[m.spatial_mixing.kind] += 1
            c["MLP"] += 1
        elif isinstance(m, PATSpatial):
            c["PAT_sp"] += 1
    c["Head"] = 1
    return c


def inspect_checkpoint(path: Path | None, variant=None, act=None, img_size=None) -> dict:
    from partialdeploy import demo
    from partialdeploy.checkpoint import load_checkpoint, load_model, resolve_spec
    from partialdeploy.reparam import reparameterize

    ckpt = load_checkpoint(path or demo.DEMO_CKPT)
    spec, notes = resolve_spec(ckpt, variant=variant, act=act, img_size=img_size)
    model = load_model(ckpt, spec)
    size = spec.img_size
    deploy = reparameterize(model, size)
    f0, f1 = count_flops(model, size), count_flops(deploy, size)
    p0, p1 = count_params(model), count_params(deploy)
    kinds = block_kinds(model)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    n_bn_after = sum(isinstance(m, nn.BatchNorm2d) for m in deploy.modules())
    n_ln = sum(isinstance(m, nn.LayerNorm) for m in model.modules())
    dp = {k: v for k, v in spec.dp_splits.items()} if spec.auto_div else {}
    return {
        "checkpoint": str(ckpt.path.name),
        "format": ckpt.format,
        "sha256": ckpt.sha256,
        "dropped_prefixes": ckpt.dropped_prefixes,
        "hyper_parameters": bool(ckpt.hyper_parameters),
        "architecture": spec.to_dict(),
        "notes": notes,
        "blocks": [{"kind": k, "count": v, "folds": FOLDS[k][0], "stays": FOLDS[k][1]} for k, v in kinds.items()],
        "dpconv_splits": dp,
        "batchnorm": {"before": n_bn, "after": n_bn_after},
        "layernorm_affine_folded": n_ln,
        "img_size": size,
        "params": {"before": p0, "after": p1},
        "flops": {"before": f0.flops, "after": f1.flops, "by_kind_before": {k: 2 * v for k, v in f0.by_kind.items()},
                  "by_kind_after": {k: 2 * v for k, v in f1.by_kind.items()}},
    }
