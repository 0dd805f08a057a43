"""Command line: parse, call the library, render. No logic of its own.

Exit codes: 0 ok, 1 parity/verification failure, 2 bad input or usage.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from partialdeploy import __version__
from partialdeploy.backends import runtime_names, suffixes, target_names
from partialdeploy.errors import PartialDeployError, first_line

app = typer.Typer(
    name="partialdeploy",
    help=(
        "Deploy PartialNet / PATNet / FasterNet checkpoints: deploy-form rewrite, ONNX, ONNX Runtime, "
        "OpenVINO, TensorRT, CoreML; every step proven by parity; latency reports.\n\n"
        "Examples:\n\n"
        "  partialdeploy inspect ckpt.ckpt\n\n"
        "  partialdeploy export --target onnx ckpt.ckpt -o dist/\n\n"
        "  partialdeploy export --target all --precision int8 --calib images/ ckpt.ckpt\n\n"
        "  partialdeploy profile dist/ --batch 1,8\n\n"
        "Exit codes: 0 ok, 1 parity/verification failure, 2 bad input or usage."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def _version(value: bool):
    if value:
        out.print(f"partialdeploy {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")):
    pass


def fail(e: PartialDeployError) -> None:
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
    raise typer.Exit(e.exit_code)


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# ---- commands are registered below; each one: parse -> call library -> render ----


# === export / inspect (issue 2) ===

CKPT_HELP = "Checkpoint (.ckpt Lightning, .pth/.pt state_dict, .safetensors). Default: the bundled demo."


def _fmt_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


@app.command(epilog="Examples:\n\n  partialdeploy export                      # the bundled demo -> dist/\n\n"
             "  partialdeploy export --target onnx ckpt.ckpt -o dist/\n\n"
             "  partialdeploy export --target all --precision int8 --calib images/ ckpt.pth\n\n"
             "  partialdeploy export --profile tensorrt-jetson-orin-fp16 ckpt.pth")
def export(
    checkpoint: Optional[Path] = typer.Argument(None, help=CKPT_HELP, show_default=False),
    target: Optional[list[str]] = typer.Option(None, "--target", "-t", help=f"{', '.join(target_names())} or all "
                                               "(repeat or comma-separate). Default: onnx."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="fp32, fp16, bf16 "
                                            "(OpenVINO, CPUs with bf16 units) or int8. Default: fp32."),
    output: Path = typer.Option(Path("dist"), "--output", "-o", help="Export directory (gets manifest.json)."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="Static input size (multiple of 32). "
                                           "Default: from the checkpoint, else 224."),
    dynamic_batch: Optional[bool] = typer.Option(None, "--dynamic-batch/--static-batch",
                                                 help="Dynamic batch dimension (default static)."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Static batch size (default 1)."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Folder of calibration images for INT8 "
                                         "(default for the demo: its bundled images)."),
    calib_count: Optional[int] = typer.Option(None, "--calib-count", help="Max calibration images (default 100)."),
    calib_seed: int = typer.Option(0, "--calib-seed", help="Seed of the calibration subset (recorded in the "
                                   "manifest with its file list and hash)."),
    eval_dir: Optional[Path] = typer.Option(None, "--eval", help="INT8: labelled images, one sub-folder per class "
                                            "(ImageFolder); the gate becomes an accuracy drop (class order from the "
                                            "checkpoint's labels when present)."),
    variant: Optional[str] = typer.Option(None, "--variant", help="e.g. partialnet-t0, fasternet-s: what the weights "
                                          "cannot tell."),
    act: Optional[str] = typer.Option(None, "--act", help="gelu or relu (not stored in the weights)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Target profile name (see profiles/) or YAML path; "
                                          "explicit flags override it."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (13-20)."),
    fallback: bool = typer.Option(True, "--fallback/--no-fallback", help="INT8: when plain quantization misses "
                                  "the gate, keep the most sensitive blocks in float until it holds (default)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable result on stdout."),
):
    """Checkpoint -> deploy form -> ONNX -> target artifacts, each proven by a parity gate.

    Exit codes: 0 ok, 1 a parity gate failed, 2 bad input / unavailable runtime."""
    from partialdeploy.pipeline import ExportRequest, command_line, run_export

    try:
        req = ExportRequest.from_flags(
            profile=profile, fallback=fallback, checkpoint=checkpoint, targets=tuple(target or ()),
            precision=precision, out_dir=output, img_size=img_size, dynamic_batch=dynamic_batch, batch=batch,
            calib=calib, calib_count=calib_count, calib_seed=calib_seed, eval_dir=eval_dir, variant=variant,
            act=act, opset=opset, command=command_line())
        if as_json:
            res = run_export(req)
        else:
            from rich.markup import escape

            with err.status("exporting…") as st:
                def progress(stage: str, msg: str):
                    st.update(f"{stage}…")
                    mark = ("[red]✗[/]" if "FAILED" in msg else "[yellow]–[/]" if msg.startswith("skipped")
                            else "[green]✓[/]")
                    err.print(f"{mark} [bold]{stage}[/]: {escape(msg)}", soft_wrap=True)
                res = run_export(req, progress)
    except PartialDeployError as e:
        fail(e)
    if as_json:
        emit_json({"exit_code": res.exit_code, "model": res.spec.to_dict(), "notes": res.notes,
                   "stages": [{**vars(s), "parity": s.parity.to_dict() if s.parity else None} for s in res.stages],
                   "onnx": res.onnx_info, "artifacts": [a.to_dict() for a in res.artifacts],
                   "failures": res.failures, "skipped": res.skipped,
                   "manifest": str(res.manifest_path) if res.manifest_path else None})
    else:
        from rich.markup import escape
        from rich.table import Table

        for n in res.notes:
            err.print(f"[dim]note: {n}[/]", soft_wrap=True)
        t = Table(title=f"{res.spec.name} → {res.out_dir}", title_justify="left")
        for c in ("target", "precision", "artifact", "verified", "parity"):
            t.add_column(c)
        for a in res.artifacts:
            ps = a.parity[-1].cell() if a.parity else "–"
            t.add_row(a.target, a.precision, a.path, a.verified, ps)
        for f in res.failures:
            t.add_row(f["target"], f["precision"], "[red]failed[/]", f["kind"], escape(f["error"][:160]))
        for s in res.skipped:
            t.add_row(s["target"], s["precision"], "[yellow]skipped[/]", "", escape(s["reason"][:160]))
        out.print(t)
        for a in res.artifacts:  # INT8 blocks kept in float, gate before/after, latency cost
            for n in a.notes:
                if n.startswith("INT8 fallback"):
                    out.print(f"{a.target} int8: {escape(n)}", soft_wrap=True)
        for f in res.failures:
            if len(f["error"]) > 160:
                err.print(f"[red]{f['target']} {f['precision']}:[/] {escape(f['error'])}", soft_wrap=True)
        if res.manifest_path:
            out.print(f"manifest: {res.manifest_path}")
    raise typer.Exit(res.exit_code)


@app.command(epilog="Examples:\n\n  partialdeploy inspect ckpt.ckpt\n\n"
             "  partialdeploy inspect model.pth --variant fasternet-t0 --json")
def inspect(
    checkpoint: Optional[Path] = typer.Argument(None, help=CKPT_HELP, show_default=False),
    variant: Optional[str] = typer.Option(None, "--variant", help="e.g. partialnet-t0, fasternet-s."),
    act: Optional[str] = typer.Option(None, "--act", help="gelu or relu."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="Input size for FLOPs and the iRPE bias."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable result on stdout."),
):
    """What is inside a checkpoint: architecture, what folds and what stays (and why), params/FLOPs
    before → after the deploy rewrite."""
    from partialdeploy.analysis import inspect_checkpoint

    try:
        r = inspect_checkpoint(checkpoint, variant=variant, act=act, img_size=img_size)
    except PartialDeployError as e:
        fail(e)
    if as_json:
        emit_json(r)
        return
    from rich.markup import escape
    from rich.table import Table

    a = r["architecture"]
    out.print(f"[bold]{a['name']}[/]  ({r['format']}, sha256 {r['sha256'][:12]}…)")
    out.print(f"{r['summary']}, input {r['img_size']}²")
    for n in r["notes"]:
        out.print(f"[dim]note: {n}[/]")
    if r["dropped_prefixes"]:
        out.print(f"[dim]ignored non-model weights under: {', '.join(r['dropped_prefixes'])}[/]")
    if r["dpconv_splits"]:
        out.print("DPConv learned splits: " + ", ".join(f"{k}={v}" for k, v in r["dpconv_splits"].items()))
    t = Table(title="deploy rewrite per block type", title_justify="left")
    for c in ("block", "count", "folds", "stays (why)"):
        t.add_column(c, overflow="fold")
    for b in r["blocks"]:
        t.add_row(b["kind"], str(b["count"]), escape(b["folds"]), escape(b["stays"]))
    out.print(t)
    p, f, bn = r["params"], r["flops"], r["batchnorm"]
    out.print(f"params {_fmt_count(p['before'])} → {_fmt_count(p['after'])}   "
              f"FLOPs {_fmt_count(f['before'])} → {_fmt_count(f['after'])}   "
              f"BatchNorm {bn['before']} → {bn['after']}")



# === profile / report (issue 4) ===

def _pct_or_fraction(text: str) -> float:
    from partialdeploy.report import parse_threshold

    return parse_threshold(text)


def _profile_table(report: dict):
    """A compact rich table of what was measured + notes (warnings, skipped / not run and why)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from partialdeploy.report import fmt, precision_cell, results

    rows = results(report)
    multi = any(r.device for r in rows)
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), pad_edge=False,
              title=f"{report.get('model', {}).get('name', '?')} on "
              f"{report.get('device') or ', '.join(report.get('environments') or {}) or '?'}"
              + (" [yellow](interrupted: partial)[/]" if report.get("interrupted") else ""), title_justify="left")
    cols = (["device"] if multi else []) + ["target", "prec", "b", "p50", "p90", "p99", "img/s", "load", "1st", "MB"]
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
                      fmt(r.first_inference_ms, 1), fmt((r.memory or {}).get("peak_rss_mb"), 0))
        else:
            missing.setdefault((lab, r.status, str(r.reason or "")), []).append(str(r.batch))
    for (lab, status, reason), bs in missing.items():
        style = {"skipped": "yellow", "not_run": "dim", "error": "red", "interrupted": "yellow"}.get(status, "")
        notes.append(f"[{style}]{status}[/] {escape(lab)} batch {','.join(bs)}: {escape(reason)}")
    return t, notes


