"""Profile reports: load/validate the JSON (schema ``partialdeploy.profile/1``), render Markdown and
a self-contained HTML page (inline SVG drawn here; no script, nothing fetched), compare two
reports (regression gate) and merge reports from several devices into one.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from partialdeploy.errors import UserError
from partialdeploy.records import ProfileResult

SCHEMA = "partialdeploy.profile/1"
SCHEMA_PREFIX = "partialdeploy.profile/"
MAX_REPORT_BYTES = 256 << 20


# ---------------------------------------------------------------- load

def load(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "profile.json"
    try:
        if p.stat().st_size > MAX_REPORT_BYTES:
            raise UserError(f"{p} is larger than {MAX_REPORT_BYTES >> 20} MiB: not a profile report")
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no such profile report: {p}") from None
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{p} is not a readable JSON report: {str(e)[:160]}") from None
    data = validate(data, str(p))
    from partialdeploy.verify import verify_profiled_artifacts

    verify_profiled_artifacts(data, p)  # inside an export dir: the measured artifacts are still the exported ones
    return data


def validate(data, where: str = "report") -> dict:
    if not isinstance(data, dict) or not isinstance(data.get("schema"), str):
        raise UserError(f"{where} is not a partialdeploy profile report (no schema field)")
    schema = data["schema"]
    if not schema.startswith(SCHEMA_PREFIX):
        raise UserError(f"{where} has schema {schema!r}, expected {SCHEMA!r}")
    if schema != SCHEMA:
        raise UserError(f"{where} has schema {schema!r}; this partialdeploy reads {SCHEMA!r} (upgrade it)")
    if not isinstance(data.get("results"), list):
        raise UserError(f"{where} has no results list")
    problem = _structure_problem(data)
    if problem:
        raise UserError(f"{where} is malformed ({problem}): not a report written by `partialdeploy profile`")
    return data


def _num(v, none_ok: bool = True) -> bool:
    if v is None:
        return none_ok
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _structure_problem(data: dict) -> str | None:
    """What a renderer would trip over, as text (None when the report is well-formed). Values that are
    only printed may be anything (they are escaped); numbers that are computed with must be numbers."""
    for key in ("model", "settings", "environment", "environments", "tool"):
        if not isinstance(data.get(key) or {}, dict):
            return f"{key} is not a mapping"
    if not all(isinstance(v, dict) for v in (data.get("environments") or {}).values()):
        return "environments holds a non-mapping"
    for i, r in enumerate(data["results"]):
        try:
            ProfileResult.from_dict(r)  # the numbers a renderer computes with are numbers
        except ValueError as e:
            msg = str(e)
            return f"results[{i}]{' ' if msg.startswith('is ') else '.'}{msg}"
    return None


def parse_threshold(text: str | float, flag: str = "--max-regression") -> float:
    """'10%' -> 0.10, '0.1' -> 0.10, '10' -> 0.10 (numbers above 1 are percents). ``flag`` is the option
    the value came from, named in the error."""
    s = str(text).strip()
    try:
        v = float(s.rstrip("%"))
    except ValueError:
        raise UserError(f"{flag} takes a percentage like 10% or a fraction like 0.1, got {text!r}") from None
    v = v / 100 if s.endswith("%") or v > 1 else v
    if not 0 <= v < 100:
        raise UserError(f"{flag} must be >= 0, got {text!r}")
    return v


def results(report: dict) -> list[ProfileResult]:
    """The result rows of a (validated) report, typed."""
    return [ProfileResult.from_dict(r) for r in report.get("results", [])]


def ok_results(report: dict) -> list[ProfileResult]:
    return [r for r in results(report) if r.measured]


def _devices(report: dict) -> list[str]:
    devs = [r.device for r in results(report) if r.device]
    return list(dict.fromkeys(devs)) or [report.get("device", "?")]


def _multi(report: dict) -> bool:
    return len(_devices(report)) > 1


def precision_cell(r: ProfileResult) -> str:
    """Artifact precision plus the precision the runtime reported computing in (read back)."""
    cp = r.compute_precision
    return f"{r.precision} [{cp}]" if cp else str(r.precision)


def fmt(v, nd: int = 2) -> str:
    """A number as a table cell: '–' for None, thousands separators, 2 significant digits when tiny."""
    if v is None:
        return "–"
    if isinstance(v, float):
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        return f"{v:.{nd}f}" if abs(v) >= 0.01 or v == 0 else f"{v:.2g}"
    return str(v)


# ---------------------------------------------------------------- markdown

def _env_line(env: dict) -> str:
    cpu = env.get("cpu") or {}
    gpus = ", ".join(g.get("name", "?") for g in env.get("gpus") or []) or "none"
    rt = ", ".join(f"{k} {v}" for k, v in (env.get("runtimes") or {}).items())
    return (f"{cpu.get('model', '?')} ({cpu.get('logical_cores', '?')} logical cores), GPU: {gpus}; "
            f"{env.get('os', '?')}, Python {env.get('python', '?')}; threads {env.get('threads') or 'runtime default'}; {rt}")


def md_safe(v):
    """Every string of the report as inert Markdown text: no HTML (escaped), no table breaks, one line."""
    if isinstance(v, str):
        return html.escape(v, quote=False).replace("|", "\\|").replace("`", "'").replace("\r", " ").replace("\n", " ")
    if isinstance(v, dict):
        return {md_safe(k): md_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [md_safe(x) for x in v]
    return v


def to_markdown(report: dict) -> str:
    report = md_safe(report)
    multi = _multi(report)
    s = report.get("settings", {})
    L = [f"# Latency report: {report.get('model', {}).get('name', '?')}", ""]
    if multi:
        L.append("Devices:")
        for d, env in (report.get("environments") or {}).items():
            L.append(f"- **{d}**: {_env_line(env)}")
    else:
        L.append(f"Device: **{report.get('device', '?')}** — {_env_line(report.get('environment') or {})}")
    L += ["", f"Measured {report.get('created', '?')} · mode {s.get('mode', '?')} · warm-up {s.get('warmup_time_s') and str(s.get('warmup_time_s')) + ' s' or s.get('warmup')} "
          f"per block · {s.get('blocks', '?')} blocks cycled across artifacts · ≥{s.get('runs')} runs and ≥{s.get('min_time_s')} s"
          + (" · **interrupted: partial results**" if report.get("interrupted") else ""), ""]
    cols = (["device"] if multi else []) + ["target", "precision", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ± std ms",
                                            "min ms", "max ms", "img/s", "load s", "first ms", "peak RSS MB", "runs",
                                            "mode"]
    L.append("| " + " | ".join(cols) + " |")
    L.append("|" + "|".join("---" if c in ("device", "target", "precision") else "---:" for c in cols) + "|")
    for r in ok_results(report):
        lat = r.latency_ms
        mem = (r.memory or {}).get("peak_rss_mb")
        row = ([r.device or ""] if multi else []) + [
            str(r.target), precision_cell(r), str(r.batch), fmt(lat["p50"]), fmt(lat["p90"]),
            fmt(lat["p99"]), f"{fmt(lat['mean'])} ± {fmt(lat['std'])}", fmt(lat["min"]), fmt(lat["max"]),
            fmt(r.throughput_ips, 1), fmt(r.load_time_s, 3), fmt(r.first_inference_ms), fmt(mem, 1),
            str(r.runs), str(r.mode)]
        L.append("| " + " | ".join(row) + " |")
    others = [r for r in results(report) if r.status != "ok"]
    if others:
        L += ["", "Not measured:", ""]
        seen = set()
        for r in others:
            key = (r.device, r.target, r.precision, r.status, r.reason)
            bs = [str(x.batch) for x in others if (x.device, x.target, x.precision, x.status, x.reason) == key]
            if key in seen:
                continue
            seen.add(key)
            L.append(f"- {r.label(multi)} batch {','.join(bs)}: **{r.status}** — {r.reason or ''}")
    warns = [(r, w) for r in ok_results(report) for w in r.warnings or []]
    if warns:
        L += ["", "Warnings:", ""] + [f"- {r.label(multi)} b{r.batch}: {w}" for r, w in warns]
    for r in results(report):
        lb = r.layers
        if not lb:
            continue
        L += ["", f"## Per-layer: {r.label(multi)} (batch {lb.get('batch')}, {lb.get('source', '')}, "
                  f"{lb.get('layer_count')} layers, {fmt(lb.get('total_ms'))} ms summed)", "",
              "| block | ms | % |", "|---|---:|---:|"]
        L += [f"| {b['block']} | {fmt(b['time_ms'], 3)} | {b['pct']:.1f} |" for b in lb.get("blocks", [])[:12]]
        L += ["", "| top layer | op | block | ms | % |", "|---|---|---|---:|---:|"]
        L += [f"| `{t['name'][:90]}` | {t.get('op', '')} | {t['block']}{'*' if t.get('block_inferred') else ''} | "
              f"{fmt(t['time_ms'], 3)} | {t['pct']:.1f} |" for t in lb.get("top", [])]
    for r, verdict, rows in _sustained(report):
        L += ["", f"## Sustained: {r.label(multi)} b{r.batch} — {verdict}", "",
              "| window | end s | runs | p50 ms | p90 ms | hottest zone °C | CPU MHz |", "|---:|---:|---:|---:|---:|---:|---:|"]
        L += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(L) + "\n"


def _sustained(report: dict) -> list:
    """(result, verdict line, table rows as text) for every result with a ``--sustained`` run (profile --remote)."""
    out = []
    for r in ok_results(report):
        sus = r.other.get("sustained")
        if not isinstance(sus, dict) or not isinstance(sus.get("windows"), list):
            continue
        rows = [[fmt(w.get(k) if _num(w.get(k)) else None, nd) for k, nd in
                 (("window", 0), ("end_s", 1), ("runs", 0), ("p50_ms", 3), ("p90_ms", 3), ("temp_max_c", 1),
                  ("cpu_mhz_mean", 0))] for w in sus["windows"] if isinstance(w, dict)]
        out.append((r, f"{sus.get('verdict', '?')} ({sus.get('reason', '')})", rows))
    return out


# ---------------------------------------------------------------- SVG plots

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


def _hbars(items: list[tuple[str, float, str]], unit: str, title: str, width: int = 760) -> str:
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


def _distribution(cases: list[tuple[str, list]], title: str, width: int = 760) -> str:
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


def _lines(series: dict[str, list[tuple[float, float]]], title: str, xlabel: str, ylabel: str, width: int = 760) -> str:
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


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 7px}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.warn{color:#a15c00}.muted{color:#666}code{font-size:12px}svg.plot{display:block;margin:10px 0;max-width:100%;height:auto}
"""


