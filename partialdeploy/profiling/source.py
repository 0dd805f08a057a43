"""What to profile: the artifacts of an export directory or manifest (each checked against its
sha256 before anything is loaded), or one model file; and where the report goes unless told."""

from __future__ import annotations

from pathlib import Path

from partialdeploy.errors import UserError
from partialdeploy.records import Artifact
from partialdeploy.integrity import MANIFEST


def plan(source: str | Path, target: str | None = None) -> tuple[dict, list[Artifact], Path]:
    """(manifest-ish header, artifact entries, base dir) for an export dir, a manifest.json, or
    a single model file (``target`` from the suffix unless given)."""
    from partialdeploy.backends import canonical, runtime_for_path

    src = Path(source)
    if not src.exists():
        raise UserError(f"no such file or directory: {src}")
    manifest_path = src / MANIFEST if src.is_dir() else src if src.name == MANIFEST else None
    if manifest_path is not None:
        from partialdeploy.safety import refuse_while_exporting

        refuse_while_exporting(manifest_path.parent, "profile")
    if manifest_path is not None and manifest_path.exists():
        from partialdeploy.integrity import entries, load_manifest, check_artifact_files

        m = load_manifest(manifest_path)
        arts = [a for a in entries(m) if a.path]
        if target:
            want = canonical(target)
            arts = [a for a in arts if canonical(a.target) == want]
        if not arts:
            raise UserError(f"{manifest_path} lists no artifacts" + (f" for target {target}" if target else ""))
        for a in arts:  # every artifact is checked against its sha256 before anything is loaded
            check_artifact_files(manifest_path.parent, a)
        header = {"model": m.get("model", {}), "preprocessing": m.get("preprocessing", {}),
                  "manifest": str(manifest_path), "manifest_tool": m.get("tool")}
        return header, arts, manifest_path.parent
    if src.is_dir() and src.suffix.lower() not in (".mlpackage",) and target is None:
        try:
            tgt = runtime_for_path(src)
        except UserError:
            from partialdeploy.backends import suffixes

            raise UserError(f"{src} has no {MANIFEST}: profile an export directory, a manifest or a model file "
                            f"({', '.join(suffixes())})") from None
    else:
        tgt = target or runtime_for_path(src)
    from partialdeploy.integrity import verify_inside_export

    verify_inside_export(src)  # a file inside an export directory is checked against its manifest
    entry = Artifact(target=tgt, precision="?", path=src.name)
    return {"model": {"name": src.stem}, "preprocessing": {}, "manifest": None}, [entry], src.parent


def default_report_path(source: str | Path) -> Path:
    """Where ``profile`` writes its report unless told: DIR/profile.json for an export directory,
    else beside the model file."""
    src = Path(source)
    return (src if src.is_dir() and (src / MANIFEST).exists() else src.parent) / "profile.json"
