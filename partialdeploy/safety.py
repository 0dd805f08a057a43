"""Faults leave nothing claimed: signals, a full disk, a crashing converter, concurrent exports.

:func:`export_guard` wraps one export into an output directory:

* **one export per directory**: an exclusive ``flock`` on the output directory; a second export into
  the same directory at the same time is refused at once (exit 2) with a clear message;
* **staging**: :meth:`Guard.new_staging` makes the staging directory next to the output (locked
  too, so that a later run can tell a dead run's staging from a live one and removes what a
  ``kill -9`` or a crashed converter left behind);
* **signals**: SIGTERM (what CI runners send on cancel or timeout) raises :class:`Terminated`, a
  KeyboardInterrupt, exactly as Ctrl-C does; both are *deferred* while files are being moved into
  place or cleaned up, so the output is never half-replaced;
* **full disk**: ENOSPC / EDQUOT / EFBIG (RLIMIT_FSIZE) become a UserError (exit 2);
* on any failure the staging directory is removed, and an output directory this run created and
  left empty is removed again.

:func:`commit` moves the verified artifacts into place and writes the manifest all-or-nothing: if
writing the manifest fails (disk full) or anything else goes wrong, every move is undone and the
previous artifacts and manifest are back as they were.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
import signal
import stat
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from partialdeploy.errors import UserError

STAGING_PREFIX = ".partialdeploy-staging-"
NEW_PREFIX = ".partialdeploy-new-"
DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP) received: handled like Ctrl-C, exit 128 + signal number."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum)


def disk_full_error(e: BaseException | None) -> OSError | None:
    """The ENOSPC / EDQUOT / EFBIG error in ``e`` or in what caused it (converters wrap them)."""
    seen = 0
    while e is not None and seen < 20:
        if isinstance(e, OSError) and e.errno in DISK_FULL:
            return e
        e, seen = e.__cause__ or e.__context__, seen + 1
    return None


def is_disk_full(e: BaseException) -> bool:
    return disk_full_error(e) is not None


# ------------------------------------------------------------------------------------------ signals

_state = threading.local()
_defer: dict = {"depth": 0, "pending": None, "received": None}


def received() -> int | None:
    """The last signal our handler received (None if none)."""
    return _defer.get("received")


def _handler(signum, frame):
    _defer["received"] = signum
    if _defer["depth"]:
        _defer["pending"] = _defer["pending"] or signum
        return
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    raise Terminated(signum)


def install_signal_handlers() -> dict:
    """SIGTERM/SIGHUP -> Terminated, SIGINT -> KeyboardInterrupt (both deferrable). Only from the main
    thread (elsewhere Python cannot install handlers: nothing is changed). Returns the old handlers."""
    old: dict = {}
    if threading.current_thread() is not threading.main_thread():
        return old
    for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        try:
            old[s] = signal.signal(s, _handler)
        except (ValueError, OSError):
            pass
    return old


def restore_signal_handlers(old: dict) -> None:
    for s, h in old.items():
        try:
            signal.signal(s, h if h is not None else signal.SIG_DFL)
        except (ValueError, OSError, TypeError):
            pass


@contextmanager
def signals_deferred():
    """Ctrl-C / SIGTERM arriving inside the block take effect when it ends (moves and clean-up are
    never cut in half)."""
    _defer["depth"] += 1
    try:
        yield
    finally:
        _defer["depth"] -= 1
        if _defer["depth"] == 0 and _defer["pending"]:
            signum, _defer["pending"] = _defer["pending"], None
            if signal.getsignal(signum) is _handler:
                _handler(signum, None)


# ------------------------------------------------------------------------------------------ locks

def _lock_dir(path: Path) -> int | None:
    """An fd holding an exclusive flock on directory ``path``; None when someone else holds it."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def refuse_while_exporting(folder: Path, what: str) -> None:
    """A reader of an export folder (``profile``, ``diff``) refuses it while an export holds its lock:
    the manifest and the artifacts are being replaced."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return  # not a folder we can open: the caller's own checks say what is wrong
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UserError(f"an export into {folder} is running right now: {what} it when the export has "
                        "finished") from None
    finally:
        os.close(fd)  # closing releases the shared lock at once


def clean_stale_staging(parent: Path) -> list[str]:
    """Remove staging directories in ``parent`` that no live run holds (left by kill -9 or a crash)."""
    removed = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    for p in entries:
        if not p.name.startswith((STAGING_PREFIX, NEW_PREFIX)) or p.is_symlink() or not p.is_dir():
            continue
        if p.name.startswith(NEW_PREFIX):  # not yet locked by its run: only when clearly abandoned
            try:
                if time.time() - p.stat().st_mtime < 3600:
                    continue
            except OSError:
                continue
        try:
            fd = _lock_dir(p)
        except OSError:
            continue
        if fd is None:
            continue  # a live run holds it
        try:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
        finally:
            os.close(fd)
    return removed


class Guard:
    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.created: list[Path] = []
        self._lock_fd: int | None = None
        self._staging: list[tuple[Path, int]] = []
        self.cleaned: list[str] = []

    def acquire(self) -> None:
        out = self.out_dir
        if out.exists() and not out.is_dir():
            raise UserError(f"output {out} exists and is not a directory: choose another -o")
        missing = []
        p = out.absolute()
        while not p.exists():
            missing.append(p)
            p = p.parent
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create the output directory {out}: {e.strerror}; choose another -o") from None
        self.created = missing  # deepest first
        fd = _lock_dir(out)
        if fd is None:
            raise UserError(f"another partialdeploy export is writing into {out} right now: wait for it to "
                            "finish or choose another -o")
        self._lock_fd = fd
        self.cleaned = clean_stale_staging(out.absolute().parent)

    def new_staging(self) -> Path:
        """A staging directory next to the output (same filesystem: artifacts are renamed into place),
        locked for as long as this run lives."""
        parent = self.out_dir.absolute().parent
        tmp = Path(tempfile.mkdtemp(prefix=NEW_PREFIX, dir=parent))
        fd = _lock_dir(tmp)
        final = tmp.with_name(STAGING_PREFIX + tmp.name[len(NEW_PREFIX):])
        os.rename(tmp, final)
        self._staging.append((final, fd))
        return final

    def release(self) -> None:
        for path, fd in self._staging:
            shutil.rmtree(path, ignore_errors=True)
            os.close(fd)
        self._staging.clear()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        for d in self.created:  # a directory this run made and left empty goes again
            try:
                d.rmdir()
            except OSError:
                break


@contextmanager
def export_guard(out_dir: Path):
    """Lock, staging, signals and disk-full handling for one export (see the module doc)."""
    old = install_signal_handlers()
    guard = Guard(out_dir)
    try:
        try:
            guard.acquire()
            yield guard
        except Exception as exc:
            e = disk_full_error(exc)
            if e is not None:
                raise UserError(f"the disk is full writing {Path(e.filename).name if e.filename else out_dir} "
                                f"({e.strerror}): nothing was changed in {out_dir}; free space or choose "
                                "another -o") from None
            raise
        finally:
            with signals_deferred():
                guard.release()
    finally:
        restore_signal_handlers(old)


# ------------------------------------------------------------------------------------------ commit

def current_umask() -> int:
    """The process umask (read without changing it for longer than the call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def share_per_umask(path: Path) -> None:
    """Give ``path`` (a file, or a directory and everything under it) the modes a plain ``mkdir`` /
    ``open`` would have given it under the current umask: staging is private (``mkdtemp`` 0700,
    ``mkstemp`` 0600), what is committed is readable as the user's umask says (a model server running
    as another user reads it). Executable files keep their execute bits (as the umask allows);
    symlinks are left alone."""
    mask = current_umask()

    def fix(p: Path) -> None:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            return
        if stat.S_ISDIR(st.st_mode):
            os.chmod(p, 0o777 & ~mask)
        elif stat.S_ISREG(st.st_mode):
            os.chmod(p, (0o777 if st.st_mode & stat.S_IXUSR else 0o666) & ~mask)

    path = Path(path)
    fix(path)
    if path.is_dir() and not path.is_symlink():
        for root, dirs, files in os.walk(path):
            for name in dirs + files:
                fix(Path(root) / name)


def commit(out_dir: Path, staging: Path, moves: list[tuple[Path, Path]], finish: Callable[[], None]) -> None:
    """Move each staged ``src`` to ``out_dir / rel`` (an existing one is moved aside into ``staging``),
    then ``finish()`` (writes the manifest). All or nothing (see the module doc). Each moved item gets
    the modes the umask gives (``share_per_umask``): staging is private, the committed export is not."""
    done: list[tuple[Path, Path | None, Path]] = []
    made: list[Path] = []
    with signals_deferred():
        try:
            for src, _ in moves:
                share_per_umask(Path(src))
            for i, (src, rel) in enumerate(moves):
                dst = Path(out_dir) / rel
                for d in reversed([q for q in [dst.parent, *dst.parent.parents] if not q.exists()]):
                    d.mkdir()
                    made.append(d)
                aside = None
                if dst.exists() or dst.is_symlink():
                    aside = Path(staging) / f"old-{i}"
                    os.replace(dst, aside)
                done.append((dst, aside, Path(src)))
                os.replace(src, dst)
            finish()
        except BaseException:
            for dst, aside, src in reversed(done):
                if dst.exists() and not src.exists():
                    os.replace(dst, src)
                if aside is not None:
                    os.replace(aside, dst)
            for d in reversed(made):
                try:
                    d.rmdir()
                except OSError:
                    pass
            raise


def write_atomic(path: Path, data: str | bytes, prefix: str = ".write-") -> None:
    """Write ``data`` (text or bytes) to ``path`` through a temporary file + rename, with the modes the
    umask gives; on failure (disk full, interrupt) the temporary file is removed and ``path`` is
    untouched. The one atomic writer: manifests, profile reports, JUnit files, plans, sidecars."""
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=Path(path).parent)
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~current_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


write_json_atomic = write_atomic  # the name its JSON callers use
