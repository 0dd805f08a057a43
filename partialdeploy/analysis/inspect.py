"""What ``inspect`` reports: the architecture found, what each block type folds into and what stays
(and why) as the blocks themselves declare it during the conversion, parameters and FLOPs before -> after."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

@dataclass
class FlopCount:
    macs: int = 0
    by_kind: Counter = field(default_factory=Counter)

    @property
    def flops(self) -> int:
        return 2 * self.macs


@torch.no_grad()
def count_flops(model: nn.Module, img_size: int, rules: dict | None = None) -> FlopCount:
    """Multiply-accumulates of convs (2-D and 1-D), linears and whatever the model's family adds
    (attention matmuls, convs through F.conv2d) for one image (FLOPs = 2·MAC)."""
    from partialdeploy import families

    if rules is None:
        spec = getattr(model, "spec", None)
        rules = families.get(spec.family).flop_rules() if spec is not None else {}
    fc = FlopCount()
    hooks = []

    def add(kind, n):
        fc.macs += int(n)
        fc.by_kind[kind] += int(n)

    def conv_hook(m, inp, out):
        k = m.in_channels // m.groups
        for s in m.kernel_size:
            k *= s
        add("conv", out[0].numel() * k)

    def lin_hook(m, inp, out):
        add("linear", out[0].numel() * m.in_features)

    def rule_hook(fn):
        return lambda m, inp, out: add(*fn(m, inp, out))

    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv1d)):
            hooks.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            hooks.append(m.register_forward_hook(lin_hook))
        for cls, fn in rules.items():
            if isinstance(m, cls):
                hooks.append(m.register_forward_hook(rule_hook(fn)))
    try:
        was = model.training
        model.eval()
        in_chans = getattr(getattr(model, "spec", None), "in_chans", 3)
        model(torch.zeros(1, in_chans, img_size, img_size))
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


def inspect_checkpoint(path: Path | None, variant=None, act=None, img_size=None) -> dict:
    from partialdeploy import demo, families
    from partialdeploy.checkpoint import load_checkpoint, load_model, resolve_spec
    from partialdeploy.models.protocol import fold_table
    from partialdeploy.reparam import convert_model

    ckpt = load_checkpoint(path or demo.DEMO_CKPT)
    spec, notes = resolve_spec(ckpt, variant=variant, act=act, img_size=img_size)
    model = load_model(ckpt, spec)
    size = spec.img_size
    converted = convert_model(model, size)
    deploy = converted.module
    f0, f1 = count_flops(model, size), count_flops(deploy, size)
    p0, p1 = count_params(model), count_params(deploy)
    fam = families.get(spec.family)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    n_bn_after = sum(isinstance(m, nn.BatchNorm2d) for m in deploy.modules())
    n_ln = sum(isinstance(m, nn.LayerNorm) for m in model.modules())
    n_ln_after = sum(isinstance(m, nn.LayerNorm) and m.elementwise_affine for m in deploy.modules())
    dp = {k: v for k, v in spec.dp_splits.items()} if spec.auto_div else {}
    return {
        "checkpoint": str(ckpt.path.name),
        "format": ckpt.format,
        "sha256": ckpt.sha256,
        "dropped_prefixes": ckpt.dropped_prefixes,
        "hyper_parameters": bool(ckpt.hyper_parameters),
        "architecture": spec.to_dict(),
        "notes": notes,
        "blocks": fold_table(converted.folds),
        "dpconv_splits": dp,
        "batchnorm": {"before": n_bn, "after": n_bn_after},
        "family": fam.title,
        "summary": fam.describe(spec),
        "layernorm_affine_folded": n_ln - n_ln_after,
        "img_size": size,
        "params": {"before": p0, "after": p1},
        "flops": {"before": f0.flops, "after": f1.flops, "by_kind_before": {k: 2 * v for k, v in f0.by_kind.items()},
                  "by_kind_after": {k: 2 * v for k, v in f1.by_kind.items()}},
    }
