"""Artifact integrity: manifests read as untrusted JSON, files checked by sha256 before use (no torch,
no numpy: the device side imports this too). Parity gates are `verification.py`, not this module.

Every command that loads something from an export directory calls one of:

* :func:`verified_export` ``(dir or manifest.json) -> (manifest, base_dir, artifact entries)``: reads
  ``manifest.json`` as untrusted JSON (bounded size, schema checked) and verifies every listed
  artifact (or those of one target) before anything is loaded;
* :func:`check_artifact_files` ``(base_dir, entry) -> Path``: one manifest entry: its paths stay inside the
  export directory (no absolute paths, no ``..``, no symlink leading out) and its sha256 (per file
  when the manifest has ``files_sha256``, else the artifact's own) matches what is on disk;
* :func:`verify_inside_export` ``(path)``: for a path inside an export (a TensorRT bundle directory):
  finds the export's manifest above it and verifies the entry that holds it; ``None`` when the path
  is not part of an export (a bundle copied alone to the device);
* :func:`safe_join` ``(base, relative)``: a relative path from an untrusted file, kept inside ``base``.

A changed or missing file, or a path leaving the directory, is a UserError (exit 2) naming the file.
This module checks that files are what the manifest recorded; whether an artifact computes what the
train form does is :mod:`partialdeploy.verification` (``verify_artifact``, the parity gate).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from partialdeploy.errors import UserError
from partialdeploy.records import Artifact

MANIFEST = "manifest.json"
MANIFEST_SCHEMA_PREFIX = "partialdeploy.manifest/"
MAX_MANIFEST_BYTES = 16 << 20


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def artifact_sha256(path: Path) -> str:
    """sha256 of a file; of a directory (an .mlpackage, a TensorRT bundle): over its files' relative
    names and contents, sorted."""
    path = Path(path)
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(path.rglob("*")):
            if f.is_file():
                h.update(str(f.relative_to(path)).encode())
                h.update(bytes.fromhex(file_sha256(f)))
        return h.hexdigest()
    return file_sha256(path)


def files_sha256(base: Path, files) -> dict:
    """{relative path: sha256} for the files of an artifact (what the manifest records)."""
    return {f: artifact_sha256(Path(base) / f) for f in files}


def safe_join(base: Path, rel, what: str = "path") -> Path:
    """``base / rel`` for a relative path read from an untrusted file; refuses absolute paths, ``..``
    components and anything (symlinks included) that resolves outside ``base``."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise UserError(f"{what} {rel!r} is not a relative path: the manifest is damaged; re-export")
    p = Path(rel)
    if p.is_absolute() or rel.startswith(("/", "\\")) or ".." in p.parts or ":" in p.parts[0]:
        raise UserError(f"{what} {rel!r} leaves the export directory: refusing it (the manifest is damaged "
                        "or hostile); re-export")
    root = Path(base).resolve()
    full = (root / p).resolve()
    if full != root and root not in full.parents:
        raise UserError(f"{what} {rel!r} points outside the export directory (through a symlink): refusing it; "
                        "re-export")
    return Path(base) / p


def load_manifest(path: Path) -> dict:
    """Read ``manifest.json`` as untrusted input: bounded size, valid JSON, our schema, a list of
    artifact entries. UserError otherwise."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise UserError(f"{path} is {size >> 20} MiB, too large for a manifest: it is not one of ours")
        m = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no {MANIFEST} at {path.parent}: pass an export directory") from None
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{path} is not valid JSON ({str(e)[:120]}): re-export") from None
    if not isinstance(m, dict) or not isinstance(m.get("schema"), str) \
            or not m["schema"].startswith(MANIFEST_SCHEMA_PREFIX):
        schema = m.get("schema") if isinstance(m, dict) else None
        raise UserError(f"{path} is not a partialdeploy manifest (schema {schema!r})")
    arts = m.get("artifacts", [])
    if not isinstance(arts, list) or not all(isinstance(a, dict) for a in arts):
        raise UserError(f"{path}: 'artifacts' is not a list of entries: the manifest is damaged; re-export")
    for a in arts:
        try:  # the record's own checks (a non-text target/precision/path, damaged parity, ...)
            Artifact.from_dict(a)
        except ValueError as e:
            raise UserError(f"{path}: an artifact entry is damaged ({str(e)[:120]}): re-export") from None
    for key in ("model", "preprocessing"):
        if not isinstance(m.get(key, {}), dict):
            raise UserError(f"{path}: {key!r} is not a mapping: the manifest is damaged; re-export")
    size = (m.get("preprocessing") or {}).get("size")
    if size is not None and not (isinstance(size, list) and 1 <= len(size) <= 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 16384 for v in size)):
        raise UserError(f"{path}: preprocessing.size {str(size)[:40]} is not an image size: the manifest is damaged")
    return m


def entries(m: dict) -> list[Artifact]:
    """The artifact entries of a manifest read by :func:`load_manifest` (which validated them)."""
    return [Artifact.from_dict(a) for a in m.get("artifacts", [])]


def check_artifact_files(base: Path, entry: Artifact | dict) -> Path:
    """Check one manifest entry against the files on disk; returns the artifact's path."""
    base = Path(base)
    if not isinstance(entry, Artifact):
        try:
            entry = Artifact.from_dict(entry)
        except ValueError as e:
            raise UserError(f"a manifest entry is damaged ({str(e)[:120]}): re-export") from None
    path = safe_join(base, entry.path or None, "artifact path")
    files = entry.files or []
    if not isinstance(files, list):
        raise UserError(f"manifest entry {entry.path!r}: 'files' is not a list: re-export")
    for f in files:
        safe_join(base, f, "artifact file")
    if not path.exists():
        raise UserError(f"{path} is listed in the manifest but missing: re-export")
    per_file = entry.files_sha256
    if per_file is not None:
        if not isinstance(per_file, dict) or not per_file:
            raise UserError(f"manifest entry {entry.path!r}: 'files_sha256' is damaged: re-export")
        for f, want in per_file.items():
            p = safe_join(base, f, "artifact file")
            _check_one(p, want)
        return path
    _check_one(path, entry.sha256)
    return path


