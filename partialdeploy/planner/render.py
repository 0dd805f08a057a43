"""A plan as rows of text (the terminal table and Markdown share them) and as Markdown."""

from __future__ import annotations

from partialdeploy.planner.candidates import Candidate
from partialdeploy.planner.constraints import human_bytes
from partialdeploy.planner.decide import Plan, sort_key

COLUMNS = ("device", "variant", "target", "prec", "b", "LAT ms", "img/s", "accuracy", "drop pt", "size", "mem MB",
           "params", "FLOPs", "status", "misses / reason")
MARKS = {"recommended": "★ recommended", "runner-up": "runner-up", "closest": "closest"}


def ordered(plan: Plan) -> list[Candidate]:
    """Per device: the ones that fit (best first), then the ones that miss (closest first), then excluded."""
    from partialdeploy.planner.constraints import shortfall

    cons = plan.constraints
    out = []
    for d in plan.devices:
        on = [c for c in plan.candidates if c.device == d.device]
        out += sorted((c for c in on if c.status == "fits"), key=lambda c: sort_key(c, cons))
        out += sorted((c for c in on if c.status == "misses"), key=lambda c: (shortfall(c, cons),) + sort_key(c, cons))
        out += [c for c in on if c.status == "excluded"]
    return out


def _num(v, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def _si(v) -> str:
    """FLOPs per image as 6.98M / 1.2G."""
    if v is None:
        return "–"
    for unit, f in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= f:
            return f"{v / f:.3g}{unit}"
    return str(v)


def accuracy_cell(c: Candidate) -> str:
    """``99.17%`` measured on a labelled set; ``100.00%*`` top-1 agreement with fp32 (the footnote)."""
    if c.accuracy is None:
        return "–"
    return f"{100 * c.accuracy:.2f}%" + ("" if c.accuracy_kind == "accuracy" else "*")


def status_cell(c: Candidate) -> str:
    s = MARKS.get(c.role or "", c.status)
    if c.role and c.status != "fits" and c.role != "closest":
        s = f"{c.status}, {s}"
    return s + (" ◆" if c.pareto else "")


def row(c: Candidate, percentile: str) -> dict:
    lat = c.latency(percentile)
    prec = c.precision or "?"
    if c.compute_precision:
        prec += f" [{c.compute_precision}]"
    why = c.reason if c.status == "excluded" else "; ".join(c.misses)
    return {"device": c.device, "variant": c.variant or c.model or "?", "target": c.target or "?", "prec": prec,
            "b": _num(c.batch, "d"), "LAT ms": _num(lat, ".3f"), "img/s": _num(c.throughput_ips, ",.0f"),
            "accuracy": accuracy_cell(c), "drop pt": _num(c.drop_points, ".2f"), "size": human_bytes(c.size_bytes),
            "mem MB": _num(c.peak_memory_mb, ".0f"), "params": _num(c.params, ",d"), "FLOPs": _si(c.flops),
            "status": status_cell(c),
            "misses / reason": why or ""}


def columns(plan: Plan) -> list[str]:
    return [c.replace("LAT", plan.constraints.percentile) for c in COLUMNS]


def rows(plan: Plan) -> list[list[str]]:
    p = plan.constraints.percentile
    return [[row(c, p)[k] for k in COLUMNS] for c in ordered(plan)]


def footnotes(plan: Plan) -> list[str]:
    notes = ["◆ on the latency-vs-accuracy Pareto front of its device"]
    if any(c.accuracy_kind == "agreement" for c in plan.candidates):
        notes.append("* top-1 agreement with the fp32 model of the same checkpoint (no labelled accuracy was "
                     "measured for that artifact)" + ("; the others are accuracies on a labelled held-out set"
                                                     if any(c.accuracy_kind == "accuracy" for c in plan.candidates)
                                                     else ""))
    sets = sorted({c.accuracy_set for c in plan.candidates if c.accuracy_kind == "accuracy" and c.accuracy_set})
    if sets:
        notes.append("accuracy measured on: " + "; ".join(sets))
    return notes + list(plan.notes) + [n for d in plan.devices for n in d.notes]


def _md(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;").replace(
        "\n", " ").replace("`", "'")


def to_markdown(plan: Plan) -> str:
    cons = plan.constraints
    L = ["# Deployment plan", "", f"Constraints: {_md(cons.describe())}; objective: **{cons.objective}**; latency "
         f"at {cons.percentile} per inference call.", ""]
    for d in plan.devices:
        mark = "✅" if d.recommended else "❌"
        L += [f"## {_md(d.device)}", "", f"{mark} {_md(d.reason)}", ""]
        if d.pareto:
            L += ["Pareto front (latency vs accuracy): " + ", ".join(_md(c.label) for c in d.pareto), ""]
    cols = columns(plan)
    right = {"b", "img/s", "params", "FLOPs", "accuracy", "drop pt", "mem MB"}
    L += ["## Candidates", "", "| " + " | ".join(cols) + " |",
          "|" + "|".join("---:" if c in right or c.endswith(" ms") else "---" for c in cols) + "|"]
    L += ["| " + " | ".join(_md(v) for v in r) + " |" for r in rows(plan)]
    L += [""] + [f"- {_md(n)}" for n in footnotes(plan)]
    L += ["", "## Lineage", "", "| candidate | checkpoint sha256 | manifest | profile | export command |",
          "|---|---|---|---|---|"]
    for c in ordered(plan):
        if c.status != "excluded":
            L.append(f"| {_md(c.label)} | `{_md((c.checkpoint_sha256 or '–')[:16])}` | {_md(c.manifest or '–')} | "
                     f"{_md(c.profile or '–')} | `{_md(c.export_command or '–')}` |")
    return "\n".join(L) + "\n"
