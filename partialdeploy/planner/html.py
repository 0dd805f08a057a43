"""A plan as one self-contained HTML page: per device a latency-vs-accuracy scatter (inline SVG: every
candidate, the Pareto front as a step line, the budget as a dashed line, the recommendation starred),
the reason, and the candidate and lineage tables. No script, no stylesheet or font fetched; every
string from an input is escaped."""

from __future__ import annotations

import html
import math

import partialdeploy.planner.render as render
from partialdeploy.planner.candidates import Candidate
from partialdeploy.planner.decide import DevicePlan, Plan

E = html.escape

COLORS = {"fits": "#2ca02c", "misses": "#ff7f0e", "recommended": "#1f77b4", "front": "#9467bd", "budget": "#d62728"}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 6px}
th{background:#f4f4f4}.muted{color:#666}code{font-size:11px}
svg.plot{display:block;margin:10px 0;max-width:100%;height:auto}
tr.recommended td{background:#e8f1fb;font-weight:bold}tr.excluded td{color:#888}.reason{font-size:15px}
.ok{color:#2ca02c}.bad{color:#d62728}
"""


def _nice_max(v: float) -> float:
    """The axis end: the smallest 1, 2, 2.5, 5 × 10^k at or above ``v``."""
    if v <= 0:
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    return next((m * e for m in (1, 2, 2.5, 5) if v <= m * e), 10 * e)


def _svg(w: int, h: int, body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
            f'aria-label="{E(title)}" class="plot"><title>{E(title)}</title>'
            f'<rect width="{w}" height="{h}" fill="#fff"/>' + "".join(body) + "</svg>")


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    return [lo + (hi - lo) * k / (n - 1) for k in range(n)]


def _y_range(accs: list[float], floor: float | None) -> tuple[float, float]:
    lo = min(accs + ([floor] if floor is not None else []))
    hi = max(accs)
    span = max(hi - lo, 1.0)
    return max(0.0, math.floor(lo - 0.15 * span)), min(100.0, math.ceil(hi + 0.15 * span))


def scatter(d: DevicePlan, plan: Plan, width: int = 760, height: int = 380) -> str:
    """Latency (x, ms at the plan's percentile) vs accuracy (y, %) of the device's candidates."""
    cons = plan.constraints
    pts = [(c, c.latency(cons.percentile), c.accuracy) for c in d.considered]
    pts = [(c, x, 100 * a) for c, x, a in pts if x is not None and a is not None]
    if not pts:
        return ""
    left, right, top, bottom = 64, 200, 34, 46
    pw, ph = width - left - right, height - top - bottom
    budget = cons.budget.value if cons.budget and cons.budget.kind == "latency" else None
    xmax = _nice_max(max([x for _, x, _ in pts] + ([budget * 1.1] if budget else [])) * 1.08)
    floor = 100 * cons.min_accuracy if cons.min_accuracy is not None else None
    ylo, yhi = _y_range([a for _, _, a in pts], floor)

    def X(v):
        return left + pw * min(v, xmax) / xmax

    def Y(v):
        return top + ph * (1 - (v - ylo) / (yhi - ylo))

    title = f"{d.device}: {cons.percentile} latency vs accuracy"
    if cons.budget is not None and cons.budget.kind == "throughput":
        title += f" (budget ≥ {cons.budget.value:g} img/s: not a line on this axis)"
    body = [f'<text x="10" y="20" font-size="14" font-weight="bold">{E(title)}</text>']
    for v in _ticks(0, xmax):
        body.append(f'<line x1="{X(v):.1f}" y1="{top}" x2="{X(v):.1f}" y2="{top + ph}" stroke="#eee"/>'
                    f'<text x="{X(v):.1f}" y="{top + ph + 16}" font-size="11" text-anchor="middle">{v:.3g}</text>')
    for v in _ticks(ylo, yhi):
        body.append(f'<line x1="{left}" y1="{Y(v):.1f}" x2="{left + pw}" y2="{Y(v):.1f}" stroke="#eee"/>'
                    f'<text x="{left - 6}" y="{Y(v) + 4:.1f}" font-size="11" text-anchor="end">{v:.3g}%</text>')
    body.append(f'<text x="{left + pw / 2}" y="{height - 8}" font-size="12" text-anchor="middle">'
                f'{E(cons.percentile)} latency per inference call (ms)</text>'
                f'<text x="16" y="{top + ph / 2}" font-size="12" text-anchor="middle" '
                f'transform="rotate(-90 16 {top + ph / 2})">accuracy (%)</text>')
    if budget is not None:
        body.append(f'<line class="budget" x1="{X(budget):.1f}" y1="{top}" x2="{X(budget):.1f}" y2="{top + ph}" '
                    f'stroke="{COLORS["budget"]}" stroke-width="2" stroke-dasharray="6,4"/>'
                    f'<text x="{X(budget) + 4:.1f}" y="{top + 12}" font-size="11" fill="{COLORS["budget"]}">budget '
                    f'{budget:g} ms</text>')
    if floor is not None:
        body.append(f'<line class="floor" x1="{left}" y1="{Y(floor):.1f}" x2="{left + pw}" y2="{Y(floor):.1f}" '
                    f'stroke="{COLORS["budget"]}" stroke-dasharray="2,3"/>')
    body += _front(d, cons.percentile, X, Y, left + pw)
    placed: list[tuple[float, float]] = []
    body += [_point(c, x, a, X, Y, placed) for c, x, a in sorted(pts, key=lambda p: p[0].role == "recommended")]
    body += _legend(left + pw + 16, top)
    return _svg(width, height, body, title)


def _front(d: DevicePlan, percentile: str, X, Y, x_end: float) -> list[str]:
    """The Pareto front as a step line: from each front point right, then up to the next."""
    pts = [(c.latency(percentile), 100 * c.accuracy) for c in d.pareto]
    if not pts:
        return []
    path = [f"M{X(pts[0][0]):.1f},{Y(pts[0][1]):.1f}"]
    for (_, a0), (x1, a1) in zip(pts, pts[1:]):
        path.append(f"L{X(x1):.1f},{Y(a0):.1f} L{X(x1):.1f},{Y(a1):.1f}")
    path.append(f"L{x_end:.1f},{Y(pts[-1][1]):.1f}")
    return [f'<path class="front" d="{" ".join(path)}" fill="none" stroke="{COLORS["front"]}" stroke-width="2" '
            'stroke-opacity="0.7"/>']


def _point(c: Candidate, x: float, a: float, X, Y, placed: list) -> str:
    col = COLORS["recommended"] if c.role == "recommended" else COLORS.get(c.status, "#888")
    tip = E(f"{c.label}: {x:.3g} ms, {a:.2f}% ({c.status}{'; ' + '; '.join(c.misses) if c.misses else ''})")
    lx, ly = X(x) + 8, Y(a) - 6
    while any(abs(lx - px) < 150 and abs(ly - py) < 12 for px, py in placed):  # keep labels apart
        ly += 13
    placed.append((lx, ly))
    label = f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="10" fill="#333">{E(c.label[:40])}</text>'
    if c.role == "recommended":
        cx, cy = X(x), Y(a)
        star = " ".join(f"{cx + r * math.sin(k * math.pi / 5):.1f},{cy - r * math.cos(k * math.pi / 5):.1f}"
                        for k, r in zip(range(10), [9, 4] * 5))
        return f'<polygon class="point recommended" points="{star}" fill="{col}"><title>{tip}</title></polygon>' + label
    ring = f' stroke="{COLORS["front"]}" stroke-width="2"' if c.pareto else ""
    return (f'<circle class="point {E(c.status)}" cx="{X(x):.1f}" cy="{Y(a):.1f}" r="5" fill="{col}"{ring}>'
            f'<title>{tip}</title></circle>' + label)


def _legend(x: float, y: float) -> list[str]:
    items = [("recommended", "recommended ★"), ("fits", "meets every constraint"), ("misses", "misses a constraint"),
             ("front", "Pareto front"), ("budget", "budget")]
    return [f'<rect x="{x}" y="{y + 18 * i}" width="12" height="12" fill="{COLORS[k]}"/>'
            f'<text x="{x + 18}" y="{y + 18 * i + 10}" font-size="11">{E(t)}</text>' for i, (k, t) in enumerate(items)]


def _table(plan: Plan) -> str:
    cols = render.columns(plan)
    head = "".join(f"<th>{E(c)}</th>" for c in cols)
    body = []
    for c, cells in zip(render.ordered(plan), render.rows(plan)):
        cls = "recommended" if c.role == "recommended" else c.status
        body.append(f'<tr class="{E(cls)}">' + "".join(f"<td>{E(v)}</td>" for v in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _lineage(plan: Plan) -> str:
    rows = [f"<tr><td>{E(c.label)}</td><td><code>{E((c.checkpoint_sha256 or '–')[:16])}</code></td>"
            f"<td>{E(c.manifest or '–')}</td><td>{E(c.profile or '–')}</td><td><code>{E(c.export_command or '–')}"
            "</code></td></tr>" for c in render.ordered(plan) if c.status != "excluded"]
    return ("<table><tr><th>candidate</th><th>checkpoint sha256</th><th>manifest</th><th>profile</th>"
            f"<th>export command</th></tr>{''.join(rows)}</table>")


def to_html(plan: Plan) -> str:
    cons = plan.constraints
    parts = [f"<h1>Deployment plan</h1><p>Constraints: {E(cons.describe())}; objective <b>{E(cons.objective)}</b>; "
             f"latency at {E(cons.percentile)} per inference call.</p>"]
    for d in plan.devices:
        mark = '<b class="ok">✓</b>' if d.recommended else '<b class="bad">✗</b>'
        parts.append(f"<h2>{E(d.device)}</h2><p class=\"reason\">{mark} {E(d.reason)}</p>")
        parts.append(scatter(d, plan) or '<p class="muted">no candidate with both latency and accuracy to plot</p>')
    parts.append("<h2>Candidates</h2>" + _table(plan))
    parts.append("<ul>" + "".join(f"<li class=\"muted\">{E(n)}</li>" for n in render.footnotes(plan)) + "</ul>")
    parts.append("<h2>Lineage</h2>" + _lineage(plan))
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Deployment plan</title>"
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>")