def _check_one(p: Path, want) -> None:
    if not isinstance(want, str) or len(want) != 64:
        raise UserError(f"the manifest has no valid sha256 for {p}: re-export")
    if not p.exists():
        raise UserError(f"{p} is listed in the manifest but missing: re-export")
    got = artifact_sha256(p)
    if got != want.lower():
        raise UserError(f"{p} was changed after export (sha256 {got[:12]}… ≠ manifest {want[:12]}…): refusing to "
                        "use it; re-export")


def manifest_path_of(source: Path) -> Path | None:
    src = Path(source)
    if src.is_dir() and (src / MANIFEST).exists():
        return src / MANIFEST
    if src.name == MANIFEST and src.is_file():
        return src
    return None


def verified_export(source: Path, targets=None) -> tuple[dict, Path, list[Artifact]]:
    """(manifest, export dir, verified artifact entries) of an export directory or manifest path;
    ``targets``: only entries whose ``target`` is in it (the others are not checked)."""
    mp = manifest_path_of(source)
    if mp is None:
        raise UserError(f"{source} has no {MANIFEST}: pass an export directory")
    m = load_manifest(mp)
    arts = [a for a in entries(m) if targets is None or a.target in targets]
    for a in arts:
        check_artifact_files(mp.parent, a)
    return m, mp.parent, arts


def export_of(path: Path, max_up: int = 3) -> tuple[dict, Path, Artifact | None] | None:
    """The export that holds ``path`` (an artifact or a file inside one): (manifest, export dir, the
    entry listing ``path`` or None), looking up to ``max_up`` folders up; None without a manifest.
    The one manifest lookup up the folders; the entry found is verified (sha256) before it is returned."""
    target = Path(path).resolve()
    d = target if target.is_dir() else target.parent
    for _ in range(max_up + 1):
        mp = d / MANIFEST
        if mp.is_file():
            m = load_manifest(mp)
            for a in entries(m):
                try:
                    full = safe_join(d, a.path or None, "artifact path").resolve()
                except UserError:
                    continue
                if full == target or (full.is_dir() and full in target.parents):
                    check_artifact_files(d, a)
                    return m, d, a
            return m, d, None
        if d.parent == d:
            break
        d = d.parent
    return None


def verify_inside_export(path: Path, max_up: int = 3) -> Artifact | None:
    """Verify the manifest entry of the export that holds ``path`` (an artifact or its directory).
    Returns that entry, or None when no manifest above ``path`` lists it."""
    found = export_of(path, max_up)
    return found[2] if found else None


def verify_profiled_artifacts(report: dict, report_path: Path) -> None:
    """A profile report inside an export directory: each artifact it measured must still be the one
    the export's manifest lists (same sha256) and still match it on disk."""
    mp = Path(report_path).parent / MANIFEST
    if not mp.is_file():
        return  # a report copied away from its export: nothing to check against
    m = load_manifest(mp)
    by_path = {a.path: a for a in entries(m)}
    for r in report.get("results", []):
        if not isinstance(r, dict) or not isinstance(r.get("sha256"), str) or not isinstance(r.get("artifact"), str):
            continue
        entry = by_path.get(r["artifact"])
        if entry is None or entry.sha256 != r["sha256"]:
            raise UserError(f"{report_path} measured {r['artifact']} (sha256 {r['sha256'][:12]}…), which is not what "
                            f"{mp} lists now: re-run `partialdeploy profile`")
        check_artifact_files(mp.parent, entry)
