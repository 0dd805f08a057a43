"""Helpers shared by the target modules (issue #3): parity gates on the real images of the export
context, batching for static-batch models, tensor metadata. numpy only."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from typing import Callable

import numpy as np

from partialdeploy import parity
from partialdeploy.errors import first_line  # noqa: F401  (re-exported for the target modules)
from partialdeploy.exporters.base import ExportContext


@contextlib.contextmanager
def quiet():
    """Silence converters while they work: warnings, stdout/stderr chatter (torch.onnx prints whole
    graphs on failure, coremltools prints version warnings and progress bars), log records below ERROR."""
    root = logging.getLogger()
    old = root.level
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            root.setLevel(old)


def tolerance(ctx: ExportContext, precision: str | None = None):
    """The profile/CLI override for ``precision`` when given, else the default name."""
    p = precision or ctx.precision
    return ctx.tolerances.get(p) or p


def run_padded(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int) -> np.ndarray:
    """Run ``fn`` over ``x`` in chunks of exactly ``batch`` (a static-batch model); the last chunk is
    padded by repeating its last image and the padding is dropped from the result."""
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, 0)], 0)
        outs.append(np.asarray(fn(np.ascontiguousarray(chunk)))[:n])
    return np.concatenate(outs, 0)


def static_batch(shape) -> int | None:
    """The static batch of an input shape, None when the batch is dynamic."""
    d = shape[0] if shape else None
    return int(d) if isinstance(d, (int, np.integer)) and d > 0 else None


def parity_gates(ctx: ExportContext, fn: Callable[[np.ndarray], np.ndarray], stage: str,
                 precision: str | None = None, eval_all: bool = True) -> list[dict]:
    """Gate ``fn`` (batch -> logits) against the train-form reference on the parity images and, when
    the context has a held-out labelled set, on that too (accuracy drop for INT8). Raises
    VerificationError on a breach; returns the ParityResult dicts."""
    precision = precision or ctx.precision
    tol = tolerance(ctx, precision)
    results = [parity.gate(ctx.reference, fn(ctx.parity_inputs),
                           stage=f"{stage} ({len(ctx.parity_inputs)} parity images)", tol=tol).to_dict()]
    if ctx.eval_images is not None and ctx.eval_reference is not None and (eval_all or precision == "int8"):
        labels = ctx.eval_labels
        results.append(parity.gate(ctx.eval_reference, fn(ctx.eval_images),
                                   stage=f"{stage} ({len(ctx.eval_images)} held-out test images)", tol=tol,
                                   labels=labels).to_dict())
    return results


