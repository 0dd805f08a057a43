"""Deploy-form conversion, block by block along the real data flow, and its parity gate.

``reparameterize(model, img_size)`` hands the model to its family (``partialdeploy.families``),
which asks every block for its deploy form (each block owns its conversion, timm-style);
``verify`` compares train form and deploy form
on real images and fails closed.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn as nn

from partialdeploy import parity
from partialdeploy.models.deploy import make_act
from partialdeploy.models.partialnet import DeployHead, DeployNet, MLPBlock, PartialNet


@torch.no_grad()
def feature_sizes(model: PartialNet, img_size: int | tuple[int, int]) -> dict[str, tuple[int, int]]:
    """Spatial size at the input of every block for a given image size (a shape-only forward)."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [m.register_forward_pre_hook(lambda mod, inp, name=name: sizes.__setitem__(name, tuple(inp[0].shape[2:])))
             for name, m in model.named_modules() if isinstance(m, MLPBlock)]
    try:
        was = model.training
        model.eval()
        model(torch.zeros(1, model.spec.in_chans, h, w))
        model.train(was)
    finally:
        for hk in hooks:
            hk.remove()
    return sizes


def reparameterize(model: nn.Module, img_size: int | tuple[int, int]) -> nn.Module:
    """Deploy form of any registered family's train-form model (its family owns the conversion)."""
    from partialdeploy import families

    net = families.of(model).to_deploy(model, img_size)
    net.spec = model.spec
    return net


@torch.no_grad()
def reparameterize_partialnet(model: PartialNet, img_size: int | tuple[int, int]) -> DeployNet:
    model = copy.deepcopy(model).eval()
    sizes = feature_sizes(model, img_size)
    body: list[nn.Module] = []
    for stage in model.stages:
        if hasattr(stage, "blocks"):
            for blk in stage.blocks:
                full = next(n for n, m in model.named_modules() if m is blk)
                body.append(blk.to_deploy(sizes[full]))
        else:
            body.append(stage.to_deploy(None))
    pool_conv = model.avgpool_pre_head[1]
    head = DeployHead(copy.deepcopy(pool_conv), make_act(model.spec.act), copy.deepcopy(model.head))
    net = DeployNet(model.patch_embed.to_deploy(None), body, head).eval()
    net.spec = model.spec
    return net


@torch.no_grad()
def torch_logits(model: nn.Module, x: np.ndarray, batch: int = 8) -> np.ndarray:
    model.eval()
    outs = [model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))).double().numpy()
            for i in range(0, len(x), batch)]
    return np.concatenate(outs, 0)


def verify(train: nn.Module, deploy: nn.Module, x: np.ndarray, reference: np.ndarray | None = None,
           tol: parity.Tolerance | str = "fp32") -> parity.ParityResult:
    """Parity gate train form -> deploy form on ``x`` (raises VerificationError on a breach)."""
    ref = torch_logits(train, x) if reference is None else reference
    return parity.gate(ref, torch_logits(deploy, x), "train form -> deploy form (PyTorch)", tol)