def to_html(report: dict) -> str:
    multi = _multi(report)
    oks = ok_results(report)
    labels = [f"{r.label(multi)} b{r.batch}" for r in oks]
    name = report.get("model", {}).get("name", "?")
    P = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Latency report: {E(name)}</title>"
         f"<style>{_CSS}</style></head><body>", f"<h1>Latency report: {E(name)}</h1>"]
    if multi:
        P.append("<ul>" + "".join(f"<li><b>{E(d)}</b>: {E(_env_line(env))}</li>"
                                  for d, env in (report.get("environments") or {}).items()) + "</ul>")
    else:
        P.append(f"<p>Device <b>{E(str(report.get('device', '?')))}</b>: {E(_env_line(report.get('environment') or {}))}</p>")
    s = report.get("settings", {})
    P.append(f"<p class='muted'>{E(str(report.get('created', '')))} · schema {E(str(report.get('schema')))} · mode "
             f"{E(str(s.get('mode')))} · {E(str(s.get('blocks')))} blocks cycled across artifacts, warm-up per block · "
             f"≥{E(str(s.get('runs')))} runs and ≥{E(str(s.get('min_time_s')))} s per case</p>")
    if report.get("interrupted"):
        P.append("<p class='warn'><b>Interrupted: partial results.</b></p>")
    # table
    cols = (["device"] if multi else []) + ["target", "precision", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms",
                                            "std ms", "min ms", "max ms", "img/s", "load s", "first ms", "peak RSS MB", "runs"]
    P.append("<h2>Summary</h2><table id='summary'><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>")
    for r in oks:
        lat = r.latency_ms
        vals = ([r.device if r.device is not None else ""] if multi else []) + [r.target, r.precision, r.batch]
        nums = [lat["p50"], lat["p90"], lat["p99"], lat["mean"], lat["std"], lat["min"], lat["max"],
                r.throughput_ips, r.load_time_s, r.first_inference_ms, (r.memory or {}).get("peak_rss_mb"), r.runs]
        P.append("<tr>" + "".join(f"<td>{E(str(v))}</td>" for v in vals)
                 + "".join(f"<td class='n'>{E(fmt(v))}</td>" for v in nums) + "</tr>")
    P.append("</table>")
    others = [r for r in results(report) if r.status != "ok"]
    if others:
        P.append("<h2>Not measured</h2><ul>" + "".join(
            f"<li>{E(r.label(multi))} batch {E(str(r.batch))}: <b>{E(str(r.status))}</b> — "
            f"{E(str(r.reason or ''))}</li>" for r in others) + "</ul>")
    warns = [(lab, w) for r, lab in zip(oks, labels) for w in r.warnings or []]
    if warns:
        P.append("<ul class='warn'>" + "".join(f"<li>{E(lab)}: {E(w)}</li>" for lab, w in warns) + "</ul>")
    # plots
    P.append("<h2>Latency distribution</h2>")
    P.append(_distribution([(lab, r.samples_ms) for r, lab in zip(oks, labels)],
                           "Latency per inference (box p25–p75, line p50, whiskers p1–p99)"))
    series: dict[str, list] = {}
    for r in oks:
        if r.throughput_ips:
            series.setdefault(r.label(multi), []).append((float(r.batch), float(r.throughput_ips)))
    if any(len(v) > 1 for v in series.values()) or len({b for v in series.values() for b, _ in v}) > 1:
        P.append("<h2>Batch scaling</h2>")
        P.append(_lines(series, "Throughput vs batch size", "batch size", "images / s"))
    b0 = min((r.batch for r in oks), default=None)
    comp = [(r.label(multi), r.latency_ms["p50"], f"{fmt(r.latency_ms['p50'])} ms") for r in oks if r.batch == b0]
    if comp:
        P.append("<h2>Target comparison</h2>")
        P.append(_hbars(comp, "ms", f"p50 latency at batch {b0} (lower is better)"))
    for r in results(report):
        lb = r.layers
        if not lb:
            continue
        lab = r.label(multi)
        P.append(f"<h2>Per-layer: {E(lab)}</h2><p class='muted'>{E(str(lb.get('source', '')))}, batch "
                 f"{E(str(lb.get('batch')))}, {E(str(lb.get('layer_count')))} layers, {E(fmt(lb.get('total_ms')))} ms summed "
                 "(profiling overhead included; relative shares are what matters)</p>")
        P.append(_hbars([(b["block"], b["time_ms"], f"{b['pct']:.1f}%") for b in lb.get("blocks", [])[:20]], "ms",
                        f"time per PartialNet block: {lab}"))
        P.append(_hbars([(t["name"][-48:], t["time_ms"], f"{t['pct']:.1f}% · {t.get('op', '')} · {t['block']}")
                         for t in lb.get("top", [])], "ms", f"top {len(lb.get('top', []))} layers: {lab}"))
    for r, verdict, rows in _sustained(report):
        P.append(f"<h2>Sustained: {E(r.label(multi))} b{E(str(r.batch))}</h2><p>{E(verdict)}</p><table><tr>"
                 + "".join(f"<th>{c}</th>" for c in ("window", "end s", "runs", "p50 ms", "p90 ms", "hottest zone °C",
                                                     "CPU MHz"))
                 + "</tr>" + "".join("<tr>" + "".join(f"<td class='n'>{E(v)}</td>" for v in row) + "</tr>"
                                     for row in rows) + "</table>")
    P.append("</body></html>")
    return "\n".join(p for p in P if p)


