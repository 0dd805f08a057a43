"""The runtime registry: one :class:`Backend` per runtime, the single source of truth for which
runtimes exist, the export targets each one converts to, which files it opens, the profile fields it
reads, whether it can run here and its version (an mmdeploy-style backend manager, kept small).

Each runtime is one package, ``backends/<runtime>/``: its ``__init__.py`` declares the ``BACKEND``
(light: no runtime imported), ``runner.py`` runs its artifacts (a :class:`~partialdeploy.backends.runner.Runner`:
open -> infer), ``target.py`` converts to them (a :class:`~partialdeploy.backends.target.Target`:
convert -> artifact), plus whatever else the runtime needs (TensorRT: its bundle, engine build and CUDA
environment). The registry finds the packages lazily (listing this folder, importing only the
declarations) and imports a runner or converter by its ``"module:Class"`` string only when it is used.
Target lists, profile field checks, file-suffix lookup and the CLI's help text are all derived from
here, so adding a runtime is one new package here (and its tests).
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from partialdeploy.errors import UserError


@dataclass(frozen=True)
class Backend:
    name: str  # the runtime, as manifests and ``profile --target`` name it: "onnxruntime"
    runner: str  # "module:Class" of its Runner (open -> runner)
    targets: dict[str, str] = field(default_factory=dict)  # export target -> "module:Class" of its Target
    aliases: tuple[str, ...] = ()  # other names that mean this runtime ("ov", "trt"; "onnx" runs in ORT)
    suffixes: tuple[str, ...] = ()  # model files it opens, lower-case (".xml")
    bundle_files: tuple[str, ...] = ()  # files that make a directory one of its artifacts
    options: dict[str, tuple] = field(default_factory=dict)  # profile field -> (types, description[, choices])
    check_options: Callable[[dict, str], None] | None = None  # cross-field profile checks (UserError)
    label: str = ""  # how people write the runtime's name ("ONNX Runtime"), for stage names
    # distributions that provide the runtime (the first installed is reported, under the first name:
    # "onnxruntime" for onnxruntime-gpu too), and others its runner needs, reported under their own names
    dists: tuple[str, ...] = ()
    helper_dists: tuple[str, ...] = ()
    # when this runtime cannot run here: (file inside its artifact, runtime) that `diff` compares instead
    diff_via: tuple[str, str] | None = None
    # how to install it on an edge device (`remote check`, `profile --remote` say it); "": not run on devices
    device_install: str = ""

    def runner_class(self):
        return _load(self.runner)

    def target_class(self, target: str):
        return _load(self.targets[target])

    def is_available(self) -> bool:
        """Can this runtime *run* an artifact here (hardware and modules)?"""
        return self.runner_class().is_available()

    def unavailable_reason(self) -> str | None:
        return self.runner_class().unavailable_reason()

    def version(self) -> str | None:
        """The installed runtime's version (None when it is not installed)."""
        return self.runner_class().runtime_version()


def _load(spec: str):
    mod, _, cls = spec.partition(":")
    return getattr(importlib.import_module(mod), cls)


_registry: dict[str, Backend] = {}
_discovered = False


def register(backend: Backend) -> Backend:
    """Add (or replace) a backend; the built-in ones register themselves from this package."""
    _registry[backend.name] = backend
    return backend


def unregister(name: str) -> None:
    _registry.pop(name, None)


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    _discovered = True
    runtimes = [m for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.ispkg]
    for m in sorted(runtimes, key=lambda m: _ORDER.get(m.name, 99)):
        b = getattr(importlib.import_module(f"{__name__}.{m.name}"), "BACKEND", None)
        if isinstance(b, Backend) and b.name not in _registry:
            _registry[b.name] = b


_ORDER = {"onnxruntime": 0, "openvino": 1, "coreml": 2, "tensorrt": 3, "torch": 4}  # listing order


def all_backends() -> list[Backend]:
    _discover()
    return list(_registry.values())


def get(name: str | None) -> Backend:
    """The backend of a runtime name or alias (``ov``, ``trt``, ``onnx``); UserError if none."""
    b = find(name)
    if b is None:
        raise UserError(f"no runtime {name!r}; choose one of {', '.join(runtime_names())}")
    return b


def find(name: str | None) -> Backend | None:
    for b in all_backends():
        if name == b.name or name in b.aliases:
            return b
    return None


def canonical(name: str | None) -> str | None:
    """The runtime a manifest target name runs in (``onnx`` -> ``onnxruntime``); unknown names unchanged."""
    b = find(name)
    return b.name if b else name


def runtime_names() -> tuple[str, ...]:
    return tuple(b.name for b in all_backends())


def target_names() -> tuple[str, ...]:
    """Every export target, in listing order (``--target all``)."""
    return tuple(t for b in all_backends() for t in b.targets)


def backend_of_target(target: str) -> Backend:
    for b in all_backends():
        if target in b.targets:
            return b
    raise UserError(f"unknown target {target!r}; choose one of {', '.join(target_names())} or all")


def get_target(target: str):
    """An instance of the export target ``target`` (its module imported now, not before)."""
    return backend_of_target(target).target_class(target)()


def suffixes() -> dict[str, str]:
    return {s: b.name for b in all_backends() for s in b.suffixes}


def runtime_for_path(path: str | Path) -> str:
    """The runtime that opens ``path``: by suffix, or a backend's bundle directory."""
    p = Path(path)
    suf = p.suffix.lower()
    table = suffixes()
    if p.is_dir() and suf not in table:
        for b in all_backends():
            if any((p / n).exists() for n in b.bundle_files):
                return b.name
    if suf not in table:
        raise UserError(f"cannot tell the runtime of {path}: expected one of {', '.join(table)} or pass --target")
    return table[suf]


def distributions() -> dict[str, str]:
    """Every distribution a runtime comes in -> the name its version is reported under (environment
    fingerprints of profile reports)."""
    out: dict[str, str] = {}
    for b in all_backends():
        for d in b.dists:
            out.setdefault(d, b.dists[0])
        for d in b.helper_dists:
            out.setdefault(d, d)
    return out


def device_runtimes() -> tuple[str, ...]:
    """The runtimes `profile --remote` can run on an edge device (those that say how to install them)."""
    return tuple(b.name for b in all_backends() if b.device_install)


def profile_fields() -> dict[str, tuple]:
    """Profile fields the backends read: field -> (types, description[, choices])."""
    out: dict[str, tuple] = {}
    for b in all_backends():
        out.update(b.options)
    return out


def check_profile(fields: dict, where: str) -> None:
    for b in all_backends():
        if b.check_options:
            b.check_options(fields, where)
