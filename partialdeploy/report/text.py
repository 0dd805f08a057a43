"""Numbers and text as the report renderers (terminal, Markdown, HTML, JUnit) write them, and the
percentages flags are given in."""

from __future__ import annotations

import html

from partialdeploy.errors import UserError
from partialdeploy.records import ProfileResult
from partialdeploy.report.schema import is_number, ok_results


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


def env_line(env: dict) -> str:
    """One line naming what a report was measured on: CPU, GPU, OS, Python, threads, runtimes."""
    cpu = env.get("cpu") or {}
    gpus = ", ".join(g.get("name", "?") for g in env.get("gpus") or []) or "none"
    rt = ", ".join(f"{k} {v}" for k, v in (env.get("runtimes") or {}).items())
    return (f"{cpu.get('model', '?')} ({cpu.get('logical_cores', '?')} logical cores), GPU: {gpus}; "
            f"{env.get('os', '?')}, Python {env.get('python', '?')}; "
            f"threads {env.get('threads') or 'runtime default'}; {rt}")


def md_safe(v):
    """Every string of the report as inert Markdown text: no HTML (escaped), no table breaks, one line."""
    if isinstance(v, str):
        return html.escape(v, quote=False).replace("|", "\\|").replace("`", "'").replace("\r", " ").replace("\n", " ")
    if isinstance(v, dict):
        return {md_safe(k): md_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [md_safe(x) for x in v]
    return v


def sustained_rows(report: dict) -> list:
    """(result, verdict line, table rows as text) for every result with a ``--sustained`` run (profile --remote)."""
    out = []
    for r in ok_results(report):
        sus = r.other.get("sustained")
        if not isinstance(sus, dict) or not isinstance(sus.get("windows"), list):
            continue
        rows = [[fmt(w.get(k) if is_number(w.get(k)) else None, nd) for k, nd in
                 (("window", 0), ("end_s", 1), ("runs", 0), ("p50_ms", 3), ("p90_ms", 3), ("temp_max_c", 1),
                  ("cpu_mhz_mean", 0))] for w in sus["windows"] if isinstance(w, dict)]
        out.append((r, f"{sus.get('verdict', '?')} ({sus.get('reason', '')})", rows))
    return out
