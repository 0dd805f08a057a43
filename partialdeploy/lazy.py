"""Is a runtime installed, and which version, without importing it (importing openvino, torch or
coremltools costs seconds; the CLI and the registries only need to know)."""

from __future__ import annotations

from importlib import metadata, util


def installed(*modules: str) -> bool:
    try:
        return all(util.find_spec(m) is not None for m in modules)
    except (ImportError, ValueError):
        return False


def dist_version(dist: str | None) -> str | None:
    if not dist:
        return None
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
