"""`partialdeploy plan`: which variant × target × precision meets a latency budget on a device."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from partialdeploy.cli.app import app, emit_json, err, fail, out
from partialdeploy.errors import PartialDeployError, UserError, VerificationError

_EPILOG = ("Examples:\n\n  partialdeploy plan dist/*/profile.json --budget 5ms --percentile p90 --max-drop 0.5\n\n"
           "  partialdeploy plan merged.json --device orin --budget 200img/s --objective latency --html plan.html\n\n"
           "  partialdeploy plan --sweep t0.pth t1.pth --targets onnxruntime,openvino --precisions fp32,int8 "
           "--calib images/ --eval labelled/ --budget 3ms -o plan/\n\n"
           "Exit codes: 0 every device has a candidate that meets every constraint, 1 a device has none (the "
           "closest one and what it misses are named), 2 bad input.")


@app.command(epilog=_EPILOG)
def plan(
    inputs: list[Path] = typer.Argument(..., metavar="REPORTS... | CHECKPOINTS...",
                                        help="Profile reports (profile.json, or export directories holding one); "
                                        "with --sweep: checkpoints."),
    budget: Optional[str] = typer.Option(None, "--budget", help="Latency per inference call (5ms, 800us) at "
                                         "--percentile, or throughput (200img/s)."),
    percentile: str = typer.Option("p90", "--percentile", help="p50, p90, p99, mean, min or max."),
    batch: Optional[int] = typer.Option(None, "--batch", "-b", help="Only rows of this batch (with --sweep: "
                                        "the batch exported and profiled; default 1)."),
    device: Optional[str] = typer.Option(None, "--device", help="Only these devices (comma-separated)."),
    max_drop: Optional[str] = typer.Option(None, "--max-drop", help="Accuracy drop vs fp32 of the same "
                                           "checkpoint, in points (0.5)."),
    min_accuracy: Optional[str] = typer.Option(None, "--min-accuracy", help="Measured accuracy (98% or 0.98)."),
    max_size: Optional[str] = typer.Option(None, "--max-size", help="Artifact size (2MB, 1.5MiB, 700kB)."),
    max_memory: Optional[str] = typer.Option(None, "--max-memory", help="Peak resident memory while running "
                                             "(300MB)."),
    objective: str = typer.Option("accuracy", "--objective", help="accuracy (most accurate that fits), latency "
                                  "(fastest) or size (smallest)."),
    exports: Optional[list[Path]] = typer.Option(None, "--export", help="More export directories whose manifests "
                                                 "the rows may come from (default: beside each report, its source)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON (one record per candidate, with "
                                 "its lineage)."),
    md_out: Optional[Path] = typer.Option(None, "--md", help="Write the plan as Markdown."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write a self-contained HTML page (scatter per "
                                            "device, Pareto front, budget line)."),
    sweep: bool = typer.Option(False, "--sweep", help="Export and profile checkpoints × --targets × --precisions "
                               "first (cells already done are reused), then plan."),
    targets: str = typer.Option("onnxruntime,openvino", "--targets", help="With --sweep: targets."),
    precisions: str = typer.Option("fp32,int8", "--precisions", help="With --sweep: precisions."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="With --sweep: calibration images for INT8."),
    eval_dir: Optional[Path] = typer.Option(None, "--eval", help="With --sweep: labelled images (one folder per "
                                            "class): every cell's accuracy is measured on them."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="With --sweep: the sweep directory "
                                          "(cells, plan.json, plan.md, plan.html). Default: plan/."),
    remote: Optional[str] = typer.Option(None, "--remote", help="With --sweep: profile every cell on this device "
                                         "over SSH (an ~/.ssh/config alias or [user@]host[:port]); accuracy is "
                                         "measured here."),
    remote_python: str = typer.Option("python3", "--remote-python", help="With --remote: Python on the device."),
    ssh_config: Optional[Path] = typer.Option(None, "--ssh-config", help="With --remote: ssh_config file."),
    accept_new_host_key: bool = typer.Option(False, "--accept-new-host-key", help="With --remote: accept and "
                                             "record an unknown host key (a changed one is always refused)."),
    runs: int = typer.Option(100, "--runs", help="With --sweep: timed inferences per cell."),
    min_time: float = typer.Option(1.0, "--min-time", help="With --sweep: minimum timed seconds per cell."),
):
    """Answer "what is the best thing I can ship on this device within this budget": every profiled
    row joined to its export manifest, checked against the constraints, the latency-vs-accuracy Pareto
    set marked, one recommendation per device with its reason and runner-up."""
    from partialdeploy.planner import Constraints, make_plan, write_outputs

    try:
        cons = Constraints.from_flags(budget, percentile, batch, device, max_drop, min_accuracy, max_size,
                                      max_memory, objective)
        notes, json_out = [], None
        if sweep:
            result = _sweep(inputs, targets, precisions, quiet=as_json, calib=calib, eval_dir=eval_dir,
                            out_dir=output or Path("plan"), batch=batch or 1, remote=remote,
                            remote_python=remote_python, ssh=_ssh(remote, ssh_config, accept_new_host_key),
                            runs=runs, min_time_s=min_time)
            if not result.reports:
                raise UserError(f"no cell of the sweep could be profiled ({result.summary()}): see {result.path}")
            reports, exports = result.reports, list(exports or []) + result.export_dirs
            md_out, html_out = md_out or result.out_dir / "plan.md", html_out or result.out_dir / "plan.html"
            json_out = result.out_dir / "plan.json"
            notes.append(f"sweep: {result.summary()} (each cell's status and reason: {result.path})")
        elif any(v is not None for v in (calib, eval_dir, output, remote, ssh_config)):
            raise UserError("--calib, --eval, -o, --remote and --ssh-config belong to --sweep (plan from reports "
                            "reads only what was measured)")
        else:
            reports, exports = inputs, list(exports or [])
        result_plan = make_plan(reports, cons, exports)
        result_plan.notes += notes
        written = write_outputs(result_plan, json_path=json_out, md_path=md_out, html_path=html_out)
    except PartialDeployError as e:
        fail(e)
    except OSError as e:
        fail(UserError(f"cannot write the plan: {e}"))
    _finish(result_plan, written, as_json)


def _ssh(remote, ssh_config, accept_new_host_key):
    if not remote:
        return None
    from partialdeploy.cli.remote import ssh_options

    return ssh_options(ssh_config, accept_new_host_key)


def _finish(result_plan, written, as_json: bool) -> None:
    if as_json:
        emit_json(result_plan.to_dict())
    else:
        _print(result_plan)
        for p in written:
            out.print(f"wrote {p}", soft_wrap=True)
    if result_plan.exit_code:
        fail(VerificationError(result_plan.verdict()))


def _sweep(ckpts, targets, precisions, quiet, **kw):
    from rich.markup import escape

    from partialdeploy.planner.sweep import SweepRequest, run_sweep

    req = SweepRequest.from_flags(ckpts, targets, precisions, **kw)
    measure = req.measure()  # a --remote device is reached before any work
    if quiet:
        return run_sweep(req, measure=measure)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("sweep", total=len(req.cells()))

        def progress(done, total, label, cell=None):
            bar.update(task, completed=done, total=total, description=escape(label))
            if cell is not None:
                style = {"ok": "green", "reused": "cyan"}.get(cell.status, "red")
                err.print(f"[{style}]{cell.status}[/] {escape(cell.label)}: {escape(cell.reason)}", soft_wrap=True)

        return run_sweep(req, progress=progress, measure=measure)


def _print(p) -> None:
    """One compact table per device (fits 80 columns), then what each candidate misses and why rows
    were excluded, then the answer per device."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from partialdeploy.planner import render

    short = {"recommended": "★ best", "runner-up": "2nd", "closest": "closest"}
    cons = p.constraints
    for d in p.devices:
        t = Table(box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False, show_edge=False, title_justify="left",
                  title=f"{escape(d.device)}: {escape(cons.describe())}; objective {cons.objective}")
        cols = ["variant", "target/prec", "b", f"{cons.percentile} ms", "img/s", "acc", "drop", "size", "MB", "status"]
        keep = [c for c in cols if (c != "img/s" or (cons.budget and cons.budget.kind == "throughput"))
                and (c != "MB" or cons.max_memory_mb is not None)]
        for c in keep:
            t.add_column(c, justify="left" if c in ("variant", "target/prec", "status") else "right", no_wrap=True)
        notes = []
        mine = [c for c in render.ordered(p) if c.device == d.device]
        for c in (c for c in mine if c.status != "excluded"):
            r = render.row(c, cons.percentile)
            cells = {"variant": r["variant"][:16], "target/prec": f"{c.target}/{c.precision}", "b": r["b"],
                     f"{cons.percentile} ms": r["LAT ms"], "img/s": r["img/s"], "acc": r["accuracy"],
                     "drop": r["drop pt"], "size": r["size"].replace(" ", ""), "MB": r["mem MB"],
                     "status": short.get(c.role or "", c.status) + (" ◆" if c.pareto else "")}
            t.add_row(*(escape(cells[k]) for k in keep),
                      style="bold green" if c.role == "recommended" else "green" if c.status == "fits" else "")
            if c.misses:
                notes.append(f"  {c.label} misses {'; '.join(c.misses)}")
        out.print(t)
        for n in notes:
            out.print(escape(n), soft_wrap=True)
        for c in (c for c in mine if c.status == "excluded"):
            out.print(f"  [dim]excluded {escape(c.label)}: {escape(c.reason or '')}[/]", soft_wrap=True)
        mark = "[green]✓[/]" if d.recommended else "[red]✗[/]"
        out.print(f"{mark} {escape(d.reason)}", soft_wrap=True)
    for n in render.footnotes(p):
        out.print(f"[dim]{escape(n)}[/]", soft_wrap=True)
