"""``plan --sweep``: export and profile a checkpoint × target × precision matrix, one cell at a time.

Each cell is its own export directory, ``OUT/cells/<checkpoint>-<sha8>/<target>-<precision>/``, made by
the library's own functions: ``exporting.run.run_export`` (parity-gated, all or nothing), the accuracy of
its artifact on the labelled set (``accuracy.py``, always run here), and the profile through a
:class:`Measure`: here (``profiling``) or on an edge device over SSH (:class:`RemoteMeasure`,
``--remote``). A cell that cannot be built or run gets a status and a reason and the sweep goes on.
``cell.json`` records the cell's key — the checkpoint's sha256 and every option that changes the
result — so a sweep run again (or resumed after Ctrl-C) reuses cells whose key is unchanged and whose
files still match their manifest.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from partialdeploy.errors import PartialDeployError, UserError, VerificationError, first_line

CELL = "cell.json"
SWEEP = "sweep.json"
PROFILE = "profile.json"


@dataclass
class Cell:
    checkpoint: Path
    checkpoint_sha256: str
    target: str
    precision: str
    dir: Path
    key: str
    status: str = "pending"  # ok | reused | failed | skipped | error
    reason: str = ""
    seconds: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.checkpoint.stem} {self.target}/{self.precision}"

    def to_dict(self) -> dict:
        return {"checkpoint": str(self.checkpoint), "checkpoint_sha256": self.checkpoint_sha256, "target": self.target,
                "precision": self.precision, "dir": str(self.dir), "key": self.key, "status": self.status,
                "reason": self.reason, "seconds": round(self.seconds, 1)}


class Measure:
    """How a cell is profiled: here, by ``partialdeploy profile`` in a process of its own, so that the
    cell's peak memory and timings are not those of the process that exported it (torch, the train form).
    Profiling elsewhere is another implementation of this one method (:class:`RemoteMeasure`); the rest
    of the sweep does not change."""

    def __init__(self, runs: int = 100, min_time_s: float = 1.0):
        self.runs, self.min_time_s = runs, min_time_s

    def __call__(self, export_dir: Path, batch: int) -> dict:
        import subprocess
        import sys

        out = Path(export_dir) / PROFILE
        cmd = [sys.executable, "-m", "partialdeploy", "profile", str(export_dir), "--batch", str(batch), "--runs",
               str(self.runs), "--min-time", str(self.min_time_s), "--no-layers", "-o", str(out)]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode == 130:
            raise KeyboardInterrupt
        if r.returncode not in (0, 1) or not out.is_file():  # 1: an artifact failed (its row says why)
            lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
            raise UserError(lines[-1].removeprefix("error: ") if lines else f"profile exited {r.returncode}")
        from partialdeploy.report.schema import validate

        return validate(json.loads(out.read_text()), str(out))


class RemoteMeasure(Measure):
    """Profile a cell on an edge device over SSH (``remote.profile``, as ``profile --remote`` does): the
    artifacts are verified here, pushed, checked again and profiled there, and the device's report is
    brought home (and validated) into the cell; nothing is left on the device."""

    def __init__(self, host: str, runs: int = 100, min_time_s: float = 1.0, python: str = "python3", ssh=None):
        super().__init__(runs, min_time_s)
        self.host, self.python, self.ssh = host, python, ssh

    def __call__(self, export_dir: Path, batch: int) -> dict:
        from partialdeploy.profiling.settings import Settings
        from partialdeploy.remote.profile import RemoteRequest, profile_remote
        from partialdeploy.remote.ssh import SSHOptions

        settings = Settings(batches=(batch,), runs=self.runs, min_time_s=self.min_time_s, layers=False)
        req = RemoteRequest(Path(export_dir), [self.host], settings, python=self.python, ssh=self.ssh or SSHOptions())
        outcome = profile_remote(req, out_path=Path(export_dir) / PROFILE)
        if outcome.report is None:
            raise UserError(f"{self.host}: nothing was measured ({'; '.join(outcome.notes) or 'no report'})")
        return outcome.report


@dataclass
class SweepRequest:
    checkpoints: tuple[Path, ...]
    targets: tuple[str, ...]
    precisions: tuple[str, ...]
    out_dir: Path = Path("plan")
    calib: Path | None = None
    eval_dir: Path | None = None
    batch: int = 1
    remote: str | None = None  # profile on this device over SSH (RemoteMeasure)
    remote_python: str = "python3"
    ssh: object = None  # remote.ssh.SSHOptions
    runs: int = 100
    min_time_s: float = 1.0
    _cells: list = field(default_factory=list, repr=False)

    @classmethod
    def from_flags(cls, checkpoints, targets: str, precisions: str, **kw) -> "SweepRequest":
        """Checked before any work: files and folders exist, targets and precisions are known."""
        from partialdeploy.parity import PRECISIONS
        from partialdeploy.exporting.request import expand_targets

        ckpts = tuple(Path(c) for c in checkpoints)
        for c in ckpts:
            if not c.is_file():
                raise UserError(f"--sweep: checkpoint {c} does not exist (give checkpoint files, not reports)")
        precs = tuple(dict.fromkeys(p.strip().lower() for p in str(precisions).split(",") if p.strip()))
        bad = [p for p in precs if p not in PRECISIONS]
        if bad or not precs:
            raise UserError(f"--precisions {precisions!r}: choose from {', '.join(PRECISIONS)}")
        for flag, d in (("--calib", kw.get("calib")), ("--eval", kw.get("eval_dir"))):
            if d is not None and not Path(d).is_dir():
                raise UserError(f"{flag} {d} is not a folder")
        if kw.get("batch", 1) < 1:
            raise UserError("--batch must be ≥ 1")
        out = Path(kw.get("out_dir") or "plan")
        if out.exists() and not out.is_dir():
            raise UserError(f"-o {out} exists and is not a directory")
        return cls(ckpts, expand_targets([targets]), precs, **kw)

    def cells(self) -> list[Cell]:
        if not self._cells:
            from partialdeploy.integrity import file_sha256

            for ck in self.checkpoints:
                sha = file_sha256(ck)
                for t in self.targets:
                    for p in self.precisions:
                        d = self.out_dir / "cells" / f"{ck.stem}-{sha[:8]}" / f"{t}-{p}"
                        self._cells.append(Cell(ck, sha, t, p, d, self._key(sha, t, p)))
        return self._cells

    def _key(self, sha: str, target: str, precision: str) -> str:
        """Everything that changes a cell's result: checkpoint, target, precision, batch, the images
        (by content), the profiling settings, the device (``--remote``) and the tool's version."""
        from partialdeploy.version import __version__

        opts = {"checkpoint_sha256": sha, "target": target, "precision": precision, "batch": self.batch,
                "calib": _folder_digest(self.calib) if precision == "int8" else None,
                "eval": _folder_digest(self.eval_dir), "runs": self.runs, "min_time_s": self.min_time_s,
                "remote": self.remote, "profiled_in": "own process", "tool": __version__}
        return hashlib.sha256(json.dumps(opts, sort_keys=True).encode()).hexdigest()

    def measure(self) -> Measure:
        """Here, or on the ``--remote`` device: reached and probed once before any work (a host that
        cannot be reached, or that has no runtime, is bad input, not one failure per cell)."""
        if not self.remote:
            return Measure(self.runs, self.min_time_s)
        from partialdeploy.remote.check import check_device

        res = check_device(self.remote, self.remote_python, self.ssh)
        if res.missing:
            raise UserError(res.missing)
        return RemoteMeasure(self.remote, self.runs, self.min_time_s, self.remote_python, self.ssh)

    def export_command(self, cell: Cell) -> str:
        import shlex

        parts = ["partialdeploy", "export", "--target", cell.target, "--precision", cell.precision,
                 "--batch", str(self.batch)]
        if cell.precision == "int8" and self.calib:
            parts += ["--calib", str(self.calib)]
        if cell.precision == "int8" and self.eval_dir:
            parts += ["--eval", str(self.eval_dir)]
        return " ".join(shlex.quote(p) for p in parts + [str(cell.checkpoint), "-o", str(cell.dir)])


