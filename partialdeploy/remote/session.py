"""One job on one device (local side): the connection, a private temporary folder made by
``mktemp -d`` (0700), the zipapp and the files pushed into it, the agent run, and the clean-up.

The folder is removed when the session ends however it ends: success, an error, Ctrl-C (the agent
is asked to stop, then its process group is ended) and a lost connection (the agent removes it
itself when its stdin closes; we also try again over a fresh connection). Everything the device
sends is untrusted: answers are bounded in size, must parse, and are validated by the caller.
"""

from __future__ import annotations

import collections
import io
import json
import re
import shlex
import subprocess
import tarfile
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from partialdeploy.errors import UserError
from partialdeploy.remote import payload
from partialdeploy.remote.channel import PREFIX
from partialdeploy.remote.hosts import Host, check_remote_python
from partialdeploy.remote.ssh import Connection, ConnectionLost, RemoteError, SSHOptions, tail

MAX_ANSWER_BYTES = 32 << 20  # one line from the device (a report); more is refused
STOP_GRACE_S = 20.0  # after Ctrl-C: how long the agent may take to stop and send what it measured
TIMEOUT_GRACE_S = 5.0  # after the job's deadline: the same, shorter (the agent may be hung)
DEFAULT_JOB_TIMEOUT_S = 2 * 3600.0  # a job that runs longer on the device is stopped (--remote-timeout)
ZIPAPP = "pd.pyz"
_DATA_MARK = "@@partialdeploy-data"
_WORKDIR = re.compile(r"^/[A-Za-z0-9._/+-]*/partialdeploy\.[A-Za-z0-9]{10}$")

# make the folder, print it, receive the zipapp on stdin; a failed write removes the folder again
_MKDIR = ('umask 077; d=$(mktemp -d "${TMPDIR:-/tmp}/partialdeploy.XXXXXXXXXX") || exit 3; printf "%s\\n" "$d"; '
          f'cat > "$d/{ZIPAPP}" || {{ rm -rf -- "$d"; exit 4; }}')
# end the agent's process group (only if that group's leader still runs in the folder), then anything
# still working in the folder (a process that hung before the agent recorded its group)
_END = ('d={d}; real=$(cd "$d" 2>/dev/null && pwd -P); '
        'if [ -r "$d/agent.pgid" ]; then pg=$(cat "$d/agent.pgid"); case "$pg" in ""|*[!0-9]*) ;; '
        '*) if [ "$(readlink "/proc/$pg/cwd" 2>/dev/null)" = "$real" ]; then '
        'kill -s TERM -- "-$pg" 2>/dev/null; sleep 1; kill -s KILL -- "-$pg" 2>/dev/null; fi;; esac; fi; '
        'if [ -n "$real" ] && [ -d /proc/self ]; then for p in /proc/[0-9]*; do '
        '[ "$(readlink "$p/cwd" 2>/dev/null)" = "$real" ] && kill -s KILL "${{p#/proc/}}" 2>/dev/null; done; fi; ')
_CLEANUP = _END + 'rm -rf -- "$d"'


@dataclass
class AgentRun:
    """What one agent command produced."""

    rc: int | None = None
    events: list = field(default_factory=list)  # every event but progress/partial
    partial: dict | None = None  # the last partial report
    stderr_tail: str = ""
    interrupted: bool = False  # Ctrl-C here: the agent was asked to stop
    timed_out: bool = False  # the job's deadline passed: the agent was asked to stop, then ended
    lost: bool = False  # the connection went away before the agent finished

    def last(self, kind: str) -> dict | None:
        return next((e for e in reversed(self.events) if e.get("event") == kind), None)


