"""Deploy-form conversion and its parity gate.

``reparameterize(model, img_size)`` runs the one generic walker of
:mod:`partialdeploy.models.protocol`: every block converts itself (``to_deploy``, timm-style) and
says what it folded (the pipeline gates train form against deploy form with ``parity.gate``).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from partialdeploy.models.protocol import DeployResult, convert


def convert_model(model: nn.Module, img_size: int | tuple[int, int]) -> DeployResult:
    """Deploy form of any registered family's train-form model, with what each block folded."""
    return convert(model, img_size)


def reparameterize(model: nn.Module, img_size: int | tuple[int, int]) -> nn.Module:
    """Deploy form of any registered family's train-form model (each block owns its conversion)."""
    return convert(model, img_size).module


@torch.no_grad()
def torch_logits(model: nn.Module, x: np.ndarray, batch: int = 8) -> np.ndarray:
    model.eval()
    outs = [model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch]))).double().numpy()
            for i in range(0, len(x), batch)]
    return np.concatenate(outs, 0)
