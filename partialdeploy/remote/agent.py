"""The device side of a remote job (runs inside the zipapp, from a private temporary folder).

``python -c BOOT pd.pyz SHA <command> [job.json JOBSHA]`` — BOOT has checked the zipapp's sha256;
the agent checks the job file's, then every file the job lists, before anything is loaded. Commands:

* ``probe`` — what the device has (``probe.probe``) and who it is; stdlib only (a bare python3 answers);
* ``profile`` — ``profiling.profiler.Profiler`` on the pushed export, with the device fingerprint, thermal
  zones before/after each case, ``--cooldown`` pauses and ``--sustained`` windows;
* ``build-engine`` — ``backends.tensorrt.build.build_engine`` on the pushed bundle;
* ``tune`` — the export's measured selection timed here (``export --tune-on``: ``device_tune.run_tune``).

Answers are JSON lines on stdout prefixed with ``@@partialdeploy`` (a runtime printing on stdout
cannot forge one without the prefix, and the local side reads them as untrusted anyway); everything
else goes to stderr. The local side's ``stop`` line on stdin stops a profile (partial results are
sent); end-of-file on stdin means the connection is gone: the agent then removes its folder and
ends its process group — nothing is left running or lying on the device.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading

from partialdeploy.integrity import file_sha256
from partialdeploy.remote.channel import DONE, EXPORT_DIR, STOP, emit

PGID_FILE = "agent.pgid"


def _self_destruct(workdir: str) -> None:
    """The local side is gone: remove everything we brought and end our process group. Only a folder
    that is ours (made by the session's ``mktemp -d``, holding the zipapp) is removed."""
    if os.path.basename(workdir).startswith("partialdeploy.") and os.path.isfile(os.path.join(workdir, "pd.pyz")):
        shutil.rmtree(workdir, ignore_errors=True)
    try:
        if os.getpgrp() == os.getpid():
            os.killpg(os.getpgrp(), signal.SIGKILL)
    finally:
        os._exit(3)


def _watch_stdin(workdir: str) -> None:
    try:
        for line in sys.stdin:
            if line.strip() == "stop":
                STOP.set()
    except (OSError, ValueError):
        pass
    if not DONE.is_set():
        _self_destruct(workdir)


def load_job(workdir: str, name: str, sha: str) -> dict:
    """The job file, after its sha256 and those of every file it lists were checked."""
    from partialdeploy.errors import UserError
    from partialdeploy.integrity import safe_join

    path = os.path.join(workdir, os.path.basename(name))
    if file_sha256(path) != sha:
        raise UserError("the job file on the device is not what was sent (sha256): refused")
    with open(path, encoding="utf-8") as f:
        job = json.load(f)
    base = os.path.join(workdir, EXPORT_DIR)
    for rel, want in (job.get("files") or {}).items():
        p = safe_join(base, rel, "pushed file")
        if not p.is_file() or file_sha256(str(p)) != want:
            raise UserError(f"{rel} on the device is not what was sent (sha256 differs or missing): refused to load it")
    return job


def _probe(workdir: str, runtimes: list) -> int:
    from partialdeploy.remote.probe import probe
    from partialdeploy.remote.probe import runtimes as device_runtimes

    emit("probe", probe=probe(workdir, [r for r in runtimes if r in device_runtimes()] or None))
    return 0


def main() -> None:
    args = sys.argv[1:]
    workdir = os.getcwd()
    code = 2
    try:
        with open(PGID_FILE, "w") as f:
            f.write(str(os.getpgrp()))
    except OSError:
        pass
    threading.Thread(target=_watch_stdin, args=(workdir,), daemon=True).start()
    import partialdeploy
    from partialdeploy.errors import PartialDeployError

    here = os.path.realpath(os.path.join(workdir, "pd.pyz"))
    if not os.path.realpath(partialdeploy.__file__).startswith(here + os.sep):  # a device-installed copy won
        emit("error", message=f"partialdeploy was imported from {partialdeploy.__file__}, not from the job's code: "
             "refused (check PYTHONPATH on the device)", exit_code=2)
        sys.exit(2)
    try:
        if args[:1] == ["probe"]:
            code = _probe(workdir, args[1:])
        elif args[:1] == ["profile"] and len(args) == 3:
            from partialdeploy.remote.device_profile import run_profile

            code = run_profile(workdir, load_job(workdir, args[1], args[2]))
        elif args[:1] == ["build-engine"] and len(args) == 3:
            from partialdeploy.remote.device_profile import run_build

            code = run_build(workdir, load_job(workdir, args[1], args[2]))
        elif args[:1] == ["tune"] and len(args) == 3:
            from partialdeploy.remote.device_tune import run_tune

            code = run_tune(workdir, load_job(workdir, args[1], args[2]))
        else:
            emit("error", message=f"unknown agent command {args[:1]}", exit_code=2)
    except PartialDeployError as e:
        emit("error", message=str(e), exit_code=e.exit_code)
        code = e.exit_code
    except OSError as e:
        import errno

        if e.errno == errno.ENOSPC:
            emit("error", message=f"no space left on the device ({e.filename or workdir}): free some space or "
                 "point TMPDIR at a larger filesystem", exit_code=2)
            code = 2
        else:
            raise
    finally:
        DONE.set()
        try:
            os.unlink(PGID_FILE)
        except OSError:
            pass
    sys.stdout.flush()
    sys.exit(code)
