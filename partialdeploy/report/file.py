"""Where a profile report lands: one writer at a time, and never an empty run over a real report.

* ``ReportLock`` — an exclusive ``fcntl`` lock on a hidden ``.NAME.lock`` file beside the report:
  a second ``profile`` writing the same report is refused (exit 2) instead of both writing and the
  last one winning. The lock file stays (removing it would let a third run lock a different inode).
* ``write`` — atomic (temporary file + rename). A report that measured nothing never replaces an
  existing file: the existing report is evidence; an empty run is not.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

from partialdeploy.errors import UserError
from partialdeploy.safety import write_atomic


def measured_count(report: dict) -> int:
    """How many result rows were timed (status ok with latency numbers)."""
    return sum(1 for r in report.get("results", [])
               if isinstance(r, dict) and r.get("status") == "ok" and r.get("latency_ms"))


class ReportLock:
    """``with ReportLock(path):`` — refuse (UserError) when another run holds the lock on ``path``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.lock_path = self.path.with_name(f".{self.path.name}.lock")
        self.fd: int | None = None

    def __enter__(self) -> "ReportLock":
        try:
            self.lock_path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise UserError(f"cannot write the report beside {self.path}: {e.strerror}; choose another -o") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise UserError(f"another partialdeploy profile run is writing {self.path} right now: wait for it to "
                            "finish (two runs at once also slow each other down) or give this one its own -o") from None
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing releases the flock
            self.fd = None


def write(report: dict, path: str | Path) -> bool:
    """Write ``report`` to ``path`` atomically; returns False (and writes nothing) when the report
    measured nothing and ``path`` already holds a report."""
    p = Path(path)
    if measured_count(report) == 0 and p.exists():
        return False
    p.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(p, json.dumps(report, indent=1, default=str), prefix=".profile-")
    return True
