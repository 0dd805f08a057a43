"""Parity metrics and gates (numpy only).

Every arrow in the flow that changes numbers is followed by ``gate(...)``: it compares a reference
output (train form) with a candidate (deploy form, ONNX Runtime, OpenVINO, ...) on the same real
images and raises VerificationError (exit 1) with the numbers when a tolerance is breached.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from partialdeploy.errors import ParityError, VerificationError
from partialdeploy.records import ParityResult  # noqa: F401  (made here, stored everywhere: one serializer)


@dataclass
class Tolerance:
    rel_max: float | None = None  # max |Δ| / range of reference logits
    cosine_min: float | None = None  # minimum per-sample cosine similarity
    top1_min: float | None = None  # minimum top-1 agreement (fraction)
    acc_drop_max: float | None = None  # max accuracy drop in points (needs labels)
    # the evidence behind top1_min: the one-sided 95% lower confidence bound (Wilson) of the top-1
    # agreement must reach this, so a pass on a handful of images (one image = 100/n points) is no pass
    top1_lower_min: float | None = None


# The tolerances per precision, one row each: the gate an artifact must pass on the logits, and the
# bound `diff` holds every block output to (cosine per image, minimum; max|Δ| relative to the range of
# the reference block output; top-1 agreement of the head). The precisions that exist are the keys of
# this table (PRECISIONS): a new precision starts here (docs/architecture.md, "A new precision").
TOLERANCES = {
    "fp32": (Tolerance(rel_max=1e-4, cosine_min=0.99999, top1_min=1.0),
             {"cosine_min": 0.9999, "rel_max": 1e-3, "top1_min": 1.0}),
    "fp16": (Tolerance(cosine_min=0.9995), {"cosine_min": 0.999, "rel_max": 1e-2, "top1_min": 1.0}),
    # bf16 keeps 8 mantissa bits (fp16: 10), and the CPU rounds activations too, not only weights
    "bf16": (Tolerance(cosine_min=0.998, top1_min=0.9, top1_lower_min=0.75),
             {"cosine_min": 0.995, "rel_max": 5e-2, "top1_min": 0.9}),
    "int8": (Tolerance(cosine_min=0.90, top1_min=0.90, acc_drop_max=0.5, top1_lower_min=0.75),
             {"cosine_min": 0.98, "rel_max": 0.5, "top1_min": 0.9}),
}
DEFAULT_TOLERANCES = {p: gate for p, (gate, _) in TOLERANCES.items()}  # the gates
PRECISIONS = tuple(TOLERANCES)


def block_tolerance(precision: str | None) -> dict:
    """`diff`'s per-block bound for a candidate of ``precision`` (fp32's when unknown), a fresh dict."""
    return dict(TOLERANCES.get(precision or "fp32", TOLERANCES["fp32"])[1])


def agreement_lower_bound(agree: int, n: int, z: float = 1.645) -> float:
    """One-sided 95% lower confidence bound (Wilson score) of an agreement of ``agree`` out of ``n``:
    16/16 -> 0.855, 15/16 -> 0.762, 9/10 -> 0.652, 8/8 -> 0.747, 58/64 -> 0.829."""
    if n <= 0:
        return 0.0
    p = agree / n
    d = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / d
    margin = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return float(max(0.0, centre - margin))


# ---- the metrics (one place: parity gates, `diff`'s per-block comparison, the INT8 fallback's ranking)

def flat(a) -> np.ndarray:
    """(N, ...) -> (N, features) float64."""
    return np.asarray(a, dtype=np.float64).reshape(len(a), -1)


def cosines(ref, out) -> np.ndarray:
    """Per-sample cosine similarity of flattened outputs; two zero vectors agree (1), a zero
    vector against a non-zero one does not (0)."""
    r, o = flat(ref), flat(out)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1)
    same = np.abs(r - o).max(1, initial=0.0) == 0
    return np.where(den > 0, (r * o).sum(1) / np.maximum(den, 1e-300), np.where(same, 1.0, 0.0))


def max_abs_rel(ref, out) -> tuple[float, float]:
    """(max |Δ|, max |Δ| relative to the range of the reference)."""
    r, o = flat(ref), flat(out)
    max_abs = float(np.abs(r - o).max()) if r.size else 0.0
    rng = float(r.max() - r.min()) if r.size else 1.0
    return max_abs, max_abs / max(rng, 1e-12)


def top1_agreement(ref, out) -> float:
    return float((flat(ref).argmax(1) == flat(out).argmax(1)).mean())


def compare(ref: np.ndarray, out: np.ndarray, stage: str = "", labels: np.ndarray | None = None) -> ParityResult:
    ref, out = flat(ref), flat(out)
    if ref.shape != out.shape:
        raise VerificationError(f"{stage}: output shape {out.shape} differs from reference {ref.shape}")
    if not np.all(np.isfinite(out)):
        return ParityResult(stage, len(ref), float("inf"), float("inf"), -1.0, 0.0, passed=False,
                            reason="non-finite outputs")
    max_abs, rel = max_abs_rel(ref, out)
    res = ParityResult(stage, len(ref), max_abs, rel, float(cosines(ref, out).min()), top1_agreement(ref, out))
    if labels is not None and len(labels) == len(ref):
        res.acc_ref = float((ref.argmax(1) == labels).mean())
        res.acc = float((out.argmax(1) == labels).mean())
    return res


def check(res: ParityResult, tol: Tolerance) -> ParityResult:
    """Fill ``passed``/``reason`` according to ``tol``."""
    fails = []
    if tol.rel_max is not None and res.rel_max > tol.rel_max:
        fails.append(f"relative max|Δ| {res.rel_max:.3g} > {tol.rel_max:g}")
    if tol.cosine_min is not None and res.cosine_min < tol.cosine_min:
        fails.append(f"cosine {res.cosine_min:.6f} < {tol.cosine_min:g}")
    if tol.top1_min is not None and res.top1_agree < tol.top1_min:
        fails.append(f"top-1 agreement {100 * res.top1_agree:.1f}% ({res.agree_count}/{res.n}) < "
                     f"{100 * tol.top1_min:.1f}%")
    elif tol.top1_lower_min is not None:
        lb = agreement_lower_bound(res.agree_count, res.n)
        if lb < tol.top1_lower_min:
            fails.append(f"top-1 agreement {res.agree_count}/{res.n} is too little evidence: its 95% lower "
                         f"confidence bound is {100 * lb:.1f}% < {100 * tol.top1_lower_min:.0f}% (one image is "
                         f"{100 / max(res.n, 1):.1f} points; check on more images: --check-images DIR)")
    if tol.acc_drop_max is not None and res.acc is not None and res.acc_ref is not None:
        drop = 100 * (res.acc_ref - res.acc)
        if drop > tol.acc_drop_max:
            fails.append(f"accuracy drop {drop:.2f} points > {tol.acc_drop_max:g}")
    if res.reason:
        fails.insert(0, res.reason)
    res.passed = not fails
    res.reason = "; ".join(fails)
    res.tolerance = {k: v for k, v in asdict(tol).items() if v is not None}
    return res


def gate(ref: np.ndarray, out: np.ndarray, stage: str, tol: Tolerance | str = "fp32",
         labels: np.ndarray | None = None) -> ParityResult:
    """Compare and raise VerificationError (exit 1) on a breach."""
    if isinstance(tol, str):
        tol = DEFAULT_TOLERANCES[tol]
    res = check(compare(ref, out, stage, labels), tol)
    require(res)
    return res


def require(*results: ParityResult) -> None:
    """VerificationError (exit 1) with the numbers of the first result that did not pass."""
    for res in results:
        if not res.passed:
            raise ParityError(f"parity gate '{res.stage}' failed: {res.reason} ({res.summary()})", (res,))
