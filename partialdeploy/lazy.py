"""Is a runtime installed, and which version, without importing it (importing openvino, torch or
coremltools costs seconds; the CLI and the registries only need to know); and, on an edge device, its
import that reports a broken install instead of raising. Standard library only."""

from __future__ import annotations

import importlib
from importlib import metadata, util


def installed(*modules: str) -> bool:
    try:
        return all(util.find_spec(m) is not None for m in modules)
    except (ImportError, ValueError):
        return False


def probe_import(name: str):
    """(module, None) or (None, why: "not installed" / "does not import: ..."): a runtime's import on a
    device, where a broken install (a missing shared library) must be reported, not raised."""
    try:
        return importlib.import_module(name), None
    except ModuleNotFoundError as e:
        if e.name and name.startswith(e.name):
            return None, "not installed"
        return None, f"does not import: {_first(e)}"
    except Exception as e:  # a broken install raises OSError (missing .so) & co.
        return None, f"does not import: {_first(e)}"


def _first(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:200]


def dist_version(dist: str | None) -> str | None:
    if not dist:
        return None
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
