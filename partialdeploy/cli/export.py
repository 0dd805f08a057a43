"""`partialdeploy export`: checkpoint -> verified artifacts + manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from partialdeploy.cli.app import CKPT_HELP, app, command_line, emit_json, err, fail, out
from partialdeploy.backends import target_names
from partialdeploy.errors import PartialDeployError


TUNE_ON_HELP = ("Time the forms on this device over SSH instead (an ~/.ssh/config alias or [user@]host[:port], "
                "as profile --remote); they are still built and gated here.")
PYTHON_HELP = "Python on the device (needs numpy + the runtime)."
CONFIG_HELP = "ssh_config to use instead of ~/.ssh/config."
ACCEPT_HELP = "accept and record an unknown host key (a changed one is always refused)."
TIMEOUT_HELP = ("With --tune-on: stop the timing job on the device after this long (default 10m per target); the "
                "artifact is then kept as exported, the tuning recorded as not done.")


@app.command(epilog="Examples:\n\n  partialdeploy export                      # the bundled demo -> dist/\n\n"
             "  partialdeploy export --target onnx ckpt.ckpt -o dist/\n\n"
             "  partialdeploy export --target all --precision int8 --calib images/ ckpt.pth\n\n"
             "  partialdeploy export --profile tensorrt-jetson-orin-fp16 ckpt.pth\n\n"
             "  partialdeploy export --target openvino --precision int8 --tune-on pi@10.0.0.7")
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
    check_images: Optional[Path] = typer.Option(None, "--check-images", help="Folder of your own (unlabelled) images "
                                                "the parity gates judge on. Default: 1 in 5 of --calib held out of "
                                                "calibration, else stock photos (named in the output)."),
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
    bundle_wheel: Optional[Path] = typer.Option(None, "--bundle-wheel", exists=True, dir_okay=False,
                                                help="TensorRT: carry this partialdeploy wheel (make dist) in the "
                                                "bundle, to pip install on the device."),
    int8_exclude: Optional[str] = typer.Option(None, "--int8-exclude", metavar="BLOCK[,BLOCK]",
                                               help="INT8: blocks to keep in float from the start (official block "
                                               "names, see inspect), e.g. stages.1.blocks.0,head."),
    md_out: Optional[Path] = typer.Option(None, "--md", help="Write the parity gates as a Markdown table (e.g. "
                                          "$GITHUB_STEP_SUMMARY)."),
    junit_out: Optional[Path] = typer.Option(None, "--junit", help="Write the parity gates as JUnit XML for CI "
                                             "test reporters (one test case per target x precision x batch)."),
    tune_budget: Optional[float] = typer.Option(None, "--tune-budget", help="Seconds the export may spend timing "
                                                "each artifact's correct forms on this machine (and INT8 against "
                                                "fp32), keeping the fastest that passes the gate; 0 turns it off. "
                                                "Default 5."),
    tune_on: Optional[str] = typer.Option(None, "--tune-on", metavar="HOST", help=TUNE_ON_HELP),
    remote_python: str = typer.Option("python3", "--remote-python", help=f"With --tune-on: {PYTHON_HELP}"),
    ssh_config: Optional[Path] = typer.Option(None, "--ssh-config", help=f"With --tune-on: {CONFIG_HELP}"),
    accept_new_host_key: bool = typer.Option(False, "--accept-new-host-key", help=f"With --tune-on: {ACCEPT_HELP}"),
    remote_timeout: Optional[str] = typer.Option(None, "--remote-timeout", help=TIMEOUT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable result on stdout."),
):
    """Checkpoint -> deploy form -> ONNX -> target artifacts, each proven by a parity gate.

    Exit codes: 0 ok, 1 a parity gate failed, 2 bad input / unavailable runtime."""
    from partialdeploy import api

    try:
        device = _tune_device(tune_on, remote_python, ssh_config, accept_new_host_key, remote_timeout)
    except PartialDeployError as e:
        fail(e)
    args = dict(checkpoint=checkpoint, targets=tuple(target or ()), precision=precision, out=output,
                img_size=img_size, batch=batch, dynamic_batch=dynamic_batch, variant=variant, act=act,
                eval_dir=eval_dir, calib=calib, calib_count=calib_count, calib_seed=calib_seed,
                check_images=check_images, profile=profile, fallback=fallback, int8_exclude=int8_exclude,
                tune_budget=tune_budget, tune_on=device, bundle_wheel=bundle_wheel, opset=opset, check=False,
                command=command_line())
    try:
        res = api.export(**args) if as_json else _with_progress(api.export, args)
    except PartialDeployError as e:
        if junit_out:
            msg = str(e)
            _junit(junit_out, lambda j: j.error_suite("partialdeploy export", msg))
        fail(e)
    _ci_files(res, junit_out, md_out)
    if as_json:
        emit_json(res.data)
    else:
        _table(res, output)
    raise typer.Exit(res.exit_code)


def _tune_device(host, python, ssh_config, accept_new, timeout):
    """``--tune-on`` and its SSH options (shared with ``profile --remote``), or None."""
    from partialdeploy.errors import UserError

    if host is None:
        if python != "python3" or ssh_config or accept_new or timeout:
            raise UserError("--remote-python, --ssh-config, --accept-new-host-key and --remote-timeout go with "
                            "--tune-on HOST")
        return None
    from partialdeploy.cli.remote import ssh_options
    from partialdeploy.remote.tune import TuneDevice

    return TuneDevice(host, python, ssh_options(ssh_config, accept_new, timeout))


def _with_progress(export, args: dict):
    """``export(**args)`` with each stage printed on stderr as it finishes (✓ / – skipped / ✗ failed)."""
    from rich.markup import escape

    with err.status("exporting…") as st:
        def progress(stage: str, info: dict):
            msg = info["message"]
            st.update(f"{stage}…")
            mark = ("[red]✗[/]" if "FAILED" in msg else "[yellow]–[/]" if msg.startswith("skipped")
                    else "[green]✓[/]")
            err.print(f"{mark} [bold]{stage}[/]: {escape(msg)}", soft_wrap=True)
        return export(**args, on_event=progress)


def _ci_files(res, junit_out: Path | None, md_out: Path | None) -> None:
    """``--junit`` and ``--md``: the parity gates as JUnit XML and as a Markdown table."""
    if junit_out:
        _junit(junit_out, lambda j: j.export_suite(res, res.batch))
    if md_out:
        from partialdeploy.report import junit

        try:
            md_out.write_text(junit.suite_markdown(junit.export_suite(res, res.batch)), encoding="utf-8")
        except OSError as e:
            from partialdeploy.errors import UserError

            fail(UserError(f"cannot write {md_out}: {e.strerror}"))


def _table(res, output: Path) -> None:
    """The human summary: notes, one row per artifact / failure / skip, what the INT8 fallback and the
    measured selection chose, the manifest."""
    from rich.markup import escape
    from rich.table import Table

    from partialdeploy.records import Artifact, TargetFailure

    arts = [Artifact.from_dict(a) for a in res.data["artifacts"]]
    failures = [TargetFailure.from_dict(f) for f in res.data["failures"]]
    said_below = {n for a in arts for n in a.notes}  # printed with the table
    for n in res.notes:
        if n not in said_below:
            err.print(f"[dim]note: {escape(n)}[/]", soft_wrap=True)
    t = Table(title=f"{res.model} → {output}", title_justify="left")
    for c in ("target", "precision", "artifact", "verified", "parity"):
        t.add_column(c)
    for a in arts:
        ps = a.gate.cell() if a.gate else "– (not run here)"  # never another artifact's numbers
        t.add_row(a.target, a.precision, a.path, a.verified, ps)
    for f in failures:
        t.add_row(f.target, f.precision, "[red]failed[/]", f.kind, escape(f.error[:160]))
    for s in res.skipped:
        t.add_row(s.target, s.precision, "[yellow]skipped[/]", "", escape(s.message[:160]))
    out.print(t)
    for a in arts:  # INT8 blocks kept in float, the form measured fastest, INT8 slower than fp32
        for n in a.notes:
            if n.startswith(("INT8 fallback", "measured selection")):
                out.print(f"{a.target} {a.precision}: {escape(n)}", soft_wrap=True)
            elif "SLOWER than fp32" in n:
                out.print(f"[yellow]warning:[/] {escape(n)}", soft_wrap=True)
    for f in failures:
        if len(f.error) > 160:
            err.print(f"[red]{f.target} {f.precision}:[/] {escape(f.error)}", soft_wrap=True)
    if res.data["manifest"]:
        out.print(f"manifest: {res.data['manifest']}")


def _junit(path: Path, suite) -> None:
    """Write the JUnit file (``suite(junit_module)`` makes its one suite); a path that cannot be written
    is bad input (exit 2)."""
    from partialdeploy.report import junit
    from partialdeploy.errors import UserError

    try:
        junit.write([suite(junit)], path)
    except OSError as e:
        fail(UserError(f"cannot write the JUnit file {path}: {e.strerror}"))
