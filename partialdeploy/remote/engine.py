"""``build-engine BUNDLE --remote HOST`` (local side): an engine only runs where it was built, so it
is built there. The bundle (checked here against its export's manifest) is pushed, TensorRT builds and
gates the engine on the device with the bundle's reference images (``backends.tensorrt.build.build_engine``,
unchanged), and ``model.engine`` + ``model.engine.json`` come back into the bundle — the engine's
sha256 checked against what the device computed, the sidecar recording the device it was built for
(``built_on``: the host, its fingerprint). Where the device lacks TensorRT or cuda-python, the probe
says so in one line before anything is pushed (exit 2).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from partialdeploy.integrity import file_sha256
from partialdeploy.errors import UserError, VerificationError
from partialdeploy.remote import probe as probes
from partialdeploy.remote.hosts import check_remote_python, parse_host
from partialdeploy.remote.session import Session
from partialdeploy.remote.ssh import ConnectionLost, RemoteError, SSHOptions

ENGINE, SIDECAR = "model.engine", "model.engine.json"
MAX_ENGINE_BYTES = 8 << 30
JOB = "job.json"


def bundle_files(bundle: Path) -> list[tuple[Path, str]]:
    """The bundle's files to push (a previous engine and its sidecar stay here)."""
    from partialdeploy.backends.tensorrt.build import load_bundle
    from partialdeploy.integrity import verify_inside_export

    bundle = Path(bundle)
    if not bundle.is_dir():
        raise UserError(f"{bundle} is not a TensorRT bundle directory")
    load_bundle(bundle)  # UserError when it is not one of ours
    verify_inside_export(bundle)  # its files are still what the export's manifest lists
    return [(f, f.relative_to(bundle).as_posix()) for f in sorted(bundle.rglob("*"))
            if f.is_file() and f.name not in (ENGINE, SIDECAR) and not f.is_symlink()]


def _check_sidecar(side, label: str) -> dict:
    if not isinstance(side, dict) or not isinstance(side.get("parity"), list) or not side.get("tensorrt_version"):
        raise RemoteError(f"{label} sent a malformed engine sidecar: refused")
    built = side.get("built_on")
    if not isinstance(built, dict) or built.get("device") != label:
        raise RemoteError(f"{label} sent a sidecar that does not name it as the device the engine was built on")
    return side


def build_engine_remote(bundle: Path, host: str, python: str = "python3", options: SSHOptions | None = None,
                        precision: str | None = None, workspace_mb: int | None = None, any_tensorrt: bool = False,
                        progress: Callable[[str], None] | None = None,
                        notes: Callable[[str], None] | None = None) -> dict:
    """Build and gate the engine on ``host``; returns the sidecar written next to the pulled-back engine."""
    from partialdeploy.remote.profile import device_label

    say = progress or (lambda m: None)
    h = parse_host(host)
    check_remote_python(python)
    bundle = Path(bundle)
    files = bundle_files(bundle)
    with Session(h, python, options or SSHOptions(), notes=notes) as s:
        p = s.probe(["tensorrt"])
        why = probes.missing(p, h.text, python, ["tensorrt"])
        if why:
            raise UserError(why)
        label = device_label(h, p)
        pushed = [(f, f"bundle/{rel}") for f, rel in files]
        job = {"bundle": "bundle", "device": label, "files": {rel: file_sha256(f) for f, rel in pushed},
               "options": {"precision": precision, "workspace_mb": workspace_mb, "any_tensorrt": any_tensorrt}}
        jbytes = json.dumps(job).encode()
        say(f"{h.text}: pushing the bundle ({sum(f.stat().st_size for f, _ in pushed) >> 10} KiB)")
        s.push(pushed, {JOB: jbytes})
        run = s.agent("build-engine", JOB, hashlib.sha256(jbytes).hexdigest(),
                      progress=lambda d, t, lab: say(lab))
        s.check_boot(run)
        built, err = run.last("built"), run.last("error")
        if built is None and run.timed_out:
            raise RemoteError(f"{s.timeout_text()} while the engine was being built")
        if built is None:
            if err is not None:
                msg = f"{h.text}: {str(err.get('message'))[:500]}"
                raise VerificationError(msg) if err.get("exit_code") == 1 else UserError(msg)
            if run.lost:
                raise ConnectionLost(f"{h.text}: the connection was lost while the engine was being built")
            raise RemoteError(f"{h.text}: the engine build crashed (exit {run.rc}): {run.stderr_tail}")
        side = _check_sidecar(built.get("sidecar"), label)
        want = built.get("engine_sha256")
        fd, tmp = tempfile.mkstemp(prefix=".engine-", dir=bundle)
        os.close(fd)
        try:
            s.fetch_to(f"export/bundle/{ENGINE}", Path(tmp), MAX_ENGINE_BYTES)
            if not isinstance(want, str) or file_sha256(Path(tmp)) != want:
                raise RemoteError(f"{h.text}: the engine arrived changed (sha256 differs from the device's): refused")
            os.replace(tmp, bundle / ENGINE)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    side["engine_sha256"] = want
    from partialdeploy.safety import write_json_atomic

    write_json_atomic(bundle / SIDECAR, json.dumps(side, indent=2, default=str) + "\n")
    return side
