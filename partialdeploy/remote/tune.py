"""``export --tune-on HOST`` (local side): the export's measured selection timed on the device that
will run the artifact.

Everything else stays on this machine: the forms are built here within ``--tune-budget``, and the
form that is kept passed its gate here (the gate is about numbers; ``profile --remote`` measures the
kept artifact there). Only the timing moves: the candidates' files (the artifact's, each built
form's, the fp32 sibling ONNX of an INT8 artifact), the export's parity image and the runner options
each candidate is opened with travel in one job (``remote.session.Session``: private folder, sha256
checked there, removed afterwards, ``--remote-timeout``); the device runs
``profiling.interleave.interleaved`` (``remote.device_tune``) and answers the times round by round.
The answer is untrusted: the names asked for, ``rounds`` rounds of finite positive times, bounded —
the medians are computed here from the rounds.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shlex
import statistics
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from partialdeploy.errors import UserError
from partialdeploy.integrity import file_sha256
from partialdeploy.remote import probe as probes
from partialdeploy.remote.hosts import Host, check_remote_python, parse_host
from partialdeploy.remote.session import AgentRun, Session
from partialdeploy.remote.ssh import ConnectionLost, RemoteError, SSHOptions

JOB = "job.json"
FEED = "feed.npy"  # the device side's name (device_tune.FEED), below the pushed folder
TUNE_JOB_TIMEOUT_S = 600.0  # the whole tuning job on the device, unless --remote-timeout says otherwise
MAX_MS = 1e7  # a time from the device above this (ms) is not a time
_IDENTITY = ("hostname", "board", "cpu", "cores", "memory_gb", "machine")
_SHARED: dict = {}  # TuneDevice -> the Session open for the running export (export_session)


@dataclass(frozen=True)
class TuneDevice:
    """Where ``export --tune-on`` times the forms: the host as ``profile --remote`` takes it."""

    host: str
    python: str = "python3"
    ssh: SSHOptions = field(default_factory=SSHOptions)

    def check(self) -> Host:
        """The validated host (UserError, exit 2, before any connection)."""
        h = parse_host(self.host, "--tune-on")
        check_remote_python(self.python)
        if not isinstance(self.ssh, SSHOptions):
            raise UserError("tune_on ssh must be a remote.ssh.SSHOptions")
        self.ssh.check()
        return h


@dataclass
class Candidate:
    """One way to run the artifact: ``path`` (its main file) and ``files`` relative to ``root``."""

    name: str
    runtime: str
    path: str
    files: list  # local paths (under root)
    options: dict
    root: Path


@dataclass
class Timing:
    """What the device measured, validated: medians computed here from the rounds."""

    ms: dict
    rounds: int
    per_round: dict
    label: str  # "HOST (device model)", as profile --remote labels it
    device: dict  # the device's short fingerprint (probe identity)
    skipped: dict = field(default_factory=dict)


def _job(cands: list[Candidate], feed: bytes, budget_s: float, label: str):
    roots = list(dict.fromkeys(Path(c.root) for c in cands))
    files: dict[Path, str] = {}
    job_c = []
    for c in cands:
        i = roots.index(Path(c.root))
        for f in c.files:
            files.setdefault(Path(f), f"r{i}/{Path(f).relative_to(c.root).as_posix()}")
        job_c.append({"name": c.name, "runtime": c.runtime, "path": f"r{i}/{c.path}", "options": c.options})
    job = {"candidates": job_c, "budget_s": budget_s, "device": label,
           "files": {rel: file_sha256(p) for p, rel in files.items()}}
    job["files"][FEED] = hashlib.sha256(feed).hexdigest()
    jbytes = json.dumps(job).encode()
    return [(p, rel) for p, rel in files.items()], {f"export/{FEED}": feed, JOB: jbytes}, jbytes


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 < v < MAX_MS


def validated(ev, asked: list[str], label: str) -> tuple[dict, int, dict, dict]:
    """(ms, rounds, per_round, skipped) from the device's ``tuned`` answer, or RemoteError."""
    from partialdeploy.profiling.interleave import AS_EXPORTED, MAX_ROUNDS

    def bad(why: str) -> RemoteError:
        return RemoteError(f"{label} sent a malformed timing ({why}): refused")

    if not isinstance(ev, dict):
        raise bad("not an object")
    rounds, per_round, skipped = ev.get("rounds"), ev.get("rounds_ms"), ev.get("skipped") or {}
    if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= MAX_ROUNDS:
        raise bad(f"rounds {str(rounds)[:40]!r}")
    if not isinstance(per_round, dict) or not isinstance(skipped, dict):
        raise bad("rounds_ms / skipped")
    if set(per_round) - set(asked) or set(skipped) - set(asked) or set(per_round) & set(skipped):
        raise bad("names that were not asked for")
    if AS_EXPORTED not in per_round or set(per_round) | set(skipped) != set(asked):
        raise bad("a candidate is missing")
    for name, ts in per_round.items():
        if not isinstance(ts, list) or len(ts) != rounds or not all(_number(t) for t in ts):
            raise bad(f"{name}: not {rounds} finite positive times")
    per_round = {k: [float(t) for t in v] for k, v in per_round.items()}
    ms = {k: float(statistics.median(v)) for k, v in per_round.items()}
    return ms, rounds, per_round, {k: _text(v, 300) for k, v in skipped.items()}


