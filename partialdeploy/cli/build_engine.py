"""`partialdeploy build-engine`: build and gate a TensorRT engine from a bundle on this GPU."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from partialdeploy.cli.app import app, emit_json, err, fail, out
from partialdeploy.errors import PartialDeployError


@app.command("build-engine", epilog="Examples:\n\n  partialdeploy build-engine dist/tensorrt/fp16\n\n"
             "  partialdeploy build-engine dist/tensorrt/int8 --workspace 2048\n\n"
             "  partialdeploy build-engine dist/tensorrt/fp16 --remote jetson   # built and gated there, pulled back")
def build_engine_cmd(
    bundle: Path = typer.Argument(..., help="TensorRT bundle directory from `partialdeploy export --target tensorrt`."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="fp32, fp16 or int8 (default: the "
                                            "bundle's)."),
    workspace: Optional[int] = typer.Option(None, "--workspace", help="Builder workspace memory pool in MB "
                                            "(default: the bundle's)."),
    any_tensorrt: bool = typer.Option(False, "--any-tensorrt", help="Build even when the bundle's profile "
                                      "expects the other TensorRT generation (10 vs 11)."),
    as_json: bool = typer.Option(False, "--json", help="Print the engine sidecar JSON on stdout."),
    remote: Optional[str] = typer.Option(None, "--remote", help="Build on this device over SSH (an ~/.ssh/config "
                                         "alias or [user@]host[:port]); the engine and its sidecar come back."),
    remote_python: str = typer.Option("python3", "--remote-python", help="Python on the device (with TensorRT + "
                                      "cuda-python + numpy)."),
    ssh_config: Optional[Path] = typer.Option(None, "--ssh-config", help="ssh_config to use instead of "
                                              "~/.ssh/config."),
    accept_new_host_key: bool = typer.Option(False, "--accept-new-host-key", help="Accept and record an unknown "
                                             "host key (a changed one is always refused)."),
    remote_timeout: Optional[str] = typer.Option(None, "--remote-timeout", help="With --remote: stop the build "
                                                 "on the device after this long (default 2h)."),
):
    """Build the TensorRT engine of a bundle on this GPU (TensorRT 8.5/8.6, 10 or 11 Python API; the
    precision is in model.onnx: strongly typed fp16 / Q/DQ INT8, built as is on 11, with STRONGLY_TYPED on
    10, with the FP16/INT8 builder flag on 8; timing cache reused), prove it by parity against the bundled
    reference and write model.engine + model.engine.json. Needs TensorRT (on a Jetson: from JetPack) + an
    NVIDIA GPU, not torch.

    Exit codes: 0 ok, 1 the parity gate failed, 2 bad bundle / no TensorRT or GPU here."""
    if remote:
        from partialdeploy.cli.remote import build_engine_remote_cmd

        build_engine_remote_cmd(bundle, remote, remote_python, ssh_config, accept_new_host_key, precision, workspace,
                                any_tensorrt, as_json, remote_timeout)
        return
    from partialdeploy.backends.tensorrt.build import build_engine

    try:
        side = build_engine(bundle, precision=precision, workspace_mb=workspace, any_tensorrt=any_tensorrt,
                            progress=None if as_json else (lambda m: err.print(m, soft_wrap=True, markup=False)))
    except PartialDeployError as e:
        fail(e)
    if as_json:
        emit_json(side)
        return
    from partialdeploy.cli.render import print_parity

    print_parity(side.get("parity", []))
    out.print(f"engine: {bundle / 'model.engine'} (TensorRT {side['tensorrt_version']}, {side['gpu']}, "
              f"sm {side['compute_capability']}, {side['precision']}, built in {side['build_seconds']} s)",
              soft_wrap=True, markup=False)

