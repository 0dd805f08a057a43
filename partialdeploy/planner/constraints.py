"""What a plan asks for: a latency or throughput budget, accuracy, size and memory limits, filters
(device, batch) and the objective — parsed from the command line's text (``5ms``, ``200img/s``,
``2MB``, ``0.5``) into one :class:`Constraints`, and checked against a candidate (:func:`misses`).

Plain Python (no numpy): the planner runs where only the profiles are.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from partialdeploy.errors import UserError

PERCENTILES = ("p50", "p90", "p99", "mean", "min", "max")
OBJECTIVES = ("accuracy", "latency", "size")

_TIME = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}
_RATE = ("img/s", "ips", "images/s", "/s", "fps")
_BYTES = {"": 1, "b": 1, "kb": 1e3, "mb": 1e6, "gb": 1e9, "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30}


@dataclass(frozen=True)
class Budget:
    """A latency ceiling (ms per inference call at the plan's percentile) or a throughput floor (images/s)."""

    kind: str  # "latency" | "throughput"
    value: float

    def text(self, percentile: str = "p90") -> str:
        return f"{percentile} ≤ {self.value:g} ms" if self.kind == "latency" else f"≥ {self.value:g} img/s"


def parse_budget(text: str) -> Budget:
    """``5ms``, ``0.5 s``, ``800us`` -> a latency budget; ``200img/s``, ``200ips``, ``200fps`` -> throughput."""
    s = str(text).strip().lower().replace(" ", "")
    for unit in _RATE:
        if s.endswith(unit):
            return Budget("throughput", _positive(s[: -len(unit)], text, "--budget"))
    m = re.fullmatch(r"([0-9.eE+-]+)(us|µs|ms|s)", s)
    if m:
        return Budget("latency", _positive(m.group(1), text, "--budget") * _TIME[m.group(2)])
    raise UserError(f"--budget takes a latency like 5ms (also us, s) or a throughput like 200img/s, got {text!r}")


def parse_bytes(text: str, flag: str) -> int:
    """``2MB`` (1000-based), ``1.5MiB`` (1024-based), ``700kB``, a plain number of bytes."""
    s = str(text).strip().lower().replace(" ", "")
    m = re.fullmatch(r"([0-9.eE+]+)([kmg]i?b|b)?", s)
    if not m:
        raise UserError(f"{flag} takes a size like 2MB, 1.5MiB or 700kB, got {text!r}")
    return int(_positive(m.group(1), text, flag) * _BYTES[m.group(2) or ""])


def parse_memory(text: str) -> float:
    """Peak memory in the unit profile reports print as MB (MiB: 2**20 bytes): ``300MB`` = ``300MiB`` = 300,
    ``1.5GB`` = 1536, ``512kB`` = 0.5; a plain number is MB."""
    s = str(text).strip().lower().replace(" ", "")
    m = re.fullmatch(r"([0-9.eE+]+)([kmg])?i?b?", s)
    if not m:
        raise UserError(f"--max-memory takes a size like 300MB or 1.5GB (MB as profile reports it: MiB), got {text!r}")
    return _positive(m.group(1), text, "--max-memory") * {"k": 1 / 1024, "m": 1.0, "g": 1024.0, None: 1.0}[m.group(2)]


def parse_points(text: str, flag: str) -> float:
    """An accuracy drop in percentage points: ``0.5``, ``0.5pt``, ``0.5%``."""
    s = str(text).strip().lower().replace(" ", "")
    s = re.sub(r"(pts?|points?|pp|%)$", "", s)
    v = _number(s, text, flag)
    if v < 0:
        raise UserError(f"{flag} must be ≥ 0 percentage points, got {text!r}")
    return v


def parse_accuracy(text: str, flag: str = "--min-accuracy") -> float:
    """An accuracy as a fraction: ``98%`` / ``98`` -> 0.98; ``0.98`` -> 0.98 (numbers ≤ 1 are fractions)."""
    s = str(text).strip()
    v = _number(s.rstrip("%"), text, flag)
    v = v / 100 if s.endswith("%") or v > 1 else v
    if not 0 <= v <= 1:
        raise UserError(f"{flag} must be between 0 and 100%, got {text!r}")
    return v


def _number(s: str, text, flag: str) -> float:
    try:
        v = float(s)
    except ValueError:
        raise UserError(f"{flag}: {text!r} is not a number") from None
    if not math.isfinite(v):
        raise UserError(f"{flag}: {text!r} is not a finite number")
    return v


def _positive(s: str, text, flag: str) -> float:
    v = _number(s, text, flag)
    if v <= 0:
        raise UserError(f"{flag} must be > 0, got {text!r}")
    return v


@dataclass(frozen=True)
class Constraints:
    budget: Budget | None = None
    percentile: str = "p90"
    batch: int | None = None  # a filter: only rows of this batch are candidates
    devices: tuple[str, ...] = ()  # a filter: only these devices
    max_drop: float | None = None  # percentage points vs fp32 of the same checkpoint
    min_accuracy: float | None = None  # fraction
    max_size: int | None = None  # bytes
    max_memory_mb: float | None = None  # peak resident memory in MiB (what profile reports print as MB)
    objective: str = "accuracy"

    def __post_init__(self):
        if self.percentile not in PERCENTILES:
            raise UserError(f"--percentile must be one of {', '.join(PERCENTILES)}, got {self.percentile!r}")
        if self.objective not in OBJECTIVES:
            raise UserError(f"--objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if self.batch is not None and self.batch < 1:
            raise UserError(f"--batch must be ≥ 1, got {self.batch}")

    @classmethod
    def from_flags(cls, budget=None, percentile="p90", batch=None, device=None, max_drop=None, min_accuracy=None,
                   max_size=None, max_memory=None, objective="accuracy") -> "Constraints":
        """From the command line's text values (None: not constrained)."""
        devices = tuple(d.strip() for d in (device or "").split(",") if d.strip()) if isinstance(device, str) \
            else tuple(device or ())
        return cls(budget=parse_budget(budget) if budget else None, percentile=str(percentile).lower(), batch=batch,
                   devices=devices, max_drop=parse_points(max_drop, "--max-drop") if max_drop is not None else None,
                   min_accuracy=parse_accuracy(min_accuracy) if min_accuracy is not None else None,
                   max_size=parse_bytes(max_size, "--max-size") if max_size is not None else None,
                   max_memory_mb=parse_memory(max_memory) if max_memory is not None else None,
                   objective=str(objective).lower())

    def to_dict(self) -> dict:
        return {"budget": None if self.budget is None else {"kind": self.budget.kind, "value": self.budget.value,
                                                             "text": self.budget.text(self.percentile)},
                "percentile": self.percentile, "batch": self.batch, "devices": list(self.devices),
                "max_drop_points": self.max_drop, "min_accuracy": self.min_accuracy, "max_size_bytes": self.max_size,
                "max_memory_mb": self.max_memory_mb, "objective": self.objective}

    def describe(self) -> str:
        """The constraints in one line, e.g. ``p90 ≤ 5 ms, drop ≤ 0.5 pt, size ≤ 1.0 MB``."""
        parts = []
        if self.budget:
            parts.append(self.budget.text(self.percentile))
        if self.max_drop is not None:
            parts.append(f"accuracy drop ≤ {self.max_drop:g} pt")
        if self.min_accuracy is not None:
            parts.append(f"accuracy ≥ {100 * self.min_accuracy:g}%")
        if self.max_size is not None:
            parts.append(f"size ≤ {human_bytes(self.max_size)}")
        if self.max_memory_mb is not None:
            parts.append(f"peak memory ≤ {self.max_memory_mb:g} MB")
        return ", ".join(parts) or "no constraints"


def human_bytes(n: float | None) -> str:
    if n is None:
        return "–"
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= f:
            return f"{n / f:.2f} {unit}" if n < 10 * f else f"{n / f:.1f} {unit}"
    return f"{int(n)} B"


def misses(c, cons: Constraints) -> list[str]:
    """The constraints candidate ``c`` (a :class:`~partialdeploy.planner.candidates.Candidate`) misses,
    each as a short sentence with the numbers; a value that was not measured misses its constraint
    (a gate never passes on a missing number)."""
    out = []
    b = cons.budget
    if b is not None and b.kind == "latency":
        lat = c.latency(cons.percentile)
        if lat is None:
            out.append(f"{cons.percentile} latency not measured")
        elif lat > b.value:
            out.append(f"{cons.percentile} {lat:.3g} ms > {b.value:g} ms budget")
    elif b is not None:
        if c.throughput_ips is None:
            out.append("throughput not measured")
        elif c.throughput_ips < b.value:
            out.append(f"{c.throughput_ips:.4g} img/s < {b.value:g} img/s budget")
    if cons.max_drop is not None:
        d = c.drop_points
        if d is None:
            out.append("accuracy drop unknown (no accuracy or fp32 agreement recorded)")
        elif d > cons.max_drop + 1e-9:
            out.append(f"{c.drop_name} {d:.2f} pt > {cons.max_drop:g} pt")
    if cons.min_accuracy is not None:
        if c.accuracy is None or c.accuracy_kind != "accuracy":
            out.append("accuracy not measured on a labelled set")
        elif c.accuracy < cons.min_accuracy - 1e-12:
            out.append(f"accuracy {100 * c.accuracy:.2f}% < {100 * cons.min_accuracy:g}%")
    if cons.max_size is not None:
        if c.size_bytes is None:
            out.append("artifact size unknown")
        elif c.size_bytes > cons.max_size:
            out.append(f"size {human_bytes(c.size_bytes)} > {human_bytes(cons.max_size)}")
    if cons.max_memory_mb is not None:
        if c.peak_memory_mb is None:
            out.append("peak memory not measured")
        elif c.peak_memory_mb > cons.max_memory_mb:
            out.append(f"peak memory {c.peak_memory_mb:.0f} MB > {cons.max_memory_mb:g} MB")
    return out


def shortfall(c, cons: Constraints) -> float:
    """How far ``c`` is from meeting every constraint, as a sum of relative shortfalls (0: meets all);
    an unmeasured value counts 1. Used to name the closest candidate when nothing fits."""
    total = 0.0
    b = cons.budget
    if b is not None:
        v = c.latency(cons.percentile) if b.kind == "latency" else c.throughput_ips
        if v is None:
            total += 1
        elif b.kind == "latency":
            total += max(0.0, v / b.value - 1)
        else:
            total += max(0.0, 1 - v / b.value)
    if cons.max_drop is not None:
        d = c.drop_points
        total += 1 if d is None else max(0.0, d - cons.max_drop) / 100
    if cons.min_accuracy is not None:
        a = c.accuracy if c.accuracy_kind == "accuracy" else None
        total += 1 if a is None else max(0.0, cons.min_accuracy - a)
    for have, limit in ((c.size_bytes, cons.max_size), (c.peak_memory_mb, cons.max_memory_mb)):
        if limit is not None:
            total += 1 if have is None else max(0.0, have / limit - 1)
    return total
