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
(exporting/int8fallback.py, through :func:`gate_results`) and OpenVINO's choice of a compile configuration —
use the same functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from partialdeploy import parity
from partialdeploy.errors import UserError, VerificationError
from partialdeploy.records import Artifact, ParityResult


def pad_batch(x: np.ndarray, batch: int) -> np.ndarray:
    """``x`` (n <= batch items) padded to exactly ``batch`` by repeating its last item."""
    n = len(x)
    return x if n >= batch else np.concatenate([x, np.repeat(x[-1:], batch - n, 0)], 0)


def run_padded(fn: Callable[[np.ndarray], np.ndarray | dict], x: np.ndarray, batch: int):
    """Run ``fn`` over ``x`` in chunks of exactly ``batch`` (a static-batch model); the last chunk is
    padded by repeating its last image and the padding is dropped from the result. ``fn`` returns an
    array, or a dict of arrays (then so does this, each concatenated)."""
    outs = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        y = fn(np.ascontiguousarray(pad_batch(chunk, batch)))
        outs.append({k: np.asarray(v)[:len(chunk)] for k, v in y.items()} if isinstance(y, dict)
                    else np.asarray(y)[:len(chunk)])
    if outs and isinstance(outs[0], dict):
        return {k: np.concatenate([o[k] for o in outs], 0) for k in outs[0]}
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


@dataclass
class Alternative:
    """Another way to open an artifact, tried by :func:`verify_artifact` when the recorded way misses
    the gate (OpenVINO: its snippets fusion switched off). ``extra`` is merged into the artifact's
    ``extra`` (what the runner reads through ``artifact_options``), so whoever loads it later opens it
    the way that passed; ``note`` (``{failed}``: the first failure) is added to the artifact's notes."""

    extra: dict
    note: str


@dataclass(frozen=True)
class Proof:
    """What a gate established while converting: ``results`` for the file with sha256 ``digest``,
    opened with runner ``options`` on the context's images. :func:`verify_artifact` certifies from it
    instead of running the same gate again — only when the file on disk, the options it would open
    with and the images are the same (a changed file is gated again)."""

    digest: str
    options: str  # the runner options as canonical JSON
    images: tuple  # identity of the context's image arrays
    results: tuple

    @staticmethod
    def key(ctx) -> tuple:
        return (id(ctx.parity_inputs), id(ctx.eval_images), id(ctx.reference), repr(tolerance(ctx)))

    @staticmethod
    def canon(options: dict) -> str:
        return json.dumps(options, sort_keys=True, default=str)

    @classmethod
    def of(cls, ctx, path: Path, options: dict, results) -> "Proof":
        from partialdeploy.integrity import artifact_sha256

        return cls(artifact_sha256(path), cls.canon(options), cls.key(ctx), tuple(results))

    def holds(self, ctx, path: Path, options: dict) -> bool:
        from partialdeploy.integrity import artifact_sha256

        return (self.images == self.key(ctx) and self.options == self.canon(options)
                and all(r.passed for r in self.results) and self.digest == artifact_sha256(path))


def open_options(runner_cls, ctx, art: Artifact) -> dict:
    """The options every gate opens ``art`` with: what it records for its runner (``extra`` read by
    ``Runner.artifact_options``, as the manifest entry will) plus the context's thread count."""
    return {**runner_cls.artifact_options(art, "latency"), "threads": ctx.options.threads}


def verify_file(ctx, runner_cls, path: Path, stage: str, precision: str | None = None,
                options: dict | None = None, claimed: str | None = None, name: str = "",
                seen: Callable | None = None) -> list[ParityResult]:
    """The one run-and-gate path: open ``path`` through ``runner_cls`` with ``options``, refuse it
    when ``claimed`` (a compute precision) is not what the runtime computes in, gate it (raises
    VerificationError on a breach) and return the results. ``seen(runner)`` is called once it is open."""
    precision = precision or ctx.precision
    with runner_cls(Path(path), **(options or {"threads": ctx.options.threads})) as r:
        if seen is not None:
            seen(r)
        got = r.compute_precision()
        if claimed and got and claimed != got:
            raise UserError(f"{name or runner_cls.name} computes the {precision} artifact in {got}, not {claimed}: "
                            f"cannot certify {precision} here")
        return parity_gates(ctx, runner_logits(r), stage, precision)


def stage_name(target: str, precision: str) -> str:
    """The verification stage of a target's artifact, e.g. "ONNX -> OpenVINO fp16"."""
    from partialdeploy import backends

    backend = backends.backend_of_target(target)
    source = getattr(backends.get_target(target), "source", "ONNX")
    return f"{source} -> {backend.label or backend.name} {precision}"


def verify_artifact(ctx, art, art_dir: Path) -> bool:
    """Open ``art`` (written into ``art_dir``) through its backend's runner and gate it; the results
    are appended to ``art.parity`` and ``art.verified`` becomes "parity". When the recorded way to open
    it misses the gate, its ``alternatives`` are tried in order (the first that passes is recorded).
    When its target already gated this very file the same way (``art.proof``), that result is the
    certificate. Returns False, leaving the artifact as the target described it (e.g.
    "spec-checked", "bundle"), when its runtime cannot run here. Raises VerificationError on a
    breach, UserError when the runtime computes in another precision than the artifact claims (a
    precision is never certified as another). Fills ``inputs``/``outputs`` from the runtime when the
    target left them empty."""
    from partialdeploy import backends

    backend = backends.backend_of_target(art.target)
    cls = backend.runner_class()
    if not cls.is_available():
        return False
    path = Path(art_dir) / art.path
    stage = stage_name(art.target, art.precision)

    def io_meta(r) -> None:  # what the runtime reports, when the target did not say
        if not art.inputs or not art.outputs:
            art.inputs = [{"name": m.name, "shape": list(m.shape), "dtype": m.dtype} for m in r.inputs()]
            art.outputs = [{"name": m.name, "shape": list(m.shape), "dtype": m.dtype} for m in r.outputs()]

    def gate() -> list[ParityResult]:
        opts = open_options(cls, ctx, art)
        claimed = art.extra.get("compute_precision")  # a claim is read back from the runtime: never from a proof
        if art.proof is not None and not claimed and art.proof.holds(ctx, path, opts) and art.inputs and art.outputs:
            return list(art.proof.results)
        return verify_file(ctx, cls, path, stage, art.precision, opts, claimed, backend.name, io_meta)

    try:
        results = gate()
    except VerificationError as first:
        for alt in art.alternatives:
            saved = dict(art.extra)
            art.extra.update(alt.extra)
            try:
                results = gate()
            except (VerificationError, UserError):  # misses too, or does not compile here
                art.extra = saved
                continue
            art.notes.append(alt.note.replace("{failed}", str(first)[:240]))
            break
        else:
            raise first from None
    art.parity = list(art.parity) + results
    art.verified = "parity"
    return True


def convert_and_verify(target, ctx, out_dir: Path):
    """Convert with ``target`` into ``out_dir``, then verify the artifact in its runtime."""
    art = target.export(ctx, out_dir)
    verify_artifact(ctx, art, out_dir)
    return art
