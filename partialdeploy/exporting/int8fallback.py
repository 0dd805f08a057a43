"""INT8 that holds its gate: when plain post-training quantization misses the INT8 gate, keep the
most sensitive blocks in float and quantize again, until the gate holds.

One loop for every runtime, which knows none. A runtime's target provides a :class:`Quantizer` — how
to quantize with a set of blocks left in float (OpenVINO: NNCF ``ignored_scope``; ONNX Runtime:
``nodes_to_exclude``; the TensorRT bundle: layers left without Q/DQ — the last two through
``backends/onnxruntime/quantizer.py``), how to run a quantized model, how to expose its block
boundaries and how to time it — and :func:`quantize_until_gate` does the rest:

1. quantize everything; gate it (top-1 agreement and cosine against the train form on images not
   used for calibration, plus the accuracy drop where labels exist — the same gate as everywhere);
2. if it fails, measure each block's sensitivity: the quantization error it *adds* at its output
   boundary (1 − cosine against the fp32 deploy-form ONNX at that block, minus the same at the block
   before) on the calibration images, via the block boundaries that :mod:`partialdeploy.analysis.taps` exposes;
3. keep the most sensitive block still quantized in float, quantize again, gate again; re-rank after
   every step (the error moves once a block is in float);
4. stop when the gate holds, or when no block is left to try / the limit is reached: then a
   VerificationError (exit 1) with the numbers of every attempt.

The result says which blocks stayed float (official names), the gate before and after, and the
latency cost (plain INT8 vs the mix, timed interleaved in one process).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from partialdeploy import parity
from partialdeploy.analysis.blocknames import HEAD
from partialdeploy.errors import VerificationError
from partialdeploy.records import ParityResult
from partialdeploy.verification import gate_results

SENSITIVITY_IMAGES = 32


@dataclass
class Quantizer:
    """What the loop needs from a runtime's INT8 target (not a runtime backend: see ``backends``)."""

    name: str
    quantize: Callable[[list], Any]  # blocks kept float -> quantized model (opaque handle)
    logits: Callable[[Any], Callable[[np.ndarray], np.ndarray]]  # handle -> (images -> logits)
    boundaries: Callable[[Any], Callable[[np.ndarray], dict]]  # handle -> (images -> {block: output})
    reference: Callable[[np.ndarray], dict]  # fp32 deploy form: images -> {block: output}
    timer: Callable[[Any], Callable[[], None]] | None = None  # handle -> one timed inference
    release: Callable[[Any], None] | None = None  # drop a handle that is no longer needed


@dataclass
class Attempt:
    float_blocks: list
    passed: bool
    results: list[ParityResult]  # parity images, held-out images
    sensitivity: dict | None = None  # block -> added error, measured on this attempt

    def summary(self) -> dict:
        worst = {"top1_agree": min(r.top1_agree for r in self.results),
                 "cosine_min": min(r.cosine_min for r in self.results)}
        acc = next((r for r in self.results if r.acc is not None), None)
        if acc:
            worst.update(acc_ref=acc.acc_ref, acc=acc.acc)
        return {"float_blocks": list(self.float_blocks), "passed": self.passed, **worst}


@dataclass
class FallbackResult:
    handle: Any
    attempts: list = field(default_factory=list)
    latency_ms: dict | None = None
    enabled: bool = True
    sensitivity_images: int = 0
    asked: list = field(default_factory=list)  # kept in float from the start (int8_exclude)

    @property
    def float_blocks(self) -> list:
        return list(self.attempts[-1].float_blocks)

    @property
    def used(self) -> bool:
        """The loop kept blocks in float beyond those asked for."""
        return len(self.float_blocks) > len(self.asked)

    def to_dict(self) -> dict:
        first = self.attempts[0]
        return {"enabled": self.enabled, "float_blocks": self.float_blocks, "asked": list(self.asked),
                "before": first.summary(), "after": self.attempts[-1].summary(),
                "attempts": [a.summary() for a in self.attempts],
                "ranking": (sorted(first.sensitivity, key=lambda b: -first.sensitivity[b])
                            if first.sensitivity else None),
                "sensitivity": ({k: round(v, 6) for k, v in first.sensitivity.items()}
                                if first.sensitivity else None),
                "sensitivity_images": self.sensitivity_images, "latency_ms": self.latency_ms}

    def note(self) -> str | None:
        if not self.used:
            return (f"INT8 fallback: kept {', '.join(self.asked)} in float as asked (--int8-exclude); the gate held "
                    "without more") if self.asked else None
        b, a = self.attempts[0].summary(), self.attempts[-1].summary()

        def fmt(s):
            t = f"top-1 agreement {100 * s['top1_agree']:.1f}%, cosine {s['cosine_min']:.4f}"
            return t + (f", accuracy {100 * s['acc']:.2f}%" if s.get("acc") is not None else "")

        lat = ""
        if self.latency_ms:
            lat = (f"; latency {self.latency_ms['plain']:.3g} → {self.latency_ms['fallback']:.3g} ms "
                   f"({self.latency_ms['ratio']:.2f}× plain INT8)")
        return (f"INT8 fallback: plain PTQ missed the gate ({fmt(b)}); kept {len(self.float_blocks)} block(s) in "
                f"float: {', '.join(self.float_blocks)} → {fmt(a)}{lat}")


