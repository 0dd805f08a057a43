"""Whose folder is it: an export writes only into a folder that is its own, and says what is left.

* :func:`check_owned` (before any work): a ``manifest.json`` that is not a partialdeploy manifest
  means the folder belongs to something else (a web app, another tool) — refused, exit 2; without a
  manifest, an existing ``<target>/<precision>`` directory the export would replace is refused too.
* :func:`stale_paths`: when another checkpoint is exported into the folder, the previous model's
  artifacts (recorded in the previous manifest, so this tool's own) are no longer listed; they are
  removed once the new manifest is in place instead of lying around orphaned.
* :func:`leftovers`: what stays in the folder that the new manifest does not list (named in a note).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from partialdeploy.errors import UserError
from partialdeploy.integrity import MANIFEST

SCHEMA_PREFIX = "partialdeploy.manifest/"
MAX_MANIFEST_BYTES = 64 << 20


def read_previous(out_dir: Path) -> dict | None:
    """The previous manifest of ``out_dir`` (None when there is none); UserError when the file there is
    not a partialdeploy manifest."""
    mp = Path(out_dir) / MANIFEST
    if not mp.exists() and not mp.is_symlink():
        return None
    what = None
    try:
        if mp.is_symlink() or not mp.is_file():
            what = "not a regular file"
        elif mp.stat().st_size > MAX_MANIFEST_BYTES:
            what = "too large"
        else:
            data = json.loads(mp.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not str(data.get("schema", "")).startswith(SCHEMA_PREFIX):
                what = "no partialdeploy schema"
    except (OSError, ValueError, RecursionError):
        what = "not readable JSON"
    if what:
        raise UserError(f"{mp} is not a partialdeploy manifest ({what}): {out_dir} belongs to something else; "
                        "export into another folder (-o)")
    return data


def check_owned(out_dir: Path, targets, precision: str) -> None:
    """Refuse (exit 2) to write into a folder that is not this tool's (see the module doc)."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return
    if read_previous(out_dir) is not None:
        return
    for t in targets:
        d = out_dir / t / precision
        if d.exists() or d.is_symlink():
            raise UserError(f"{d} exists but no partialdeploy manifest in {out_dir} records it: it is not this "
                            "tool's to replace; export into another folder (-o) or remove it")


def _inside(out_dir: Path, rel: str) -> Path | None:
    """``out_dir / rel`` when that stays inside ``out_dir`` (no .., no symlinked parent), else None."""
    try:
        p = (out_dir / rel)
        if p.is_symlink() or not p.resolve().is_relative_to(out_dir.resolve()) or p.resolve() == out_dir.resolve():
            return None
        return p
    except (OSError, ValueError):
        return None


def stale_paths(out_dir: Path, prev: dict | None, checkpoint_sha256: str, new_keys) -> list[Path]:
    """The previous model's artifact directories (``<target>/<precision>``) that the new manifest will
    not list: only when the previous manifest is of another checkpoint (the same checkpoint keeps
    them), only directories the previous manifest recorded, only inside ``out_dir``."""
    if not prev or (prev.get("model") or {}).get("checkpoint_sha256") == checkpoint_sha256:
        return []
    out: list[Path] = []
    for e in prev.get("artifacts") or []:
        if not isinstance(e, dict) or (e.get("target"), e.get("precision")) in new_keys:
            continue
        t, p = e.get("target"), e.get("precision")
        if not (isinstance(t, str) and isinstance(p, str) and t and p and "/" not in t + p and ".." not in t + p):
            continue
        d = _inside(Path(out_dir), f"{t}/{p}")
        if d is not None and d.is_dir() and d not in out:
            out.append(d)
    return out


def remove(paths: list[Path], out_dir: Path) -> list[str]:
    """Remove ``paths`` (and parents left empty, up to ``out_dir``); the names removed."""
    gone = []
    for d in paths:
        shutil.rmtree(d, ignore_errors=True)
        if not d.exists():
            gone.append(d.relative_to(out_dir).as_posix())
            try:
                d.parent.rmdir() if d.parent != Path(out_dir) else None
            except OSError:
                pass
    return gone


def leftovers(out_dir: Path, manifest: dict) -> list[str]:
    """Top-level entries of ``out_dir`` the manifest does not account for (hidden files aside), with
    a word on a profile report of another model."""
    listed = {str(e.get("path", "")).split("/", 1)[0] for e in manifest.get("artifacts", []) if isinstance(e, dict)}
    out = []
    for p in sorted(Path(out_dir).iterdir()):
        if p.name.startswith(".") or p.name == MANIFEST or p.name in listed:
            continue
        if p.name == "profile.json":
            try:
                prof = json.loads(p.read_text(encoding="utf-8"))
                sha = (prof.get("model") or {}).get("checkpoint_sha256")
            except (OSError, ValueError, AttributeError):
                sha = None
            if sha == (manifest.get("model") or {}).get("checkpoint_sha256"):
                continue
            out.append("profile.json (measures another model's artifacts: run `partialdeploy profile` again)")
            continue
        out.append(p.name + ("/" if p.is_dir() else ""))
    return out
