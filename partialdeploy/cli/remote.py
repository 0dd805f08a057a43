"""`partialdeploy remote check HOST`, and the `--remote` side of `profile` and `build-engine`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from partialdeploy.cli.app import app, emit_json, err, fail, out
from partialdeploy.errors import PartialDeployError, UserError

remote_app = typer.Typer(
    no_args_is_help=True, add_completion=False,
    help="Edge devices over SSH (nothing to install there but Python, numpy and the runtime).\n\n"
         "  partialdeploy remote check jetson          # what the device has and what it can run\n\n"
         "  partialdeploy profile dist/ --remote jetson --remote pi@10.0.0.7 --sustained 5m")
app.add_typer(remote_app, name="remote")

PYTHON_HELP = "Python on the device (a path like /opt/venv/bin/python, or a name on its PATH)."
CONFIG_HELP = "ssh_config file to use instead of ~/.ssh/config (aliases, ProxyJump, IdentityFile)."
ACCEPT_HELP = "Accept an unknown host key and record it in known_hosts (a changed key is always refused)."
TIMEOUT_HELP = ("Stop the job on the device after this long (e.g. 30m; default 2h, plus the --sustained time): "
                "what was measured is kept, exit 1.")


def ssh_options(ssh_config: Optional[Path], accept_new: bool, timeout: Optional[str] = None):
    from partialdeploy.remote.ssh import SSHOptions
    from partialdeploy.remote.sustained import parse_duration

    try:
        job_s = parse_duration(timeout) if timeout else None
    except ValueError as e:
        raise UserError(f"--remote-timeout {e}") from None
    return SSHOptions(config=ssh_config, accept_new_host_key=accept_new, job_timeout_s=job_s).check()


@remote_app.command("check", epilog="Examples:\n\n  partialdeploy remote check jetson\n\n"
                    "  partialdeploy remote check pi@10.0.0.7 --remote-python /opt/venv/bin/python")
def check_cmd(
    host: str = typer.Argument(..., help="An ~/.ssh/config alias or [user@]host[:port]."),
    remote_python: str = typer.Option("python3", "--remote-python", help=PYTHON_HELP),
    ssh_config: Optional[Path] = typer.Option(None, "--ssh-config", help=CONFIG_HELP),
    accept_new_host_key: bool = typer.Option(False, "--accept-new-host-key", help=ACCEPT_HELP),
    remote_timeout: Optional[str] = typer.Option(None, "--remote-timeout", help=TIMEOUT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the device's answer as JSON."),
):
    """Connect, probe the device (Python, numpy, ONNX Runtime + providers, OpenVINO + devices,
    TensorRT + cuda-python + GPU) and say what it can run; nothing is left on it.

    Exit codes: 0 it can run at least one runtime, 2 it cannot (the line says what to install) or
    the connection failed."""
    from partialdeploy.remote.check import check_device

    try:
        res = check_device(host, remote_python, ssh_options(ssh_config, accept_new_host_key, remote_timeout))
    except PartialDeployError as e:
        fail(e)
    for n in res.notes:
        err.print(f"note: {n}", soft_wrap=True, markup=False)
    if as_json:
        emit_json(res.to_dict())
    else:
        for line in res.lines:
            out.print(line, soft_wrap=True, markup=False)
    if res.missing:
        fail(UserError(res.missing))


def sustained_lines(report: dict) -> list[str]:
    """One line per sustained case: p50 per window (and the hottest zone), the verdict."""
    lines = []
    for r in report.get("results", []):
        sus = r.get("sustained") if isinstance(r, dict) else None
        if not isinstance(sus, dict) or not isinstance(sus.get("windows"), list):
            continue
        ws = [w for w in sus["windows"] if isinstance(w, dict)]
        p50 = " → ".join(f"{w['p50_ms']:.3g}" for w in ws if isinstance(w.get("p50_ms"), (int, float)))
        temps = [w["temp_max_c"] for w in ws if isinstance(w.get("temp_max_c"), (int, float))]
        heat = f"; hottest zone {temps[0]:.0f} → {temps[-1]:.0f} °C" if temps else ""
        who = f"{r.get('device')}: " if r.get("device") else ""
        lines.append(f"sustained {who}{r.get('target')}/{r.get('precision')} b{r.get('batch')}: p50 per window "
                     f"{p50} ms{heat}; {sus.get('verdict')} ({sus.get('reason')})")
    return lines


def profile_remote_cmd(source: Path, settings, target, hosts: list, remote_python: str, ssh_config, accept_new: bool,
                       sustained: Optional[str], cooldown: float, output: Optional[Path], as_json: bool,
                       remote_timeout: Optional[str] = None) -> None:
    """The `profile --remote` path of `partialdeploy profile`."""
    from partialdeploy.cli.render import print_profile
    from partialdeploy.remote.profile import RemoteRequest, profile_remote
    from partialdeploy.remote.sustained import parse_duration

    try:
        try:
            sustained_s = parse_duration(sustained) if sustained else None
        except ValueError as e:
            raise UserError(f"--sustained {e}") from None
        req = RemoteRequest(Path(source), list(hosts), settings, target, remote_python,
                            ssh_options(ssh_config, accept_new, remote_timeout), sustained_s, float(cooldown or 0))
        out_path = output or (Path(source) if Path(source).is_dir() else Path(source).parent) / "profile-remote.json"
        if as_json:
            res = profile_remote(req, out_path)
        else:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                          TimeElapsedColumn(), console=err, transient=True) as bar:
                task = bar.add_task("connecting", total=None)
                res = profile_remote(req, out_path, progress=lambda d, t, lab: bar.update(
                    task, completed=d or 0, total=t or None, description=lab))
    except PartialDeployError as e:
        fail(e)
    for n in res.notes:
        err.print(f"note: {n}", soft_wrap=True, markup=False)
    if res.report is not None:
        if as_json:
            emit_json(res.report)
        else:
            print_profile(res.report)
            for line in sustained_lines(res.report):
                out.print(line, soft_wrap=True, markup=False)
            for w in res.report.get("warnings") or []:
                out.print(f"! {w}", soft_wrap=True, markup=False)
            out.print(f"report: {out_path}  (render: partialdeploy report {out_path} --html report.html)"
                      if res.written else f"nothing measured: {out_path} was not written", soft_wrap=True,
                      markup=False)
    if res.exit_code == 2 and res.report is not None:
        err.print("error: nothing was measured on the device (the reasons are above)", soft_wrap=True, markup=False)
    if res.exit_code == 130:
        err.print(f"interrupted: the device's job was stopped; partial results in {out_path}")
    elif res.report is not None and res.report.get("connection_lost"):
        err.print(f"connection lost: what was measured is in {out_path}")
    raise typer.Exit(res.exit_code)


def build_engine_remote_cmd(bundle: Path, host: str, remote_python: str, ssh_config, accept_new: bool, precision,
                            workspace, any_tensorrt: bool, as_json: bool, remote_timeout: Optional[str] = None) -> None:
    """The `build-engine --remote` path of `partialdeploy build-engine`."""
    from partialdeploy.remote.engine import build_engine_remote

    notes: list = []
    try:
        side = build_engine_remote(bundle, host, remote_python, ssh_options(ssh_config, accept_new, remote_timeout),
                                   precision,
                                   workspace, any_tensorrt, notes=notes.append,
                                   progress=None if as_json else (lambda m: err.print(m, soft_wrap=True, markup=False)))
    except PartialDeployError as e:
        for n in notes:
            err.print(f"note: {n}", soft_wrap=True, markup=False)
        fail(e)
    for n in notes:
        err.print(f"note: {n}", soft_wrap=True, markup=False)
    if as_json:
        emit_json(side)
        return
    from partialdeploy.cli.render import print_parity

    print_parity(side.get("parity", []))
    out.print(f"engine: {Path(bundle) / 'model.engine'} built on {side['built_on']['device']} (TensorRT "
              f"{side.get('tensorrt_version')}, {side.get('gpu')}, sm {side.get('compute_capability')}): it runs there "
              "only", soft_wrap=True, markup=False)
