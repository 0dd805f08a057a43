"""A profile report as Markdown: environment, the summary table, what was not measured and why,
warnings, per-layer tables, sustained windows. Every string from the report is made inert first."""

from __future__ import annotations

from partialdeploy.report.schema import is_multi_device, ok_results, results
from partialdeploy.report.text import env_line, fmt, md_safe, precision_cell, sustained_rows

_COLUMNS = ["target", "precision", "batch", "p50 ms", "p90 ms", "p99 ms", "mean ± std ms", "min ms", "max ms",
            "img/s", "load s", "first ms", "peak RSS MB", "runs", "mode"]


def to_markdown(report: dict) -> str:
    report = md_safe(report)
    multi = is_multi_device(report)
    L = [f"# Latency report: {report.get('model', {}).get('name', '?')}", ""] + _header(report, multi)
    cols = (["device"] if multi else []) + _COLUMNS
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
    L += _not_measured(report, multi)
    warns = [(r, w) for r in ok_results(report) for w in r.warnings or []]
    if warns:
        L += ["", "Warnings:", ""] + [f"- {r.label(multi)} b{r.batch}: {w}" for r, w in warns]
    L += _per_layer(report, multi)
    for r, verdict, rows in sustained_rows(report):
        L += ["", f"## Sustained: {r.label(multi)} b{r.batch} — {verdict}", "",
              "| window | end s | runs | p50 ms | p90 ms | hottest zone °C | CPU MHz |", "|---:|---:|---:|---:|---:|---:|---:|"]
        L += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(L) + "\n"


def _header(report: dict, multi: bool) -> list[str]:
    s = report.get("settings", {})
    L = []
    if multi:
        L.append("Devices:")
        for d, env in (report.get("environments") or {}).items():
            L.append(f"- **{d}**: {env_line(env)}")
    else:
        L.append(f"Device: **{report.get('device', '?')}** — {env_line(report.get('environment') or {})}")
    warmup = s.get("warmup_time_s") and str(s.get("warmup_time_s")) + " s" or s.get("warmup")
    return L + ["", f"Measured {report.get('created', '?')} · mode {s.get('mode', '?')} · warm-up {warmup} "
                f"per block · {s.get('blocks', '?')} blocks cycled across artifacts · ≥{s.get('runs')} runs and "
                f"≥{s.get('min_time_s')} s" + (" · **interrupted: partial results**" if report.get("interrupted") else ""),
                ""]


def _not_measured(report: dict, multi: bool) -> list[str]:
    others = [r for r in results(report) if r.status != "ok"]
    if not others:
        return []
    L = ["", "Not measured:", ""]
    seen = set()
    for r in others:
        key = (r.device, r.target, r.precision, r.status, r.reason)
        bs = [str(x.batch) for x in others if (x.device, x.target, x.precision, x.status, x.reason) == key]
        if key in seen:
            continue
        seen.add(key)
        L.append(f"- {r.label(multi)} batch {','.join(bs)}: **{r.status}** — {r.reason or ''}")
    return L


def _per_layer(report: dict, multi: bool) -> list[str]:
    L = []
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
    return L
