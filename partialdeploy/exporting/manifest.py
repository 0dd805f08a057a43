"""The end of an export: the artifacts are moved into place and ``manifest.json`` written last, all or
nothing (safety.commit); then the previous model's artifacts are removed and what else is left in the
folder is named (export_dir)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from partialdeploy.version import __version__
from partialdeploy.backends import target_names
from partialdeploy.records import Artifact
from partialdeploy.backends import get_target
from partialdeploy.exporting import export_dir
from partialdeploy.images import preprocessing_record
from partialdeploy.integrity import MANIFEST

MANIFEST_SCHEMA = "partialdeploy.manifest/1"


def place(out_dir: Path, staging: Path, staged, artifacts: list[Artifact], write_manifest, sha256: str) -> list[str]:
    """Move each staged artifact to its ``<target>/<precision>`` and call ``write_manifest(path)`` last,
    all or nothing (a failure restores the previous state); returns the notes of the tidy-up."""
    from partialdeploy.safety import commit

    for art, (_, rel) in zip(artifacts, staged):
        art.path = (rel / art.path).as_posix()
        art.files = [(rel / f).as_posix() for f in art.files]
    manifest_path = out_dir / MANIFEST
    prev = export_dir.read_previous(out_dir)
    commit(out_dir, staging, staged, lambda: write_manifest(manifest_path))
    return tidy(out_dir, prev, sha256, {(a.target, a.precision) for a in artifacts})


def write_json_atomic(path: Path, obj) -> None:
    from partialdeploy.safety import write_json_atomic as write

    write(path, json.dumps(obj, indent=2, default=str) + "\n")


def tidy(out_dir: Path, prev: dict | None, sha256: str, new_keys) -> list[str]:
    """After the new manifest is in place: remove the previous model's artifacts it no longer lists and
    name what else is left in the folder (export_dir)."""
    gone = export_dir.remove(export_dir.stale_paths(out_dir, prev, sha256, new_keys), out_dir)
    notes = [f"removed the previous model's artifacts: {', '.join(gone)}"] if gone else []
    left = export_dir.leftovers(out_dir, json.loads((out_dir / MANIFEST).read_text()))
    if left:
        notes.append(f"left in {out_dir} (not listed in its manifest): {', '.join(left)}")
    return notes


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def record(out_dir: Path, a: Artifact, command: str) -> Artifact:
    """``a``, placed in ``out_dir``, with what the manifest records of it: its hashes, size, command."""
    from partialdeploy.integrity import artifact_sha256, files_sha256

    p = out_dir / a.path
    a.sha256, a.files_sha256, a.size_bytes = artifact_sha256(p), files_sha256(out_dir, a.files), _size(p)
    a.command = command
    return a


def kept_entries(prev: dict, out_dir: Path, new_keys) -> list[Artifact]:
    """The previous manifest's artifacts of the same checkpoint that this export does not replace and
    that are still on disk (entries it cannot read are dropped)."""
    kept = []
    for d in prev.get("artifacts", []) if isinstance(prev.get("artifacts"), list) else []:
        try:
            e = Artifact.from_dict(d)
        except ValueError:
            continue
        if (e.target, e.precision) not in new_keys and (out_dir / e.path).exists():
            kept.append(e)
    return kept


def _previous(out_dir: Path) -> dict:
    mp = out_dir / MANIFEST
    if mp.exists():
        try:
            prev = json.loads(mp.read_text())
            return prev if isinstance(prev, dict) else {}
        except (OSError, ValueError):
            return {}
    return {}


def _versions(artifacts) -> dict:
    import platform

    import torch

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in sorted({a.target for a in artifacts}):
        try:
            versions[name] = get_target(name).version()
        except Exception:
            versions[name] = None
    return versions


def build_manifest(out_dir: Path, spec, ckpt, artifacts, failures, skipped, stages, onnx_info, req,
                   calibration: dict | None = None, complexity: dict | None = None,
                   check_images: dict | None = None) -> dict:
    """The manifest of this export: its artifacts after those of the previous manifest of the same
    checkpoint that it does not replace."""
    prev = _previous(out_dir)
    new_keys = {(a.target, a.precision) for a in artifacts}
    kept = []
    if isinstance(prev.get("model"), dict) and prev["model"].get("checkpoint_sha256") == ckpt.sha256:
        kept = kept_entries(prev, out_dir, new_keys)
    command = req.command or "partialdeploy export"
    return {
        "schema": MANIFEST_SCHEMA,
        "tool": {"name": "partialdeploy", "version": __version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
        "model": {**spec.to_dict(), "checkpoint": ckpt.path.name, "checkpoint_format": ckpt.format,
                  "checkpoint_sha256": ckpt.sha256, **(complexity or {})},
        "preprocessing": preprocessing_record(spec),
        "onnx": onnx_info,
        "calibration": calibration,
        "check_images": check_images,  # what the parity gates judged on (check_images.py)
        "pipeline": [s.to_dict() for s in stages],
        "versions": _versions(artifacts),
        "artifacts": [e.to_dict() for e in kept + [record(out_dir, a, command) for a in artifacts]],
        "failures": [f.to_dict() for f in failures],
        "skipped": [k.to_dict() for k in skipped],
        "targets_known": list(target_names()),
    }