def _text(v, n: int) -> str:
    """Untrusted text, bounded and printable (no terminal escapes reach the notes)."""
    return "".join(c if c.isprintable() else " " for c in str(v)[:n])


def identity(p: dict) -> dict:
    """The probe's identity, bounded and printable (untrusted)."""
    ident = p.get("identity") if isinstance(p, dict) and isinstance(p.get("identity"), dict) else {}
    out = {}
    for k in _IDENTITY:
        v = ident.get(k)
        if isinstance(v, str):
            out[k] = _text(v, 120)
        elif isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = v
    return out


def _failure(run: AgentRun, s: Session, host: Host) -> Exception:
    err = run.last("error")
    if err is not None:
        return RemoteError(f"{host.text}: {str(err.get('message'))[:500]}")
    if run.timed_out:
        return RemoteError(f"{s.timeout_text()} while timing the forms")
    if run.lost:
        return ConnectionLost(f"{host.text}: the connection was lost while timing the forms")
    if run.interrupted:
        return KeyboardInterrupt()
    return RemoteError(f"{host.text}: the device-side timing crashed (exit {run.rc}): {run.stderr_tail}")


def time_on_device(device: TuneDevice, cands: list[Candidate], image, budget_s: float,
                   progress: Callable | None = None, note: Callable[[str], None] | None = None) -> Timing:
    """Time ``cands`` interleaved on ``device`` within ``budget_s``; ``image``: the parity input
    (N=1, float32) each is fed in its static batch. Uses the export's session on the device
    (:func:`export_session`) while it is alive, else one of its own. Raises UserError (the device
    lacks the runtime), RemoteError / ConnectionLost (it failed there) — the caller records the
    tuning as not done."""
    shared = _SHARED.get(device)
    if shared is not None and shared.conn is not None and shared.conn.alive():
        shared.conn.run(f"rm -rf -- {shlex.quote(shared.workdir + '/export')}", timeout=30, check=False)
        return _time_in(shared, device, cands, image, budget_s, progress)
    with Session(device.check(), device.python, device.ssh, notes=note, job_s=_job_s(device)) as s:
        return _time_in(s, device, cands, image, budget_s, progress)


def _job_s(device: TuneDevice) -> float:
    return device.ssh.job_timeout_s or TUNE_JOB_TIMEOUT_S


def _time_in(s: Session, device: TuneDevice, cands: list[Candidate], image, budget_s: float, progress) -> Timing:
    import numpy as np

    host = s.host
    s.deadline = time.monotonic() + s.job_s  # the deadline is per job
    runtime = cands[0].runtime
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(image, np.float32), allow_pickle=False)
    p = s.probe([runtime])
    why = probes.missing(p, host.text, device.python, [runtime])
    if why:
        raise UserError(why)
    from partialdeploy.remote.profile import device_label

    ident = identity(p)
    label = device_label(host, {"identity": ident})
    files, extra, jbytes = _job(cands, buf.getvalue(), budget_s, label)
    s.push(files, extra)
    run = s.agent("tune", JOB, hashlib.sha256(jbytes).hexdigest(), progress=progress)
    s.check_boot(run)
    ev = run.last("tuned")
    if ev is None or run.rc not in (0, None):
        raise _failure(run, s, host)
    if ev.get("device") != label:
        raise RemoteError(f"{label} answered for another job: refused")
    ms, rounds, per_round, skipped = validated(ev, [c.name for c in cands], label)
    return Timing(ms, rounds, per_round, label, ident, skipped)


@contextmanager
def export_session(device: TuneDevice | None, note: Callable[[str], None] | None = None):
    """One session on the ``--tune-on`` device for a whole export: opened before any work (an
    unreachable device, a refused login or host key is a UserError then: exit 2), used by every
    :func:`time_on_device` of the export (one SSH handshake, one zipapp), closed — the device's folder
    removed — however the export ends. Nothing when ``device`` is None."""
    if device is None:
        yield None
        return
    with Session(device.check(), device.python, device.ssh, notes=note, job_s=_job_s(device)) as s:
        _SHARED[device] = s
        try:
            yield s
        finally:
            _SHARED.pop(device, None)