def _folder_digest(d: Path | None) -> str | None:
    if d is None:
        return None
    from partialdeploy.images import files_digest, image_files

    return files_digest(image_files(d), Path(d))


@dataclass
class SweepResult:
    out_dir: Path
    cells: list[Cell]

    @property
    def path(self) -> Path:
        return self.out_dir / SWEEP

    @property
    def reports(self) -> list[Path]:
        return [c.dir / PROFILE for c in self.cells if c.status in ("ok", "reused")]

    @property
    def export_dirs(self) -> list[Path]:
        return [c.dir for c in self.cells if c.status in ("ok", "reused")]

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for c in self.cells:
            counts[c.status] = counts.get(c.status, 0) + 1
        return ", ".join(f"{n} {s}" for s, n in counts.items())

    def to_dict(self) -> dict:
        return {"schema": "partialdeploy.sweep/1", "summary": self.summary(),
                "cells": [c.to_dict() for c in self.cells]}


Progress = Callable[..., None]  # (done, total, label, cell=None)


def run_sweep(req: SweepRequest, progress: Progress | None = None, measure: Callable | None = None) -> SweepResult:
    """Every cell in turn (reused when already done with the same key); ``sweep.json`` is rewritten after
    each cell, so an interrupted sweep leaves a record of what was done."""
    from partialdeploy.safety import write_json_atomic

    say = progress or (lambda *a, **k: None)
    measure = measure or req.measure()
    cells = req.cells()
    req.out_dir.mkdir(parents=True, exist_ok=True)
    result = SweepResult(req.out_dir, cells)
    sets: dict[str, object] = {}
    for i, cell in enumerate(cells):
        say(i, len(cells), cell.label)
        t0 = time.perf_counter()
        if _reusable(cell):
            cell.status, cell.reason = "reused", "done before with the same checkpoint sha256 and options"
        else:
            _run_cell(req, cell, measure, sets)
            cell.seconds = time.perf_counter() - t0
            if cell.dir.is_dir():
                write_json_atomic(cell.dir / CELL, json.dumps(cell.to_dict(), indent=1) + "\n")
        write_json_atomic(result.path, json.dumps(result.to_dict(), indent=1) + "\n")
        say(i + 1, len(cells), cell.label, cell=cell)
    return result