# ---------------------------------------------------------------- compare / merge

def compare(base: dict, new: dict, max_regression: float, metric: str = "p50", **kw) -> dict:
    """The regression gate (``regression.compare``: fails closed on missing cases, other models, …)."""
    from partialdeploy import regression

    return regression.compare(base, new, max_regression, metric, **kw)


def check_comparison(cmp: dict) -> None:
    from partialdeploy import regression

    regression.check(cmp)


def merge(reports: list[tuple[str, dict]], device_names: list[str] | None = None) -> dict:
    """Join reports (from several devices) into one: every result carries its ``device``; each
    device's environment is kept under ``environments``."""
    if not reports:
        raise UserError("merge needs at least one report")
    out = {"schema": SCHEMA, "tool": reports[0][1].get("tool"), "created": max(r.get("created", "") for _, r in reports),
           "merged_from": [], "model": reports[0][1].get("model", {}), "settings": reports[0][1].get("settings", {}),
           "environments": {}, "complete": all(r.get("complete", True) for _, r in reports),
           "interrupted": any(r.get("interrupted") for _, r in reports), "results": []}
    names = set()
    for i, (src, r) in enumerate(reports):
        models = {r.get("model", {}).get("name"), out["model"].get("name")}
        if len(models) > 1:
            out.setdefault("warnings", []).append(f"{src} profiles model {r.get('model', {}).get('name')!r}, not "
                                                  f"{out['model'].get('name')!r}")
        envs = r.get("environments") or {r.get("device", src): r.get("environment") or {}}
        for res in results(r):
            dev = (device_names[i] if device_names and i < len(device_names) else None) or res.device \
                or r.get("device") or src
            env = envs.get(res.device or r.get("device"), r.get("environment") or {})
            res.device = dev
            out["results"].append(res.to_dict())
            names.add(dev)
            out["environments"].setdefault(dev, env)
        out["merged_from"].append({"source": src, "device": r.get("device"), "created": r.get("created")})
    return out


def save(report: dict, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(report, indent=1, default=str))
    return p


def comparison_markdown(cmp: dict) -> str:
    from partialdeploy import regression

    return regression.to_markdown(cmp)