def _print_profile(report: dict) -> None:
    t, notes = _profile_table(report)
    out.print(t)
    for n in notes:
        out.print(n, soft_wrap=True)


@app.command(epilog="Examples:\n\n  partialdeploy profile dist/ --batch 1,8,32 --threads 4\n\n"
             "  partialdeploy profile model.xml --target openvino --mode throughput\n\n"
             "  partialdeploy profile dist/ --runs 500 --min-time 10 --blocks 5 -o baseline.json")
def profile(
    source: Path = typer.Argument(..., help="Export directory (with manifest.json), a manifest, or one model file "
                                  f"({', '.join(suffixes())}) or TensorRT bundle directory."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Runtime for a single file ("
                                         f"{', '.join(runtime_names())}); for a directory: only this target."),
    batch: str = typer.Option("1", "--batch", "-b", help="Batch sizes, comma-separated (e.g. 1,8,32)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads (default: the runtime's choice)."),
    mode: str = typer.Option("latency", "--mode", help="latency (one request at a time) or throughput "
                             "(OpenVINO: AsyncInferQueue with several requests in flight)."),
    warmup: int = typer.Option(10, "--warmup", help="Warm-up inferences per block."),
    warmup_time: Optional[float] = typer.Option(None, "--warmup-time", help="Warm up for this many seconds per block "
                                                "instead of a count."),
    runs: Optional[int] = typer.Option(100, "--runs",
                                       help="Timed inferences per case (over all blocks); 0 = no count."),
    min_time: Optional[float] = typer.Option(1.0, "--min-time", help="Minimum timed seconds per case (with --runs: "
                                             "both must be reached); 0 = no minimum."),
    max_time: Optional[float] = typer.Option(120.0, "--max-time", help="Cap on timed seconds per case (0 = none)."),
    blocks: int = typer.Option(3, "--blocks", help="Timed blocks per case, cycled across all artifacts, each with "
                               "its own warm-up."),
    layers: bool = typer.Option(True, "--layers/--no-layers", help="Per-layer pass with the runtime's profiler."),
    top: int = typer.Option(10, "--top", help="Top-N layers to keep."),
    cv_threshold: str = typer.Option("10%", "--cv-threshold", help="Warn when the coefficient of variation "
                                     "exceeds this."),
    device: Optional[str] = typer.Option(None, "--device-name", help="Label for this machine in merged reports "
                                         "(default: hostname + CPU/GPU model)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Report JSON (default: DIR/profile.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report JSON on stdout."),
):
    """Latency of every artifact this machine can run: warm-up, timed blocks, p50/p90/p99, throughput,
    load and first-inference time, peak memory, per-layer breakdown. Writes a JSON report (also when
    interrupted with Ctrl-C: what was measured is kept).

    Exit codes: 0 ok, 1 an artifact failed to load or run, 2 bad input / runtime unavailable, 130 interrupted."""
    from partialdeploy.profiling import Profiler, Settings, default_report_path, exit_code, parse_batches

    try:
        settings = Settings(batches=parse_batches(batch), threads=threads, mode=mode.lower(), warmup=warmup,
                            warmup_time_s=warmup_time or None, runs=runs or None, min_time_s=min_time or None,
                            max_time_s=max_time or None, blocks=blocks, layers=layers, top=top,
                            cv_threshold=_pct_or_fraction(cv_threshold))
        out_path = output or default_report_path(source)
        if as_json:
            prof = Profiler(source, settings, target, out_path, device=device)
            report = prof.run()
        else:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          TimeElapsedColumn(), console=err, transient=True) as bar:
                task = bar.add_task("profiling", total=None)

                def progress(done, total, label):
                    bar.update(task, completed=done, total=total, description=label)

                prof = Profiler(source, settings, target, out_path, progress=progress, device=device)
                report = prof.run()
    except PartialDeployError as e:
        fail(e)
    if as_json:
        emit_json(report)
    else:
        _print_profile(report)
        out.print(f"report: {out_path}  (render: partialdeploy report {out_path} --html report.html)", soft_wrap=True)
    if report.get("interrupted"):
        err.print(f"interrupted: partial results written to {out_path}")
        raise typer.Exit(130)
    if report.get("summary", {}).get("ok", 0) == 0 and not report.get("summary", {}).get("error"):
        err.print("note: nothing could run on this machine (see the reasons above)")
    raise typer.Exit(exit_code(report))


