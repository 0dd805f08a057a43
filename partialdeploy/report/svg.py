"""The plots of the HTML report as inline SVG drawn here (no script, nothing fetched; every label
escaped): horizontal bars, latency box plots, a line chart over batch sizes."""

from __future__ import annotations

import html
import math

from partialdeploy.report.text import fmt

PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
E = html.escape


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1.0
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * e:
            return m * e
    return 10 * e


def _svg(w: int, h: int, body: list[str], title: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
            f'aria-label="{E(title)}" class="plot"><title>{E(title)}</title>'
            f'<rect width="{w}" height="{h}" fill="#fff"/>' + "".join(body) + "</svg>")


def hbars(items: list[tuple[str, float, str]], unit: str, title: str, width: int = 760) -> str:
    """Horizontal bars: (label, value, annotation)."""
    if not items:
        return ""
    lw, bh, gap, top = 300, 18, 6, 28
    h = top + len(items) * (bh + gap) + 30
    vmax = _nice_max(max(v for _, v, _ in items))
    pw = width - lw - 90
    body = [f'<text x="10" y="18" font-size="14" font-weight="bold">{E(title)}</text>']
    for k in range(5):
        x = lw + pw * k / 4
        body.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{h - 26}" stroke="#ddd"/>'
                    f'<text x="{x:.1f}" y="{h - 12}" font-size="11" text-anchor="middle">{fmt(vmax * k / 4)}</text>')
    body.append(f'<text x="{width - 10}" y="{h - 12}" font-size="11" text-anchor="end">{E(unit)}</text>')
    for i, (lab, v, ann) in enumerate(items):
        y = top + i * (bh + gap)
        bw = max(1.0, pw * v / vmax)
        body.append(f'<text x="{lw - 6}" y="{y + bh - 5}" font-size="11" text-anchor="end">{E(lab[:48])}</text>'
                    f'<rect class="bar" x="{lw}" y="{y}" width="{bw:.1f}" height="{bh}" fill="{PALETTE[i % 10]}">'
                    f'<title>{E(lab)}: {fmt(v, 3)} {E(unit)}</title></rect>'
                    f'<text x="{lw + bw + 4:.1f}" y="{y + bh - 5}" font-size="11">{E(ann)}</text>')
    return _svg(width, h, body, title)


def distribution(cases: list[tuple[str, list]], title: str, width: int = 760) -> str:
    """Box plot per case, given as (label, samples in ms): p25-p75 box, p50 line, whiskers p1-p99, dots
    beyond, on a log-free linear axis."""
    import numpy as np

    cases = [(lab, sm) for lab, sm in cases if sm]
    if not cases:
        return ""
    lw, rh, top = 300, 30, 28
    h = top + len(cases) * rh + 34
    allv = np.concatenate([np.asarray(sm, float) for _, sm in cases])
    lo, hi = 0.0, _nice_max(float(np.percentile(allv, 99.5)) * 1.05)
    pw = width - lw - 30

    def X(v):
        return lw + pw * (min(max(v, lo), hi) - lo) / (hi - lo)

    body = [f'<text x="10" y="18" font-size="14" font-weight="bold">{E(title)}</text>']
    for k in range(5):
        x = lw + pw * k / 4
        body.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{h - 28}" stroke="#ddd"/>'
                    f'<text x="{x:.1f}" y="{h - 14}" font-size="11" text-anchor="middle">{fmt(hi * k / 4)} ms</text>')
    for i, (label, samples) in enumerate(cases):
        s = np.asarray(samples, float)
        p1, p25, p50, p75, p99 = np.percentile(s, [1, 25, 50, 75, 99])
        y = top + i * rh
        cy = y + rh / 2 - 2
        col = PALETTE[i % 10]
        body.append(f'<text x="{lw - 6}" y="{cy + 4:.1f}" font-size="11" text-anchor="end">{E(label[:48])}</text>')
        body.append(f'<line x1="{X(p1):.1f}" y1="{cy:.1f}" x2="{X(p99):.1f}" y2="{cy:.1f}" stroke="{col}"/>')
        body.append(f'<rect class="box" x="{X(p25):.1f}" y="{cy - 8:.1f}" width="{max(1, X(p75) - X(p25)):.1f}" height="16" '
                    f'fill="{col}" fill-opacity="0.35" stroke="{col}"><title>{E(label)}: p25 {p25:.3f}, p50 '
                    f'{p50:.3f}, p75 {p75:.3f}, p99 {p99:.3f} ms ({len(s)} samples)</title></rect>')
        body.append(f'<line x1="{X(p50):.1f}" y1="{cy - 9:.1f}" x2="{X(p50):.1f}" y2="{cy + 9:.1f}" stroke="#000" stroke-width="2"/>')
        out = s[(s > p99) | (s < p1)][:60]
        body += [f'<circle cx="{X(v):.1f}" cy="{cy:.1f}" r="1.8" fill="{col}"/>' for v in out]
    return _svg(width, h, body, title)


def lines(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str, width: int = 760) -> str:
    """Line chart; x on a log2 axis (batch sizes)."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    left, right, top, bottom = 70, 220, 30, 40
    h = 300
    pw, ph = width - left - right, h - top - bottom
    xs = sorted({p[0] for p in pts})
    lx = [math.log2(x) for x in xs]
    xmin, xmax = min(lx), max(lx) if max(lx) > min(lx) else min(lx) + 1
    ymax = _nice_max(max(p[1] for p in pts) * 1.05)

    def X(x):
        return left + pw * (math.log2(x) - xmin) / (xmax - xmin) if len(xs) > 1 else left + pw / 2

    def Y(y):
        return top + ph * (1 - y / ymax)

    body = [f'<text x="10" y="18" font-size="14" font-weight="bold">{E(title)}</text>']
    for k in range(5):
        y = top + ph * k / 4
        body.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + pw}" y2="{y:.1f}" stroke="#ddd"/>'
                    f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{fmt(ymax * (1 - k / 4), 0)}</text>')
    for x in xs:
        body.append(f'<text x="{X(x):.1f}" y="{top + ph + 16}" font-size="11" text-anchor="middle">'
                    f'{int(x) if float(x).is_integer() else fmt(x)}</text>')
    body.append(f'<text x="{left + pw / 2}" y="{h - 6}" font-size="11" text-anchor="middle">{E(xlabel)}</text>'
                f'<text x="14" y="{top + ph / 2}" font-size="11" transform="rotate(-90 14 {top + ph / 2})" '
                f'text-anchor="middle">{E(ylabel)}</text>')
    for i, (name, s) in enumerate(series.items()):
        col = PALETTE[i % 10]
        s = sorted(s)
        d = " ".join(f"{'M' if j == 0 else 'L'}{X(x):.1f},{Y(y):.1f}" for j, (x, y) in enumerate(s))
        body.append(f'<path class="series" d="{d}" fill="none" stroke="{col}" stroke-width="2"/>')
        body += [f'<circle cx="{X(x):.1f}" cy="{Y(y):.1f}" r="3.5" fill="{col}"><title>{E(name)} batch {int(x)}: '
                 f'{fmt(y, 1)}</title></circle>' for x, y in s]
        ly = top + 14 + 18 * i
        body.append(f'<rect x="{left + pw + 14}" y="{ly - 9}" width="12" height="12" fill="{col}"/>'
                    f'<text x="{left + pw + 32}" y="{ly + 1}" font-size="11">{E(name[:30])}</text>')
    return _svg(width, h, body, title)