def _reusable(cell: Cell) -> bool:
    """Done before with the same key, and its artifact, accuracy record and profile still there and
    matching the manifest."""
    from partialdeploy.integrity import verified_export

    try:
        rec = json.loads((cell.dir / CELL).read_text())
        if not isinstance(rec, dict) or rec.get("key") != cell.key or rec.get("status") not in ("ok", "reused"):
            return False
        verified_export(cell.dir)
        return (cell.dir / PROFILE).is_file()
    except (OSError, ValueError, UserError):
        return False


def _run_cell(req: SweepRequest, cell: Cell, measure: Callable, sets: dict) -> None:
    """Export, measure accuracy, profile; the outcome is the cell's status and reason (never raises
    for a cell's own failure; Ctrl-C does)."""
    try:
        res = _export(req, cell)
        if res.failures:
            f = res.failures[0]
            cell.status = "failed" if f.kind == "verification" else "error"
            cell.reason = first_line(f.error, 300)
            return
        if not res.artifacts:
            cell.status = "skipped"
            cell.reason = (res.skipped[0].reason if res.skipped else "") or "no artifact was produced"
            return
        _accuracy(req, cell, sets)
        report = measure(cell.dir, req.batch)
        rows = report.get("results") or []
        ok = [r for r in rows if r.get("status") == "ok"]
        if not ok:
            r = rows[0] if rows else {}
            cell.status = "skipped" if r.get("status") in ("not_run", "skipped") else "error"
            cell.reason = f"not profiled: {r.get('status', 'no result')} {r.get('reason') or ''}".strip()
            return
        lat = ok[0].get("latency_ms") or {}
        cell.status, cell.reason = "ok", f"exported, gated and profiled (p50 {lat.get('p50', float('nan')):.3g} ms)"
    except VerificationError as e:
        cell.status, cell.reason = "failed", first_line(e, 300)
    except PartialDeployError as e:
        cell.status, cell.reason = "error", first_line(e, 300)
    except Exception as e:  # a converter or runtime crashed: this cell's failure, the sweep goes on
        cell.status, cell.reason = "error", f"{type(e).__name__}: {first_line(e, 300)}"


def _export(req: SweepRequest, cell: Cell):
    from partialdeploy.exporting.request import ExportRequest
    from partialdeploy.exporting.run import run_export

    er = ExportRequest(checkpoint=cell.checkpoint, targets=(cell.target,), precision=cell.precision,
                       out_dir=cell.dir, batch=req.batch, calib=req.calib if cell.precision == "int8" else None,
                       eval_dir=req.eval_dir if cell.precision == "int8" else None, command=req.export_command(cell))
    return run_export(er)


def _accuracy(req: SweepRequest, cell: Cell, sets: dict) -> None:
    """The cell's accuracy on the labelled set (the checkpoint's held-out set is loaded once per sweep)."""
    from partialdeploy.planner.accuracy import labelled_set, measure_export

    if cell.checkpoint_sha256 not in sets:
        sets[cell.checkpoint_sha256] = labelled_set(cell.checkpoint, req.eval_dir)
    data = sets[cell.checkpoint_sha256]
    if data is not None:
        measure_export(cell.dir, data)