def _gate(ctx, fn: Callable[[np.ndarray], np.ndarray], stage: str) -> tuple[bool, list[ParityResult]]:
    res = gate_results(ctx, fn, stage, "int8")  # the one run-and-gate core (partialdeploy.verification)
    return all(r.passed for r in res), res


def added_error(ref: dict, out: dict, order: list) -> dict:
    """Per block: the quantization error it adds at its output (1 − mean cosine vs fp32, minus the
    same at the previous boundary)."""
    sens, prev = {}, 0.0
    for b in order:
        if b not in ref or b not in out:
            continue
        cos = parity.cosines(ref[b], out[b])
        err = float(1.0 - np.nan_to_num(cos, nan=-1.0).mean())
        sens[b] = err - prev
        prev = err
    return sens


def quantize_until_gate(ctx, backend: Quantizer, stage: str, enabled: bool = True,
                        max_float: int | None = None, say: Callable[[str], None] | None = None) -> FallbackResult:
    """Quantize (everything, then with blocks kept float) until the INT8 gate holds. Returns the
    passing handle; raises VerificationError with every attempt's numbers when no mix holds (or
    when the fallback is disabled and plain PTQ fails)."""
    say = say or (lambda m: None)
    max_float = int(max_float if max_float is not None else ctx.options.int8_max_float_blocks)
    asked = list(ctx.options.int8_exclude)  # blocks the user keeps in float from the start
    handle = backend.quantize(asked)
    passed, res = _gate(ctx, backend.logits(handle), stage)
    result = FallbackResult(handle, [Attempt(asked, passed, res)], enabled=enabled, asked=asked)
    if passed:
        return result
    if not enabled:
        raise VerificationError(_failure(stage, result, "--no-fallback: plain post-training quantization only"))
    calib = np.asarray(ctx.calib, np.float32)
    sx = calib[:SENSITIVITY_IMAGES]
    result.sensitivity_images = len(sx)
    ref = backend.reference(sx)
    # execution order: the collectors return the boundaries in graph order; the head closes the network
    order = [b for b in ref if b != HEAD] + ([HEAD] if HEAD in ref else [])
    plain = handle
    floats = list(asked)
    while True:
        sens = added_error(ref, backend.boundaries(handle)(sx), order)
        result.attempts[-1].sensitivity = sens
        ranked = [b for b in sorted(sens, key=lambda b: -sens[b]) if b not in floats and sens[b] > 0]
        if not ranked or len(floats) - len(asked) >= max_float:
            break
        floats = floats + [ranked[0]]
        say(f"INT8 gate missed; keeping {ranked[0]} in float (added error {sens[ranked[0]]:.3g})")
        if handle is not plain and backend.release:
            backend.release(handle)
        handle = backend.quantize(floats)
        passed, res = _gate(ctx, backend.logits(handle), stage)
        result.attempts.append(Attempt(list(floats), passed, res))
        result.handle = handle
        if passed:
            break
    if not passed:
        why = (f"no mix of up to {max_float} float blocks holds the gate" if len(floats) - len(asked) >= max_float
               else "no block left whose float version lowers the error")
        raise VerificationError(_failure(stage, result, why))
    if backend.timer is not None:
        result.latency_ms = interleaved_latency(backend.timer(plain), backend.timer(handle))
    if backend.release and plain is not handle:
        backend.release(plain)
    return result


def _failure(stage: str, result: FallbackResult, why: str) -> str:
    parts = []
    for a in result.attempts:
        s = a.summary()
        blocks = ", ".join(a.float_blocks) if a.float_blocks else "none"
        acc = f", accuracy {100 * s['acc']:.2f}% (fp32 {100 * s['acc_ref']:.2f}%)" if s.get("acc") is not None else ""
        parts.append(f"float [{blocks}]: top-1 agreement {100 * s['top1_agree']:.1f}%, cosine "
                     f"{s['cosine_min']:.4f}{acc}")
    first = next((r.reason for r in result.attempts[-1].results if not r.passed), "")
    return f"INT8 gate '{stage}' failed: {first}; {why}. Attempts: " + "; ".join(parts)


def interleaved_latency(plain: Callable[[], None], mixed: Callable[[], None], blocks: int = 5,
                        min_block_s: float = 0.2) -> dict:
    """Median of block medians (ms) for plain INT8 and the fallback mix, timed in alternating blocks
    with warm-up per block (docs/architecture.md, "Measuring")."""
    meds: dict = {"plain": [], "fallback": []}
    for _ in range(blocks):
        for name, fn in (("plain", plain), ("fallback", mixed)):
            for _w in range(3):
                fn()
            ts = []
            t_end = time.perf_counter() + min_block_s
            while len(ts) < 5 or time.perf_counter() < t_end:
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            meds[name].append(float(np.median(ts)) * 1e3)
    p, f = float(np.median(meds["plain"])), float(np.median(meds["fallback"]))
    return {"plain": round(p, 4), "fallback": round(f, 4), "ratio": round(f / p, 3) if p > 0 else None,
            "method": f"batch-1 median of {blocks} interleaved block medians, warm-up per block"}
