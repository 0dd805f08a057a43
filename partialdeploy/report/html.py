"""A profile report as one self-contained HTML page: environment, summary table, what was not
measured, warnings and the SVG plots (``svg``). No script, nothing fetched, everything escaped."""

from __future__ import annotations

from partialdeploy.records import ProfileResult
from partialdeploy.report.schema import is_multi_device, ok_results, results
from partialdeploy.report.svg import E, distribution, hbars, lines
from partialdeploy.report.text import env_line, fmt, sustained_rows

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}th,td{border:1px solid #ddd;padding:3px 7px}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.warn{color:#a15c00}.muted{color:#666}code{font-size:12px}svg.plot{display:block;margin:10px 0;max-width:100%;height:auto}
"""
_COLUMNS = ["target", "precision", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "min ms", "max ms",
            "img/s", "load s", "first ms", "peak RSS MB", "runs"]


def to_html(report: dict) -> str:
    multi = is_multi_device(report)
    oks = ok_results(report)
    labels = [f"{r.label(multi)} b{r.batch}" for r in oks]
    name = report.get("model", {}).get("name", "?")
    P = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Latency report: {E(name)}</title>"
         f"<style>{_CSS}</style></head><body>", f"<h1>Latency report: {E(name)}</h1>"]
    P += _header(report, multi)
    P += _summary(report, oks, labels, multi)
    P += _plots(oks, labels, multi)
    for r in results(report):
        if r.layers:
            P += _per_layer(r, r.label(multi))
    for r, verdict, rows in sustained_rows(report):
        P.append(f"<h2>Sustained: {E(r.label(multi))} b{E(str(r.batch))}</h2><p>{E(verdict)}</p><table><tr>"
                 + "".join(f"<th>{c}</th>" for c in ("window", "end s", "runs", "p50 ms", "p90 ms", "hottest zone °C",
                                                     "CPU MHz"))
                 + "</tr>" + "".join("<tr>" + "".join(f"<td class='n'>{E(v)}</td>" for v in row) + "</tr>"
                                     for row in rows) + "</table>")
    P.append("</body></html>")
    return "\n".join(p for p in P if p)


def _header(report: dict, multi: bool) -> list[str]:
    P = []
    if multi:
        P.append("<ul>" + "".join(f"<li><b>{E(d)}</b>: {E(env_line(env))}</li>"
                                  for d, env in (report.get("environments") or {}).items()) + "</ul>")
    else:
        P.append(f"<p>Device <b>{E(str(report.get('device', '?')))}</b>: {E(env_line(report.get('environment') or {}))}</p>")
    s = report.get("settings", {})
    P.append(f"<p class='muted'>{E(str(report.get('created', '')))} · schema {E(str(report.get('schema')))} · mode "
             f"{E(str(s.get('mode')))} · {E(str(s.get('blocks')))} blocks cycled across artifacts, warm-up per block · "
             f"≥{E(str(s.get('runs')))} runs and ≥{E(str(s.get('min_time_s')))} s per case</p>")
    if report.get("interrupted"):
        P.append("<p class='warn'><b>Interrupted: partial results.</b></p>")
    return P


def _summary(report: dict, oks: list[ProfileResult], labels: list[str], multi: bool) -> list[str]:
    """The summary table, the rows not measured (with the reason) and the warnings."""
    cols = (["device"] if multi else []) + _COLUMNS
    P = ["<h2>Summary</h2><table id='summary'><tr>" + "".join(f"<th>{c}</th>" for c in cols) + "</tr>"]
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
    return P


def _plots(oks: list[ProfileResult], labels: list[str], multi: bool) -> list[str]:
    P = ["<h2>Latency distribution</h2>",
         distribution([(lab, r.samples_ms) for r, lab in zip(oks, labels)],
                      "Latency per inference (box p25–p75, line p50, whiskers p1–p99)")]
    series: dict[str, list] = {}
    for r in oks:
        if r.throughput_ips:
            series.setdefault(r.label(multi), []).append((float(r.batch), float(r.throughput_ips)))
    if any(len(v) > 1 for v in series.values()) or len({b for v in series.values() for b, _ in v}) > 1:
        P.append("<h2>Batch scaling</h2>")
        P.append(lines(series, "Throughput vs batch size", "batch size", "images / s"))
    b0 = min((r.batch for r in oks), default=None)
    comp = [(r.label(multi), r.latency_ms["p50"], f"{fmt(r.latency_ms['p50'])} ms") for r in oks if r.batch == b0]
    if comp:
        P.append("<h2>Target comparison</h2>")
        P.append(hbars(comp, "ms", f"p50 latency at batch {b0} (lower is better)"))
    return P


def _per_layer(r: ProfileResult, lab: str) -> list[str]:
    lb = r.layers
    return [f"<h2>Per-layer: {E(lab)}</h2><p class='muted'>{E(str(lb.get('source', '')))}, batch "
            f"{E(str(lb.get('batch')))}, {E(str(lb.get('layer_count')))} layers, {E(fmt(lb.get('total_ms')))} ms summed "
            "(profiling overhead included; relative shares are what matters)</p>",
            hbars([(b["block"], b["time_ms"], f"{b['pct']:.1f}%") for b in lb.get("blocks", [])[:20]], "ms",
                  f"time per block: {lab}"),
            hbars([(t["name"][-48:], t["time_ms"], f"{t['pct']:.1f}% · {t.get('op', '')} · {t['block']}")
                   for t in lb.get("top", [])], "ms", f"top {len(lb.get('top', []))} layers: {lab}")]
