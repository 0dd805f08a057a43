"""`partialdeploy profile`: latency of every artifact this machine can run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from partialdeploy.cli.app import app, emit_json, err, fail, out
from partialdeploy.backends import runtime_names, suffixes
from partialdeploy.cli.render import print_profile
from partialdeploy.errors import PartialDeployError, UserError


@app.command(epilog="Examples:\n\n  partialdeploy profile dist/ --batch 1,8,32 --threads 4\n\n"
             "  partialdeploy profile model.xml --target openvino --mode throughput\n\n"
             "  partialdeploy profile dist/ --runs 500 --min-time 10 --blocks 5 -o baseline.json\n\n"
             "  partialdeploy profile dist/ --remote jetson --remote pi@10.0.0.7 --sustained 5m")
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
    remote: Optional[list[str]] = typer.Option(None, "--remote", help="Profile on this device over SSH instead "
                                               "(an ~/.ssh/config alias or [user@]host[:port]; repeat for several: "
                                               "one report with a device column). Default report: "
                                               "DIR/profile-remote.json."),
    remote_python: str = typer.Option("python3", "--remote-python", help="Python on the device (needs numpy + the "
                                      "runtime)."),
    ssh_config: Optional[Path] = typer.Option(None, "--ssh-config", help="ssh_config to use instead of "
                                              "~/.ssh/config."),
    accept_new_host_key: bool = typer.Option(False, "--accept-new-host-key", help="Accept and record an unknown "
                                             "host key (a changed one is always refused)."),
    sustained: Optional[str] = typer.Option(None, "--sustained", help="With --remote: also run each case for this "
                                            "long (e.g. 5m), reported per window, with a throttling verdict."),
    cooldown: float = typer.Option(0.0, "--cooldown", help="With --remote: seconds to pause after each timed "
                                   "block and before each sustained case."),
    remote_timeout: Optional[str] = typer.Option(None, "--remote-timeout", help="With --remote: stop the job on a "
                                                 "device after this long (default 2h plus the --sustained time); "
                                                 "what was measured is kept, exit 1."),
):
    """Latency of every artifact this machine can run: warm-up, timed blocks, p50/p90/p99, throughput,
    load and first-inference time, peak memory, per-layer breakdown. Writes a JSON report (also when
    interrupted with Ctrl-C: what was measured is kept).

    Exit codes: 0 ok, 1 an artifact failed to load or run, 2 bad input / runtime unavailable / nothing
    measured (an existing report is then kept), 130 interrupted."""
    from partialdeploy.profiling.settings import Settings, parse_batches
    from partialdeploy.report.text import parse_threshold

    try:
        settings = Settings(batches=parse_batches(batch), threads=threads, mode=mode.lower(), warmup=warmup,
                            warmup_time_s=warmup_time or None, runs=runs or None, min_time_s=min_time or None,
                            max_time_s=max_time or None, blocks=blocks, layers=layers, top=top,
                            cv_threshold=parse_threshold(cv_threshold, "--cv-threshold"))
        if not remote and (sustained or cooldown or ssh_config or accept_new_host_key or remote_timeout):
            raise UserError("--sustained, --cooldown, --ssh-config, --accept-new-host-key and --remote-timeout go "
                            "with --remote HOST")
    except PartialDeployError as e:
        fail(e)
    if remote:
        from partialdeploy.cli.remote import profile_remote_cmd

        profile_remote_cmd(source, settings, target, remote, remote_python, ssh_config, accept_new_host_key,
                           sustained, cooldown, output, as_json, remote_timeout)
    try:
        rep = _run(source, settings, target, output, device, as_json)
    except PartialDeployError as e:
        fail(e)
    _conclude(rep, as_json)


def _run(source, settings, target, output: Optional[Path], device, as_json: bool):
    """``partialdeploy.profile`` (a progress bar on stderr unless --json); returns its ProfileReport."""
    from partialdeploy import api

    kw = {k: getattr(settings, k) for k in ("batches", "threads", "mode", "warmup", "warmup_time_s", "runs",
                                            "min_time_s", "max_time_s", "blocks", "layers", "top", "cv_threshold")}
    kw.update(out=output, target=target, device=device, check=False)
    if as_json:
        return api.profile(source, **kw)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task("profiling", total=None)

        def progress(stage, info):
            bar.update(task, completed=info["done"], total=info["total"], description=info["case"])

        return api.profile(source, on_event=progress, **kw)


def _conclude(rep, as_json: bool) -> None:
    """Print the report (or its JSON), say where it is, and exit with its code (130 when interrupted)."""
    report, out_path, code = rep.data, rep.path, rep.exit_code
    kept = f"{out_path} was kept as it was" if out_path.exists() else "no report was written"
    where = f"report: {out_path}" if rep.written else f"nothing measured: {kept}"
    if as_json:
        emit_json(report)
    else:
        print_profile(report)
        out.print(f"{where}  (render: partialdeploy report {out_path} --html report.html)" if rep.written else where,
                  soft_wrap=True)
    if report.get("interrupted"):
        import signal

        from partialdeploy import safety

        msg = f"partial results written to {out_path}" if rep.written else where
        if safety.received() in (None, signal.SIGINT):  # a SIGTERM gets its one line from main()
            err.print(f"interrupted: {msg}", soft_wrap=True, markup=False)
        raise typer.Exit(130)
    if code == 2:
        err.print("[bold red]error:[/] nothing was measured: every case was skipped or cannot run on this machine "
                  f"(the reasons are above){'' if rep.written else '; ' + kept}", soft_wrap=True)
    raise typer.Exit(code)