def _info(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = size, 0o600, int(time.time())
    return info


def _no_space(text: str) -> bool:
    return "no space left" in text.lower()


def human_duration(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


class Session:
    """``job_s``: how long the whole job may run on the device (from connecting; default
    ``options.job_timeout_s``, else DEFAULT_JOB_TIMEOUT_S). An agent still running then is asked to
    stop (what it measured is kept), and ended TIMEOUT_GRACE_S later."""

    def __init__(self, host: Host, python: str = "python3", options: SSHOptions | None = None,
                 notes: Callable[[str], None] | None = None, job_s: float | None = None):
        self.host, self.python = host, check_remote_python(python)
        self.options = options or SSHOptions()
        self.note = notes or (lambda msg: None)
        self.conn: Connection | None = None
        self.workdir: str | None = None
        self.payload = payload.build()
        self.job_s = float(job_s or self.options.job_timeout_s or DEFAULT_JOB_TIMEOUT_S)
        self.deadline = time.monotonic() + self.job_s

    def timeout_text(self) -> str:
        return (f"{self.host.text}: the job did not finish within {human_duration(self.job_s)} "
                "(--remote-timeout): stopped")

    # ------------------------------------------------------------------ lifetime
    def __enter__(self) -> "Session":
        self.deadline = time.monotonic() + self.job_s
        self.conn = Connection(self.host, self.options).open()
        for n in self.conn.notes:
            self.note(n)
        try:
            self._make_workdir()
        except BaseException:
            self.conn.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        from partialdeploy.safety import signals_deferred

        with signals_deferred():  # a second Ctrl-C waits until the device is clean
            try:
                self.cleanup()
            finally:
                if self.conn is not None:
                    self.conn.close()

    def _make_workdir(self) -> None:
        r = self.conn.run(_MKDIR, stdin=self.payload.data, check=False)
        # the device's shell start-up files may print first: take our line, wherever it is
        ours = [ln.strip() for ln in r.stdout.decode(errors="replace").splitlines() if _WORKDIR.match(ln.strip())]
        if ours:
            self.workdir = ours[-1]
        if r.returncode != 0 or self.workdir is None:
            err = r.stderr.decode(errors="replace")
            if _no_space(err):
                raise UserError(f"{self.host.text}: no space left on the device for the job's temporary folder "
                                f"({len(self.payload.data) >> 10} KiB): free some, or set TMPDIR for ssh sessions")
            raise RemoteError(f"{self.host.text}: cannot make a private temporary folder with mktemp -d "
                              f"(exit {r.returncode}): {tail(err)}")

    def cleanup(self) -> None:
        """Remove the device's folder and end anything of ours still running there."""
        if not self.workdir:
            return
        cmd = _CLEANUP.format(d=shlex.quote(self.workdir))
        try:
            if self.conn is not None and self.conn.alive():
                self.conn.run(cmd, timeout=30)
            else:  # the connection broke: one fresh attempt (the agent also removes it by itself)
                with Connection(self.host, self.options) as c:
                    c.run(cmd, timeout=30)
            self.workdir = None
        except Exception as e:  # noqa: BLE001 - reported, never masks the job's own outcome
            self.note(f"could not reach {self.host.text} to remove {self.workdir} ({e}); the device's agent "
                      "removes it by itself once it sees the connection gone")

    # ------------------------------------------------------------------ files
    def push(self, files: list[tuple[Path, str]], extra: dict[str, bytes] | None = None, under: str = "export") -> None:
        """Send local files (``(path, relative name)``) into ``workdir/under`` and ``extra`` blobs
        into ``workdir`` as one tar stream (one round trip); the agent checks their sha256."""
        with tempfile.TemporaryFile() as spool:
            with tarfile.open(fileobj=spool, mode="w") as tar:
                for name, data in (extra or {}).items():
                    tar.addfile(_info(name, len(data)), io.BytesIO(data))
                for path, rel in files:
                    with open(path, "rb") as f:
                        tar.addfile(_info(f"{under}/{rel}", path.stat().st_size), f)
            spool.seek(0)
            r = self.conn.run(f"cd {shlex.quote(self.workdir)} && tar -xf -", stdin=spool, timeout=None, check=False)
        if r.returncode != 0:
            err = r.stderr.decode(errors="replace")
            if _no_space(err):
                size = sum(p.stat().st_size for p, _ in files) >> 20
                raise UserError(f"{self.host.text}: no space left on the device for the job ({size} MiB to push): "
                                "free some space there, or set TMPDIR to a larger filesystem")
            raise RemoteError(f"{self.host.text}: pushing the job failed (exit {r.returncode}): {tail(err)}")

    def fetch_to(self, rel: str, dest: Path, max_bytes: int) -> int:
        """Copy a file of the job's folder to ``dest`` (streamed); more than ``max_bytes`` is refused."""
        # a marker line first: whatever the device's shell start-up files print comes before it
        cmd = f"printf '%s\\n' {_DATA_MARK} && exec cat -- {shlex.quote(f'{self.workdir}/{rel}')}"
        proc = self.conn.popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        n = 0
        try:
            for _ in range(10000):
                line = proc.stdout.readline(1 << 16)
                if not line or line.rstrip(b"\n") == _DATA_MARK.encode():
                    break
            with open(dest, "wb") as f:
                for chunk in iter(lambda: proc.stdout.read(1 << 20), b""):
                    n += len(chunk)
                    if n > max_bytes:
                        raise RemoteError(f"{self.host.text}: {rel} is larger than {max_bytes >> 20} MiB: refused")
                    f.write(chunk)
            err = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        if proc.returncode != 0:
            raise RemoteError(f"{self.host.text}: cannot read {rel} back (exit {proc.returncode}): {tail(err)}")
        return n

    # ------------------------------------------------------------------ the agent
    def agent(self, *args: str, progress: Callable | None = None) -> AgentRun:
        """Run one agent command; Ctrl-C asks it to stop (a second one, or STOP_GRACE_S, ends it)."""
        boot = payload.boot_command(self.python, ZIPAPP, self.payload.sha256, *args)
        # the runtimes' own temporary files (ONNX Runtime writes $TMPDIR/.ses) go into our folder, removed with it
        d = shlex.quote(self.workdir)
        cmd = f"cd {d} && TMPDIR={d} && export TMPDIR && exec {shlex.join(boot)}"
        proc = self.conn.popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        err_lines: collections.deque = collections.deque(maxlen=40)
        reader = threading.Thread(target=lambda: [err_lines.append(ln.decode(errors="replace")[:2000])
                                                  for ln in iter(proc.stderr.readline, b"")], daemon=True)
        reader.start()
        run = AgentRun()
        killer: threading.Timer | None = None

        def on_deadline():
            run.timed_out = True
            self._send(proc, b"stop\n")
            nonlocal killer
            killer = threading.Timer(TIMEOUT_GRACE_S, self._end_agent, (proc,))
            killer.start()

        clock = threading.Timer(max(0.0, self.deadline - time.monotonic()), on_deadline)
        clock.daemon = True
        clock.start()
        try:
            while True:
                try:
                    line = proc.stdout.readline(MAX_ANSWER_BYTES + 1)
                    if not line:
                        break
                    self._handle(line, run, progress, proc)
                except KeyboardInterrupt:
                    if run.interrupted:  # a second Ctrl-C: stop waiting
                        proc.kill()
                        break
                    run.interrupted = True
                    self._send(proc, b"stop\n")
                    killer = threading.Timer(STOP_GRACE_S, self._end_agent, (proc,))
                    killer.start()
            run.rc = proc.wait()
        finally:
            clock.cancel()
            if killer is not None:
                killer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            reader.join(timeout=5)
            for pipe in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    pipe.close()
                except OSError:
                    pass
        run.stderr_tail = tail("".join(err_lines))
        finished = any(e.get("event") in ("result", "probe", "error", "built", "tuned") for e in run.events)
        run.lost = not finished and not (run.interrupted or run.timed_out) and (
            run.rc in (255, None) or (run.rc or 0) < 0 or not self.conn.alive())
        return run

    def _end_agent(self, proc) -> None:
        """The agent did not stop when asked: end it on the device (its output pipe is held by the
        shared SSH connection, so ending the local client alone would not end the wait), then here."""
        try:
            if self.workdir and self.conn is not None and self.conn.alive():
                self.conn.run(_END.format(d=shlex.quote(self.workdir)), timeout=30, check=False)
        except Exception:  # noqa: BLE001 - the session's clean-up tries again
            pass
        proc.kill()

    @staticmethod
    def _send(proc, data: bytes) -> None:
        try:
            proc.stdin.write(data)
            proc.stdin.flush()
        except (OSError, ValueError):
            pass

    def _handle(self, line: bytes, run: AgentRun, progress, proc) -> None:
        if len(line) > MAX_ANSWER_BYTES:
            proc.kill()
            raise RemoteError(f"{self.host.text} sent an answer larger than {MAX_ANSWER_BYTES >> 20} MiB: refused")
        text = line.decode("utf-8", errors="replace")
        if not text.startswith(PREFIX):
            return  # a runtime printing on stdout: not ours
        try:
            ev = json.loads(text[len(PREFIX):])
        except (ValueError, RecursionError):
            raise RemoteError(f"{self.host.text} sent a malformed answer: refused") from None
        if not isinstance(ev, dict) or not isinstance(ev.get("event"), str):
            raise RemoteError(f"{self.host.text} sent a malformed answer: refused")
        if ev["event"] == "progress":
            if progress is not None:
                progress(ev.get("done"), ev.get("total"), f"{self.host.text}: {str(ev.get('label', ''))[:120]}")
        elif ev["event"] == "partial":
            run.partial = ev.get("report") if isinstance(ev.get("report"), dict) else run.partial
        else:
            run.events.append(ev)

    def check_boot(self, run: AgentRun) -> None:
        """Turn the bootstrap's and the shell's own failures into one line (exit 2)."""
        h, py = self.host.text, self.python
        if run.rc == payload.EXIT_TOO_OLD:
            why = run.stderr_tail.replace("partialdeploy: ", "")
            raise UserError(f"{h}: {why}; pass --remote-python with a newer one")
        if run.rc == payload.EXIT_TAMPERED:
            raise UserError(f"{h}: the code arrived changed (sha256 mismatch): refused to run it")
        if run.rc == 127:
            raise UserError(f"{h} has no {py} (`{py}` not found): install Python >= 3.9 or pass --remote-python PATH")

    def probe(self, runtimes=()) -> dict:
        """What the device has; ``runtimes``: probe only these (all when empty)."""
        run = self.agent("probe", *runtimes)
        if run.timed_out and run.last("probe") is None:
            raise RemoteError(f"{self.timeout_text()} while probing the device")
        self.check_boot(run)
        if run.lost:
            raise ConnectionLost(f"{self.host.text}: the connection was lost")
        ev = run.last("probe")
        if ev is None or not isinstance(ev.get("probe"), dict):
            raise RemoteError(f"{self.host.text}: the device-side probe failed (exit {run.rc}): {run.stderr_tail}")
        return ev["probe"]
