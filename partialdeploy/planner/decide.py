"""The answer: every candidate gets a status (``fits`` / ``misses`` with the constraints it misses /
``excluded`` with the reason), the latency-vs-accuracy Pareto set is marked per device, and each device
gets a recommendation — the best candidate that meets every constraint by the objective, with a
one-sentence reason and the runner-up — or, when nothing fits, the closest candidate and what it misses.

Exit code of a plan: 0 when every device has a candidate that meets every constraint, 1 when a device
has none (the message names the device, the closest candidate and what it misses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from partialdeploy.errors import UserError
from partialdeploy.planner.candidates import Candidate
from partialdeploy.planner.constraints import Constraints, human_bytes, misses, shortfall

INF = math.inf


@dataclass
class DevicePlan:
    device: str
    considered: list[Candidate]  # the device's candidates that were not excluded
    pareto: list[Candidate] = field(default_factory=list)
    recommended: Candidate | None = None
    runner_up: Candidate | None = None
    closest: Candidate | None = None
    reason: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def fits(self) -> list[Candidate]:
        return [c for c in self.considered if c.status == "fits"]

    def to_dict(self) -> dict:
        lab = (lambda c: c.label if c else None)
        return {"device": self.device, "candidates": len(self.considered), "fit": len(self.fits),
                "recommended": lab(self.recommended), "runner_up": lab(self.runner_up), "closest": lab(self.closest),
                "closest_misses": list(self.closest.misses) if self.closest else [], "reason": self.reason,
                "pareto": [c.label for c in self.pareto], "notes": self.notes}


@dataclass
class Plan:
    constraints: Constraints
    candidates: list[Candidate]  # every row, excluded ones too
    devices: list[DevicePlan]
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return 0 if self.devices and all(d.recommended for d in self.devices) else 1

    def verdict(self) -> str:
        """One line per device that has nothing fitting (what exit 1 prints), '' when all fit."""
        bad = [d for d in self.devices if not d.recommended]
        return "; ".join(d.reason for d in bad)

    def to_dict(self) -> dict:
        return {"schema": "partialdeploy.plan/1", "constraints": self.constraints.to_dict(),
                "summary": self.constraints.describe(), "exit_code": self.exit_code,
                "devices": [d.to_dict() for d in self.devices], "notes": self.notes,
                "candidates": [c.to_dict() for c in self.candidates]}


def sort_key(c: Candidate, cons: Constraints) -> tuple:
    """Lower is better, by the objective; ties broken by the other two (accuracy, latency, size), then
    by the label so the order never depends on the input order."""
    acc = -c.accuracy if c.accuracy is not None else INF
    lat = c.latency(cons.percentile)
    lat = lat if lat is not None else INF
    size = c.size_bytes if c.size_bytes is not None else INF
    keys = {"accuracy": (acc, lat, size), "latency": (lat, acc, size), "size": (size, acc, lat)}[cons.objective]
    return keys + (c.label,)


def pareto_front(cands: list[Candidate], percentile: str) -> list[Candidate]:
    """The candidates no other one beats on both latency (lower) and accuracy (higher); equal points
    are all kept. Candidates without both numbers are not placed."""
    pts = [(c, c.latency(percentile), c.accuracy) for c in cands]
    pts = [(c, lat, acc) for c, lat, acc in pts if lat is not None and acc is not None]
    front = []
    for c, lat, acc in pts:
        dominated = any(l2 <= lat and a2 >= acc and (l2 < lat or a2 > acc) for _, l2, a2 in pts)
        if not dominated:
            front.append(c)
    return sorted(front, key=lambda c: (c.latency(percentile), c.label))


def _filter(cands: list[Candidate], cons: Constraints) -> tuple[list[Candidate], list[str]]:
    """Apply the --device / --batch filters (bad input when they match nothing)."""
    notes = []
    keep = cands
    if cons.devices:
        have = sorted({c.device for c in cands})
        wanted = {_device(name, have) for name in cons.devices}
        keep = [c for c in keep if c.device in wanted]
    if cons.batch is not None:
        have = sorted({c.batch for c in keep if c.batch is not None})
        if cons.batch not in have:
            raise UserError(f"--batch {cons.batch}: the reports have batch(es) {', '.join(map(str, have)) or 'none'}")
        dropped = sum(c.batch != cons.batch for c in keep)
        keep = [c for c in keep if c.batch == cons.batch]
        if dropped:
            notes.append(f"{dropped} row(s) of other batches not considered (--batch {cons.batch})")
    return keep, notes


def _device(name: str, have: list[str]) -> str:
    """The device ``--device name`` means: its exact label, else the one label that contains it (any
    case: ``orin`` for ``jetson (NVIDIA Jetson AGX Orin)``); bad input when none or several do."""
    if name in have:
        return name
    hits = [d for d in have if name.lower() in d.lower()]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise UserError(f"--device {name}: matches several devices ({', '.join(hits)}): give more of the name")
    raise UserError(f"--device {name}: the reports have device(s) {', '.join(have) or 'none'}")


def decide(cands: list[Candidate], cons: Constraints) -> Plan:
    """Statuses, the Pareto set per device, and the recommendation per device."""
    if not cands:
        raise UserError("the reports hold no result rows: profile an export first (partialdeploy profile DIR)")
    cands, notes = _filter(cands, cons)
    for c in cands:
        if c.status != "excluded":
            c.misses = misses(c, cons)
            c.status = "misses" if c.misses else "fits"
    devices = []
    for dev in dict.fromkeys(c.device for c in cands):
        on = [c for c in cands if c.device == dev]
        devices.append(_device_plan(dev, [c for c in on if c.status != "excluded"], len(on), cons))
    batches = sorted({c.batch for c in cands if c.status != "excluded" and c.batch is not None})
    if len(batches) > 1:
        notes.append(f"latency is per inference call and the candidates mix batches {', '.join(map(str, batches))}: "
                     "pass --batch to compare one")
    excluded = [c for c in cands if c.status == "excluded"]
    if excluded:
        notes.append(f"{len(excluded)} row(s) excluded (see each one's reason)")
    return Plan(cons, cands, devices, notes)


def _device_plan(dev: str, considered: list[Candidate], rows: int, cons: Constraints) -> DevicePlan:
    d = DevicePlan(dev, considered)
    d.pareto = pareto_front(considered, cons.percentile)
    for c in d.pareto:
        c.pareto = True
    kinds = {c.accuracy_kind for c in considered if c.accuracy_kind}
    if len(kinds) > 1:
        d.notes.append("some candidates have a measured accuracy and others only their top-1 agreement with fp32: "
                       "they are ranked on one axis, which compares different things")
    if not considered:
        d.reason = f"nothing to choose from on {dev}: all {rows} row(s) were excluded"
        return d
    ranked = sorted(d.fits, key=lambda c: sort_key(c, cons))
    if not ranked:
        d.closest = min(considered, key=lambda c: (shortfall(c, cons),) + sort_key(c, cons))
        d.closest.role = "closest"
        d.reason = (f"nothing meets {cons.describe()} on {dev}: the closest is {d.closest.label} "
                    f"({_numbers(d.closest, cons)}), which misses {'; '.join(d.closest.misses)}")
        return d
    d.recommended = ranked[0]
    d.recommended.role = "recommended"
    if len(ranked) > 1:
        d.runner_up = ranked[1]
        d.runner_up.role = "runner-up"
    d.reason = _reason(d, considered, cons)
    return d


def _acc_text(c: Candidate) -> str:
    if c.accuracy is None:
        return "accuracy unknown"
    what = "accuracy" if c.accuracy_kind == "accuracy" else "top-1 agreement with fp32"
    return f"{what} {100 * c.accuracy:.2f}%"


def _numbers(c: Candidate, cons: Constraints) -> str:
    lat = c.latency(cons.percentile)
    parts = [_acc_text(c), f"{cons.percentile} {lat:.3g} ms" if lat is not None else "latency unknown"]
    if cons.budget is not None and cons.budget.kind == "throughput" and c.throughput_ips is not None:
        parts.append(f"{c.throughput_ips:.4g} img/s")
    parts.append(human_bytes(c.size_bytes))
    return ", ".join(parts)


_SUPERLATIVE = {"accuracy": "most accurate", "latency": "fastest", "size": "smallest"}


def _reason(d: DevicePlan, considered: list[Candidate], cons: Constraints) -> str:
    """One sentence: what was chosen, why (objective among how many that fit), its numbers, what it
    costs against the most accurate candidate on the device, and the runner-up."""
    best, n = d.recommended, len(d.fits)
    s = (f"{best.label} is the {_SUPERLATIVE[cons.objective]} of the {n} candidate(s) on {d.device} that meet "
         f"{cons.describe()} ({_numbers(best, cons)})")
    by_acc = Constraints(percentile=cons.percentile, objective="accuracy")
    top = min((c for c in considered if c.accuracy is not None), key=lambda c: sort_key(c, by_acc), default=None)
    if top is not None and best.accuracy is not None and top.accuracy > best.accuracy and top is not best:
        s += (f", {100 * (top.accuracy - best.accuracy):.2f} points below the most accurate candidate "
              f"{top.label} ({', '.join(top.misses) or 'not preferred'})")
    r = d.runner_up
    if r is None:
        return s + "; no runner-up fits."
    s += f"; runner-up {r.label} ({_numbers(r, cons)})" + _tie(best, r, cons, "the recommendation")
    ranked = sorted(d.fits, key=lambda c: sort_key(c, cons))
    if len(ranked) > 2:
        s += _tie(r, ranked[2], cons, ranked[2].label, ahead=True)
    return s + "."


_CRITERIA = {"accuracy": ("accuracy", "latency", "size"), "latency": ("latency", "accuracy", "size"),
             "size": ("size", "accuracy", "latency")}


def _tie(a: Candidate, b: Candidate, cons: Constraints, other: str, ahead: bool = False) -> str:
    """When ``a`` and ``b`` tie on the objective: which tie-break put ``a`` first ('' when no tie)."""
    ka, kb = sort_key(a, cons), sort_key(b, cons)
    if ka[0] != kb[0]:
        return ""
    names = _CRITERIA[cons.objective]
    i = next((i for i in range(1, 3) if ka[i] != kb[i]), 3)
    by = f"on {names[i]}" if i < 3 else "by name"
    if ahead:
        return f", ahead of {other}, which ties on {names[0]}, {by}"
    return f" ties with {other} on {names[0]} and comes second {by}"
