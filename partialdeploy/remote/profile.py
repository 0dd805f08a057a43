"""``profile DIR --remote HOST [--remote HOST2 ...]`` (local side).

For each device, in turn: connect, probe (only the runtimes the export needs), push the artifacts the
device can run (verified here against the manifest first, sha256 checked again there), profile there,
bring the report home. The device's report is untrusted: bounded in size, validated against the
report schema, then labelled ``HOST (device model)``. Several devices give one report with a device
column (``report.merge``). A lost connection keeps what was measured (exit 1); Ctrl-C stops the
device's job and keeps what it measured (exit 130).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from partialdeploy.integrity import file_sha256
from partialdeploy.errors import UserError
from partialdeploy.records import Artifact, ProfileResult
from partialdeploy.remote import probe as probes
from partialdeploy.remote.hosts import Host, check_remote_python, parse_host
from partialdeploy.remote.session import DEFAULT_JOB_TIMEOUT_S, AgentRun, Session
from partialdeploy.remote.ssh import ConnectionLost, RemoteError, SSHOptions

JOB = "job.json"
BUILT_LATER = ("model.engine", "model.engine.json")  # the device checks the engine against its sidecar


@dataclass
class RemoteRequest:
    source: Path
    hosts: list  # the --remote arguments, as written
    settings: object  # profiling.settings.Settings
    target: str | None = None
    python: str = "python3"
    ssh: SSHOptions = field(default_factory=SSHOptions)
    sustained_s: float | None = None
    cooldown_s: float = 0.0

    def check(self) -> list[Host]:
        if not self.hosts:
            raise UserError("--remote needs a host")
        hosts = [parse_host(h) for h in self.hosts]
        if len({h.text for h in hosts}) != len(hosts):
            raise UserError("the same --remote host is given twice")
        check_remote_python(self.python)
        self.ssh.check()
        self.settings.validate()
        if self.cooldown_s < 0:
            raise UserError(f"--cooldown must be >= 0 seconds, got {self.cooldown_s}")
        return hosts


@dataclass
class RemoteOutcome:
    report: dict | None
    exit_code: int
    notes: list = field(default_factory=list)
    written: bool = False  # whether the report file was written (an empty run keeps an existing one)


def artifact_files(base: Path, entry: Artifact) -> list[str]:
    """The files an artifact consists of, relative to the export (what has to travel)."""
    from partialdeploy.integrity import safe_join

    if entry.files:
        rels = list(entry.files)
    else:
        p = safe_join(base, entry.path, "artifact path")
        rels = [entry.path] if p.is_file() else [f.relative_to(base).as_posix() for f in sorted(p.rglob("*"))
                                                  if f.is_file()]
        if p.suffix.lower() == ".xml" and p.with_suffix(".bin").is_file():  # OpenVINO IR weights
            rels.append(Path(entry.path).with_suffix(".bin").as_posix())
    out = []
    for r in rels:
        p = safe_join(base, r, "artifact file")
        out += [f.relative_to(base).as_posix() for f in sorted(p.rglob("*")) if f.is_file()] if p.is_dir() else [r]
    art = safe_join(base, entry.path, "artifact path")
    if art.is_dir():  # a TensorRT bundle's engine is built after the export (build-engine [--remote]): it travels too
        out += [f"{entry.path}/{n}" for n in BUILT_LATER if (art / n).is_file() and f"{entry.path}/{n}" not in out]
    return out


def plan_export(source: Path, target: str | None) -> tuple[dict, Path, list[Artifact]]:
    """The verified export (manifest, base, entries) — only an export directory or manifest travels."""
    from partialdeploy.backends import canonical
    from partialdeploy.integrity import manifest_path_of, verified_export

    mp = manifest_path_of(source)
    if mp is None:
        raise UserError(f"{source}: profile --remote takes an export directory (with manifest.json)")
    from partialdeploy.safety import refuse_while_exporting

    refuse_while_exporting(Path(mp).parent, "profile")
    m, base, arts = verified_export(source)
    arts = [a for a in arts if a.path]
    if target:
        arts = [a for a in arts if canonical(a.target) == canonical(target)]
        if not arts:
            raise UserError(f"{source} has no artifact for target {target}")
    return m, base, arts


def device_label(host: Host, p: dict) -> str:
    ident = p.get("identity") if isinstance(p.get("identity"), dict) else {}
    model = ident.get("board") or ident.get("cpu") or ident.get("hostname") or "?"
    return f"{host.text} ({str(model)[:80]})"


def _not_run_rows(arts: list[Artifact], p: dict, host: Host, settings) -> list[dict]:
    from partialdeploy.backends import canonical

    rows = []
    for a in arts:
        rt = canonical(a.target)
        reason = probes.not_run_reason(p, rt, host.text) if rt in probes.runtimes() else \
            f"not run on {host.text}: {rt} is not a runtime for edge devices"
        for b in settings.batches:
            rows.append(ProfileResult(target=a.target, runtime=rt, precision=a.precision, artifact=a.path,
                                      mode=settings.mode, threads=settings.threads, batch=b, status="not_run",
                                      reason=reason).to_dict())
    return rows


def _job(req: RemoteRequest, manifest: dict, base: Path, arts: list[Artifact], label: str):
    files = [(base / rel, rel) for a in arts for rel in artifact_files(base, a)]
    trimmed = {**manifest, "artifacts": [a.to_dict() for a in arts]}
    mbytes = json.dumps(trimmed, indent=1).encode()
    job = {"settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(req.settings).items()},
           "target": None, "device": label, "sustained_s": req.sustained_s, "cooldown_s": req.cooldown_s,
           "files": {rel: file_sha256(p) for p, rel in files}}
    job["files"]["manifest.json"] = hashlib.sha256(mbytes).hexdigest()
    jbytes = json.dumps(job).encode()
    return files, {"export/manifest.json": mbytes, JOB: jbytes}, hashlib.sha256(jbytes).hexdigest()


def _device_report(run: AgentRun, host: Host) -> dict | None:
    from partialdeploy.report.schema import validate

    ev = run.last("result")
    data = ev.get("report") if ev else run.partial
    if data is None:
        return None
    return validate(data, f"the report from {host.text}")


def _unfinished(rep: dict, why: str) -> None:
    for r in rep["results"]:  # a partial report: loaded, not yet timed
        if r.get("status") == "ok" and not r.get("latency_ms"):
            r["status"], r["reason"] = "interrupted", why


def stopped_early(run: AgentRun) -> str | None:
    """Why the device side ended without its result (an error or a crash after partial reports), or None."""
    if run.last("result") is not None and run.rc in (0, None):
        return None
    err = run.last("error")
    if err:
        return f"the device-side profiler stopped: {str(err.get('message'))[:300]}"
    tail = run.stderr_tail.strip().splitlines()[-1:] or ["no message"]
    return f"the device-side profiler crashed (exit {run.rc}: {tail[0][:300]})"


def profile_one(req: RemoteRequest, host: Host, progress=None, note=None) -> tuple[dict | None, int]:
    """Profile on one device: (its report or None, exit code)."""
    from partialdeploy.backends import canonical

    manifest, base, arts = plan_export(Path(req.source), req.target)
    needed = sorted({canonical(a.target) for a in arts} & set(probes.runtimes()))
    job_s = req.ssh.job_timeout_s or (DEFAULT_JOB_TIMEOUT_S + len(arts) * len(req.settings.batches)
                                      * ((req.sustained_s or 0.0) + req.cooldown_s))  # sustained runs on top
    with Session(host, req.python, req.ssh, notes=note, job_s=job_s) as s:
        p = s.probe(needed)
        why = probes.missing(p, host.text, req.python, needed)
        if why:
            raise UserError(why)
        ok = probes.available(p)
        runnable = [a for a in arts if canonical(a.target) in ok]
        label = device_label(host, p)
        files, extra, job_sha = _job(req, manifest, base, runnable, label)
        s.push(files, extra)
        run = s.agent("profile", JOB, job_sha, progress=progress)
        s.check_boot(run)
        rep = _device_report(run, host)
        err = run.last("error")
        if err and not rep:
            code = err.get("exit_code") if err.get("exit_code") in (1, 2) else 1
            raise (UserError if code == 2 else RemoteError)(f"{host.text}: {str(err.get('message'))[:500]}")
        if rep is None:
            if run.timed_out:
                raise RemoteError(f"{s.timeout_text()} before anything was measured")
            if run.lost:
                raise ConnectionLost(f"{host.text}: the connection was lost before anything was measured")
            raise RemoteError(f"{host.text}: the device-side profiler crashed (exit {run.rc}): {run.stderr_tail}")
        rep["device"] = label
        rep["results"] += _not_run_rows([a for a in arts if a not in runnable], p, host, req.settings)
        rep["remote"] = {"host": host.text, "python": req.python, "probe": p, "zipapp_sha256": s.payload.sha256}
        if run.lost:
            rep["interrupted"], rep["connection_lost"] = True, True
            _unfinished(rep, "the connection was lost before any timed run")
            return rep, 1
        if run.timed_out:
            rep["interrupted"], rep["timed_out"] = True, True
            note(f"{s.timeout_text()}; kept what was measured")
            _unfinished(rep, "the job's deadline (--remote-timeout) passed before any timed run")
            return rep, 1
        if run.interrupted:
            rep["interrupted"] = True
            return rep, 130
        why = stopped_early(run)
        if why:  # a partial report came home, but the device side did not finish: never a clean run
            rep["interrupted"] = True
            rep.setdefault("warnings", []).append(f"{host.text}: {why}; kept what was measured")
            _unfinished(rep, why)
            return rep, 1
        from partialdeploy.profiling.profiler import exit_code

        return rep, exit_code(rep)  # 1: an artifact failed; 2: nothing could be measured there


def profile_remote(req: RemoteRequest, out_path: Path | None = None, progress: Callable | None = None) -> RemoteOutcome:
    """Profile on every --remote device; one report (a device column when there are several)."""
    from contextlib import nullcontext

    from partialdeploy.report.file import ReportLock

    hosts = req.check()
    plan_export(Path(req.source), req.target)  # bad input fails before any connection
    with ReportLock(out_path) if out_path is not None else nullcontext():  # one run per report file
        return _profile_hosts(req, hosts, out_path, progress)


def _profile_hosts(req: RemoteRequest, hosts: list[Host], out_path, progress) -> RemoteOutcome:
    from partialdeploy.report import file as report_file
    from partialdeploy.report.merge import merge

    outcome = RemoteOutcome(None, 0)
    reports: list[tuple[str, dict]] = []
    for host in hosts:
        try:
            rep, code = profile_one(req, host, progress, outcome.notes.append)
        except ConnectionLost as e:
            outcome.notes.append(str(e))
            rep, code = None, 1
        if rep is not None:
            reports.append((rep["device"], rep))
            if len(hosts) == 1:
                outcome.report = rep
            else:
                outcome.report = merge(reports, [d for d, _ in reports])
                outcome.report["remote"] = [r.get("remote") for _, r in reports]
            if out_path is not None:  # after every device; an empty run never replaces a report
                outcome.written = report_file.write(outcome.report, out_path) or outcome.written
        outcome.exit_code = max(outcome.exit_code, code) if code != 130 else 130
        if code == 130:
            break
    return outcome