from typer.core import TyperGroup as _TyperGroup  # noqa: E402


class _ReportGroup(_TyperGroup):
    """``partialdeploy report PROFILE.json ...`` runs ``report show``; ``report compare`` and
    ``report merge`` are subcommands."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


report_app = typer.Typer(
    cls=_ReportGroup, no_args_is_help=True, add_completion=False,
    help="Render, compare and merge profile reports.\n\n"
         "  partialdeploy report dist/profile.json --html report.html --md report.md\n\n"
         "  partialdeploy report compare baseline.json new.json --max-regression 10%   # exit 1 on regression\n\n"
         "  partialdeploy report merge a.json b.json -o merged.json")
app.add_typer(report_app, name="report")


@report_app.command("show")
def report_show(
    profile_json: Path = typer.Argument(..., metavar="PROFILE.json", help="Report from `partialdeploy profile`."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write a self-contained HTML page with plots."),
    md_out: Optional[Path] = typer.Option(None, "--md", help="Write a Markdown report."),
):
    """Print a report as a table; optionally write HTML and Markdown (the default subcommand:
    `partialdeploy report PROFILE.json` is `partialdeploy report show PROFILE.json`)."""
    from partialdeploy import report as rp

    try:
        data = rp.load(profile_json)
        if html_out:
            html_out.parent.mkdir(parents=True, exist_ok=True)
            html_out.write_text(rp.to_html(data), encoding="utf-8")
        if md_out:
            md_out.parent.mkdir(parents=True, exist_ok=True)
            md_out.write_text(rp.to_markdown(data), encoding="utf-8")
    except PartialDeployError as e:
        fail(e)
    except OSError as e:
        from partialdeploy.errors import UserError

        fail(UserError(f"cannot write the report: {e}"))
    _print_profile(data)
    for p in (html_out, md_out):
        if p:
            out.print(f"wrote {p}")


@report_app.command("compare")
def report_compare(
    baseline: Path = typer.Argument(..., help="Baseline report JSON."),
    new: Path = typer.Argument(..., help="New report JSON."),
    max_regression: str = typer.Option("10%", "--max-regression", help="Allowed p50 increase (10% or 0.1)."),
    metric: str = typer.Option("p50", "--metric", help="p50, p90, p99 or mean."),
    md_out: Optional[Path] = typer.Option(None, "--md", help="Write the comparison as Markdown."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
):
    """Compare latency per target/precision/batch; exit 1 when any got slower than allowed."""
    from partialdeploy import report as rp
    from partialdeploy.errors import UserError

    try:
        if metric not in ("p50", "p90", "p99", "mean"):
            raise UserError(f"--metric must be p50, p90, p99 or mean, got {metric!r}")
        cmp = rp.compare(rp.load(baseline), rp.load(new), rp.parse_threshold(max_regression), metric)
        if md_out:
            md_out.write_text(rp.comparison_markdown(cmp), encoding="utf-8")
        if as_json:
            emit_json(cmp)
        else:
            from rich.table import Table

            t = Table(title=f"{new} vs {baseline} ({metric}, max regression {100 * cmp['max_regression']:.0f}%)",
                      title_justify="left")
            for c in ("device", "target", "precision", "batch", "base ms", "new ms", "change", "status"):
                t.add_column(c, justify="right" if c in ("batch", "base ms", "new ms", "change") else "left")
            for r in cmp["rows"]:
                styled = {"regression": "[red]regression[/]", "improved": "[green]improved[/]"}
                st = styled.get(r["status"], r["status"])
                t.add_row(r["device"] or "", str(r["target"]), str(r["precision"]), str(r["batch"]),
                          "–" if r["base_ms"] is None else f"{r['base_ms']:.3f}",
                          "–" if r["new_ms"] is None else f"{r['new_ms']:.3f}",
                          "–" if r["change"] is None else f"{100 * r['change']:+.1f}%", st)
            out.print(t)
        rp.check_comparison(cmp)
    except PartialDeployError as e:
        fail(e)


@report_app.command("merge")
def report_merge(
    reports: list[Path] = typer.Argument(..., help="Reports to merge (e.g. one per device)."),
    output: Path = typer.Option(..., "--output", "-o", help="Merged report JSON."),
    name: Optional[list[str]] = typer.Option(None, "--name", help="Device label per input, in order (default: the "
                                             "label stored in each report)."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Also write the merged HTML page."),
):
    """Join reports from several devices into one report (and one table)."""
    from partialdeploy import report as rp

    try:
        merged = rp.merge([(str(p), rp.load(p)) for p in reports], list(name) if name else None)
        rp.save(merged, output)
        if html_out:
            html_out.write_text(rp.to_html(merged), encoding="utf-8")
    except PartialDeployError as e:
        fail(e)
    _print_profile({**merged, "device": ", ".join(merged["environments"])})
    for w in merged.get("warnings", []):
        err.print(f"[yellow]warning:[/] {w}")
    out.print(f"merged {len(reports)} reports -> {output}")

# === end profile / report (issue 4) ===


# === build-engine (issue 3) ===

@app.command("build-engine", epilog="Examples:\n\n  partialdeploy build-engine dist/tensorrt/fp16\n\n"
             "  partialdeploy build-engine dist/tensorrt/int8 --workspace 2048")
def build_engine_cmd(
    bundle: Path = typer.Argument(..., help="TensorRT bundle directory from `partialdeploy export --target tensorrt`."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="fp32, fp16 or int8 (default: the "
                                            "bundle's)."),
    workspace: Optional[int] = typer.Option(None, "--workspace", help="Builder workspace memory pool in MB "
                                            "(default: the bundle's)."),
    any_tensorrt: bool = typer.Option(False, "--any-tensorrt", help="Build even when the bundle's profile "
                                      "expects the other TensorRT generation (10 vs 11)."),
    as_json: bool = typer.Option(False, "--json", help="Print the engine sidecar JSON on stdout."),
):
    """Build the TensorRT engine of a bundle on this GPU (TensorRT 10 or 11 Python API; the precision is
    in model.onnx: strongly typed fp16 / Q/DQ INT8, built with STRONGLY_TYPED on 10, as is on 11; timing
    cache reused), prove it by parity against the bundled reference and write model.engine +
    model.engine.json. Needs TensorRT + an NVIDIA GPU, not torch.

    Exit codes: 0 ok, 1 the parity gate failed, 2 bad bundle / no TensorRT or GPU here."""
    from partialdeploy.tensorrt_build import build_engine

    try:
        side = build_engine(bundle, precision=precision, workspace_mb=workspace, any_tensorrt=any_tensorrt,
                            progress=None if as_json else (lambda m: err.print(m, soft_wrap=True, markup=False)))
    except PartialDeployError as e:
        fail(e)
    if as_json:
        emit_json(side)
        return
    for p in side.get("parity", []):
        out.print(f"{p['stage']}: cos {p['cosine_min']:.6f}, rel {p['rel_max']:.2g}, "
                  f"top-1 {100 * p['top1_agree']:.1f}%",
                  soft_wrap=True, markup=False)
    out.print(f"engine: {bundle / 'model.engine'} (TensorRT {side['tensorrt_version']}, {side['gpu']}, "
              f"sm {side['compute_capability']}, {side['precision']}, built in {side['build_seconds']} s)",
              soft_wrap=True, markup=False)

# === end build-engine (issue 3) ===


# === diff (issue 10) ===

@app.command("diff", epilog="Examples:\n\n  partialdeploy diff ckpt.pth dist/openvino/int8/model.xml\n\n"
             "  partialdeploy diff ckpt.pth dist/ --target onnxruntime --precision int8 --images photos/\n\n"
             "  partialdeploy diff dist/onnx/fp32/model.onnx dist/openvino/fp32/model.xml --json")
def diff_cmd(
    ref: Path = typer.Argument(..., help="Reference: checkpoint (train form), .onnx, OpenVINO .xml or export dir."),
    cand: Path = typer.Argument(..., help="Candidate: the same kinds as REF."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of real images (default: the demo's "
                                          "held-out digits for the demo model, else bundled photographs)."),
    count: int = typer.Option(16, "--count", help="How many images."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Artifact of an export dir: onnx, "
                                         "onnxruntime, openvino or tensorrt (its ONNX, run in ONNX Runtime)."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="Artifact of an export dir: fp32, "
                                            "fp16 or int8."),
    ref_target: Optional[str] = typer.Option(None, "--ref-target", help="Artifact of REF when it is an export "
                                             "dir (default: --target)."),
    ref_precision: Optional[str] = typer.Option(None, "--ref-precision", help="Precision of REF's artifact."),
    cosine: Optional[float] = typer.Option(None, "--cosine-min", help="Per-block cosine tolerance (default by "
                                           "CAND precision: fp32 0.9999, fp16 0.999, int8 0.98)."),
    rel: Optional[float] = typer.Option(None, "--rel-max", help="Per-block max|Δ| / range tolerance (fp32 1e-3, "
                                        "fp16 1e-2, int8 0.5)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads."),
    variant: Optional[str] = typer.Option(None, "--variant", help="For checkpoints: what the weights cannot tell."),
    as_json: bool = typer.Option(False, "--json", help='{"first_divergent": ..., "blocks": [...]} on stdout.'),
):
    """Run REF and CAND on the same real images with every block boundary exposed (patch_embed,
    stages.N.blocks.M, merging layers stages.N, head) and name the first block whose output leaves
    the tolerance.

    Exit codes: 0 they agree, 1 they part, 2 bad input."""
    from partialdeploy.diff import run_diff

    try:
        res = run_diff(ref, cand, images=images, count=count, target=target, precision=precision,
                       ref_target=ref_target, ref_precision=ref_precision, cosine_min=cosine, rel_max=rel,
                       threads=threads, variant=variant)
    except PartialDeployError as e:
        fail(e)
    if as_json:
        emit_json(res.to_dict())
        raise typer.Exit(res.exit_code)
    from rich.markup import escape
    from rich.table import Table

    for n in res.notes:
        err.print(f"[dim]note: {escape(n)}[/]", soft_wrap=True)
    tol = res.tolerance
    t = Table(title=f"REF {escape(res.ref['input'])} ({res.ref['runtime']}) vs CAND {escape(res.cand['input'])} "
              f"({res.cand['runtime']}, {res.cand['precision']}) on {escape(res.image_source)}",
              title_justify="left")
    for c in ("block", "cosine min", "cosine mean", "rel max|Δ|", ""):
        t.add_column(c)
    for b in res.blocks:
        mark = "" if b.within else ("[red]← first to leave tolerance[/]" if b.block == res.first_divergent
                                    else "[red]out[/]")
        t.add_row(b.block, f"{b.cosine_min:.6f}", f"{b.cosine_mean:.6f}", f"{b.rel_max:.3g}", mark)
    out.print(t)
    out.print(f"top-1 agreement of the logits: {100 * res.top1_agreement:.1f}%  (tolerance: cosine ≥ "
              f"{tol['cosine_min']:g}, rel max|Δ| ≤ {tol['rel_max']:g}, top-1 ≥ {100 * tol['top1_min']:.0f}%)")
    if res.agree:
        out.print("[green]they agree[/] at every block boundary")
    elif res.first_divergent:
        out.print(f"[red]they part at {res.first_divergent}[/]")
    else:
        out.print("[red]they part[/]: every block within tolerance but top-1 agreement is below it")
    raise typer.Exit(res.exit_code)

# === end diff (issue 10) ===


def main() -> None:
    from partialdeploy import safety

    safety.install_signal_handlers()  # SIGTERM/SIGHUP (CI cancel, timeout) are handled like Ctrl-C
    try:
        try:
            app()
        except SystemExit as e:  # typer turns any KeyboardInterrupt into exit 130: a SIGTERM exits 143
            sig = safety.received()
            if e.code == 130 and sig not in (None, signal.SIGINT):
                raise safety.Terminated(sig) from None
            raise
    except PartialDeployError as e:  # pragma: no cover - commands catch their own
        err.print(f"error: {e}")
        sys.exit(e.exit_code)
    except safety.Terminated as e:
        err.print(f"terminated by {e}: stopped cleanly, nothing half-written was kept")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as e:  # a bug, not bad input: still one line unless asked for the traceback
        import os

        if os.environ.get("PARTIALDEPLOY_DEBUG"):
            raise
        err.print(f"internal error: {type(e).__name__}: {first_line(e)} "
                  "(set PARTIALDEPLOY_DEBUG=1 for the traceback and please report it)", soft_wrap=True, markup=False)
        sys.exit(3)
