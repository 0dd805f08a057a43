"""Rendering shared by the commands that print profile reports (profile, report show/merge)."""

from __future__ import annotations

from partialdeploy.cli.app import out


def profile_table(report: dict):
    """A compact rich table of what was measured + notes (warnings, skipped / not run and why)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from partialdeploy.report.schema import results
    from partialdeploy.report.text import fmt, precision_cell

    rows = results(report)
    multi = any(r.device for r in rows)
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False,
              title=f"{report.get('model', {}).get('name', '?')} on "
              f"{report.get('device') or ', '.join(report.get('environments') or {}) or '?'}"
              + (" [yellow](interrupted: partial)[/]" if report.get("interrupted") else ""), title_justify="left")
    modes = any(r.mode != "latency" for r in rows)  # each row says what it measured when it is not latency
    cols = ((["device"] if multi else []) + ["target", "prec", "b", "p50", "p90", "p99", "img/s", "load", "1st", "MB"]
            + (["mode"] if modes else []))
    t.caption = "latency p50/p90/p99 and first inference (1st) in ms, load in s, peak RSS in MB"
    t.caption_justify = "left"
    for c in cols:
        t.add_column(c, justify="left" if c in ("device", "target", "prec") else "right", no_wrap=c != "device",
                     min_width=8 if c == "device" else None)
    notes: list[str] = []
    missing: dict = {}
    for r in rows:
        lab = r.label(multi)
        lat = r.latency_ms
        if r.measured:
            notes += [f"[yellow]![/] {escape(lab)} b{r.batch}: {escape(w)}" for w in r.warnings or []]
            lb = r.layers
            if lb and lb.get("blocks"):
                notes.append(f"  {escape(lab)} b{lb.get('batch')} slowest blocks: " + ", ".join(
                    f"{b['block']} {b['pct']:.0f}%" for b in lb["blocks"][:4]))
            t.add_row(*([str(r.device)] if multi else []), str(r.target),
                      precision_cell(r), str(r.batch), fmt(lat["p50"], 3), fmt(lat["p90"], 3), fmt(lat["p99"], 3),
                      fmt(r.throughput_ips, 1), f"{r.load_time_s or 0:.2f}",
                      fmt(r.first_inference_ms, 1), fmt((r.memory or {}).get("peak_rss_mb"), 0),
                      *([str(r.mode)] if modes else []))
        else:
            missing.setdefault((lab, r.status, str(r.reason or "")), []).append(str(r.batch))
    for (lab, status, reason), bs in missing.items():
        style = {"skipped": "yellow", "not_run": "dim", "error": "red", "interrupted": "yellow"}.get(status, "yellow")
        notes.append(f"[{style}]{escape(str(status))}[/] {escape(lab)} batch {','.join(bs)}: {escape(reason)}")
    return t, notes


def print_profile(report: dict) -> None:
    t, notes = profile_table(report)
    out.print(t)
    for n in notes:
        out.print(n, soft_wrap=True)


def print_parity(records: list) -> None:
    """One line per gate of a sidecar: its numbers with n and the top-1 agreement as a count."""
    from partialdeploy.records import ParityResult

    for d in records:
        try:
            p = ParityResult.from_dict(d)
        except ValueError as e:
            out.print(f"parity record unreadable: {e}", soft_wrap=True, markup=False)
            continue
        out.print(f"{p.stage}: {p.cell()}" + ("" if p.passed else f" — {p.reason}"), soft_wrap=True, markup=False)
