"""Verification in one place: every artifact is opened through its runtime's runner and gated
against the train-form reference by the same code (numpy only; runtimes come in through the runners).

* :func:`run_padded` / :func:`pad_batch` — the one implementation of running a static-batch model over
  any number of images (the last chunk padded by repeating its last image, the padding dropped);
* :func:`gate_results` — run and check a ``batch -> logits`` function on the context's parity images
  and, when there is a held-out labelled set, on that too (INT8: accuracy drop); never raises.
  :func:`parity_gates` is the same, raising VerificationError on a breach;
* :func:`verify_artifact` — open an artifact through its backend's runner, exactly as the manifest
  records it (``Runner.artifact_options``), refuse it when the runtime computes in another precision
  than the artifact claims, and gate it;
* :func:`convert_and_verify` — what the pipeline does per target: convert, then verify.

Targets only convert. The two places that need a gate *while* converting — the INT8 fallback loop
(int8fallback.py, through :func:`gate_results`) and OpenVINO's choice of a compile configuration —
use the same functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from partialdeploy import parity
from partialdeploy.errors import UserError
from partialdeploy.records import ManifestEntry, ParityResult


def pad_batch(x: np.ndarray, batch: int) -> np.ndarray:
    """``x`` (n <= batch items) padded to exactly ``batch`` by repeating its last item."""
    n = len(x)
    return x if n >= batch else np.concatenate([x, np.repeat(x[-1:], batch - n, 0)], 0)


def run_padded(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, batch: int) -> np.ndarray:
    """Run ``fn`` over ``x`` in chunks of exactly ``batch`` (a static-batch model); the last chunk is
    padded by repeating its last image and the padding is dropped from the result."""
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        outs.append(np.asarray(fn(np.ascontiguousarray(pad_batch(chunk, batch))))[:len(chunk)])
    return np.concatenate(outs, 0)


def static_batch(shape) -> int | None:
    """The static batch of an input shape, None when the batch is dynamic."""
    d = shape[0] if shape else None
    return int(d) if isinstance(d, (int, np.integer)) and d > 0 else None


def runner_logits(runner, dynamic_batch: int = 8) -> Callable[[np.ndarray], np.ndarray]:
    """``images -> logits`` through a loaded runner, in its static batch (or ``dynamic_batch``)."""
    bs = static_batch(runner.inputs()[0].shape) or dynamic_batch
    return lambda x: run_padded(runner.run, x, bs)


def tolerance(ctx, precision: str | None = None):
    """The profile/CLI override for ``precision`` when given, else the default name."""
    p = precision or ctx.precision
    return ctx.tolerances.get(p) or p


def gate_results(ctx, fn: Callable[[np.ndarray], np.ndarray], stage: str,
                 precision: str | None = None, eval_all: bool = True) -> list[ParityResult]:
    """Run ``fn`` (batch -> logits) on the context's parity images and, when it has a held-out
    labelled set, on that too (accuracy drop for INT8), and check each against the train-form
    reference with the tolerance of ``precision``. Never raises on a breach: each result says
    ``passed``. (The one run-and-gate core; :func:`parity_gates` raises on it.)"""
    precision = precision or ctx.precision
    tol = tolerance(ctx, precision)
    if isinstance(tol, str):
        tol = parity.DEFAULT_TOLERANCES[tol]
    results = [parity.check(parity.compare(ctx.reference, fn(ctx.parity_inputs),
                                           f"{stage} ({len(ctx.parity_inputs)} parity images)"), tol)]
    if ctx.eval_images is not None and ctx.eval_reference is not None and (eval_all or precision == "int8"):
        results.append(parity.check(parity.compare(ctx.eval_reference, fn(ctx.eval_images),
                                                   f"{stage} ({len(ctx.eval_images)} held-out test images)",
                                                   labels=ctx.eval_labels), tol))
    return results


def parity_gates(ctx, fn: Callable[[np.ndarray], np.ndarray], stage: str,
                 precision: str | None = None, eval_all: bool = True) -> list[ParityResult]:
    """:func:`gate_results`, raising VerificationError on a breach; returns the ParityResults."""
    results = gate_results(ctx, fn, stage, precision, eval_all)
    parity.require(*results)
    return results


def verify_artifact(ctx, art, art_dir: Path) -> bool:
    """Open ``art`` (written into ``art_dir``) through its backend's runner and gate it; the results
    are appended to ``art.parity`` and ``art.verified`` becomes "parity". Returns False, leaving the
    artifact as the target described it (e.g. "spec-checked", "bundle"), when its runtime cannot run
    here. Raises VerificationError on a breach, UserError when the runtime computes in another
    precision than the artifact claims (a precision is never certified as another)."""
    from partialdeploy import backends

    backend = backends.backend_of_target(art.target)
    cls = backend.runner_class()
    if not cls.is_available():
        return False
    entry = ManifestEntry(art.target, art.precision, art.path, extra=art.extra)
    opts = cls.artifact_options(entry, "latency")
    source = getattr(backends.get_target(art.target), "source", "ONNX")
    stage = f"{source} -> {backend.label or backend.name} {art.precision}"
    with cls(Path(art_dir) / art.path, threads=ctx.options.get("threads"), **opts) as r:
        claimed, got = art.extra.get("compute_precision"), r.compute_precision()
        if claimed and got and claimed != got:
            raise UserError(f"{backend.name} computes the {art.precision} artifact in {got}, not {claimed}: "
                            f"cannot certify {art.precision} here")
        art.parity = list(art.parity) + parity_gates(ctx, runner_logits(r), stage, art.precision)
    art.verified = "parity"
    return True


def convert_and_verify(target, ctx, out_dir: Path):
    """Convert with ``target`` into ``out_dir``, then verify the artifact in its runtime."""
    art = target.export(ctx, out_dir)
    verify_artifact(ctx, art, out_dir)
    return art
