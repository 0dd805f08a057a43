"""Typed records that travel between stages and are stored on disk, each with one serializer.

* :class:`ParityResult` — one parity gate's numbers (``parity.gate`` makes them; the manifest, the
  TensorRT bundle and the engine sidecar store them);
* :class:`ManifestEntry` — one artifact in ``manifest.json`` (written by ``pipeline``, read by
  ``verify``, ``profiling``, ``diff``, ``tensorrt_build``);

``to_dict`` gives plain JSON types; ``from_dict`` is its inverse and reads files written by any earlier
version (missing keys take their defaults, unknown keys are kept and written back). Plain Python, no
numpy: the device side (``verify``, ``build-engine``) reads these too.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


def _plain(v):
    """A numpy scalar as the Python number it holds; anything else unchanged."""
    if isinstance(v, (bool, int, float, str)) or v is None:
        return v
    item = getattr(v, "item", None)
    return item() if callable(item) and getattr(v, "shape", None) == () else v


def _number(d: dict, key: str, where: str) -> float:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{where}: {key}={str(v)[:40]!r} is not a number")
    return float(v)


@dataclass
class ParityResult:
    stage: str
    n: int
    max_abs: float
    rel_max: float
    cosine_min: float
    top1_agree: float
    acc_ref: float | None = None
    acc: float | None = None
    tolerance: dict | None = None
    passed: bool = True
    reason: str = ""

    def to_dict(self) -> dict:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, d: dict) -> "ParityResult":
        """The inverse of :meth:`to_dict`; ValueError naming the field when ``d`` is not one."""
        if not isinstance(d, dict) or not isinstance(d.get("stage"), str):
            raise ValueError("a parity result needs a mapping with a text 'stage'")
        where = f"parity {d['stage'][:60]!r}"
        n = d.get("n")
        if isinstance(n, bool) or not isinstance(n, int):
            raise ValueError(f"{where}: n={str(n)[:40]!r} is not an integer")
        opt = {}
        for k in ("acc_ref", "acc"):
            opt[k] = None if d.get(k) is None else _number(d, k, where)
        tol = d.get("tolerance")
        if tol is not None and not isinstance(tol, dict):
            raise ValueError(f"{where}: tolerance is not a mapping")
        if not isinstance(d.get("passed", True), bool) or not isinstance(d.get("reason", ""), str):
            raise ValueError(f"{where}: passed/reason malformed")
        return cls(d["stage"], n, *(_number(d, k, where) for k in ("max_abs", "rel_max", "cosine_min", "top1_agree")),
                   **opt, tolerance=tol, passed=d.get("passed", True), reason=d.get("reason", ""))

    def summary(self) -> str:
        s = (f"max|Δ|={self.max_abs:.3g} (rel {self.rel_max:.3g}), cos≥{self.cosine_min:.6f}, "
             f"top-1 agree {100 * self.top1_agree:.1f}%")
        if self.acc is not None and self.acc_ref is not None:
            s += f", acc {100 * self.acc_ref:.2f}%→{100 * self.acc:.2f}%"
        return s

    def cell(self) -> str:
        """The short form a table shows: cosine, relative max |Δ|, top-1 agreement (and accuracy)."""
        s = f"cos {self.cosine_min:.6f}, rel {self.rel_max:.2g}, top-1 {100 * self.top1_agree:.1f}%"
        if self.acc is not None and self.acc_ref is not None:
            s += f", acc {100 * self.acc_ref:.2f}→{100 * self.acc:.2f}%"
        return s


def parity_list(items) -> list[ParityResult]:
    """A stored list of parity results (``[]`` for None); ValueError when it is not one."""
    if items is None:
        return []
    if not isinstance(items, list):
        raise ValueError("parity is not a list")
    return [p if isinstance(p, ParityResult) else ParityResult.from_dict(p) for p in items]


@dataclass
class ManifestEntry:
    """One artifact of ``manifest.json``. The integrity fields (``path``, ``files``, ``sha256``,
    ``files_sha256``) are kept exactly as read — ``verify.verify_artifact`` judges them — so a damaged
    value is refused there, never silently replaced by a default here."""

    target: str
    precision: str
    path: str
    files: list = field(default_factory=list)  # every file, relative to the export dir
    sha256: str | None = None  # of the artifact (a directory: over its files)
    files_sha256: dict | None = None  # {file: sha256}; absent in manifests before per-file hashes
    size_bytes: int | None = None
    inputs: list = field(default_factory=list)  # [{name, shape, dtype}]
    outputs: list = field(default_factory=list)
    parity: list[ParityResult] = field(default_factory=list)
    verified: str = "converted"
    runtime_version: str | None = None
    notes: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # what the runner needs to open it as the gate did
    command: str | None = None
    other: dict = field(default_factory=dict)  # keys this version does not know, written back unchanged

    _KEYS = ("target", "precision", "path", "files", "sha256", "files_sha256", "size_bytes", "inputs", "outputs",
             "parity", "verified", "runtime_version", "notes", "extra", "command")

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in self._KEYS}
        d["parity"] = [p.to_dict() for p in self.parity]
        return {**d, **self.other}

    @classmethod
    def from_dict(cls, d: dict) -> "ManifestEntry":
        """The inverse of :meth:`to_dict`, for manifests of every version (missing keys: defaults).
        ValueError when ``d`` is not an artifact entry (target/precision/path not text, parity damaged)."""
        if not isinstance(d, dict):
            raise ValueError("an artifact entry is not a mapping")
        if not all(isinstance(d.get(k, ""), str) for k in ("target", "precision", "path")):
            raise ValueError("an artifact entry has a non-text target/precision/path")
        kw = {k: d[k] for k in cls._KEYS if k in d and d[k] is not None}
        kw.setdefault("target", "")
        kw.setdefault("precision", "?")
        kw.setdefault("path", "")
        for k in ("files", "sha256", "files_sha256", "size_bytes"):  # integrity: as read, None included
            if k in d:
                kw[k] = d[k]
        if not isinstance(kw.get("extra", {}), dict):
            kw["extra"] = {}
        kw["parity"] = parity_list(d.get("parity"))
        return cls(**kw, other={k: v for k, v in d.items() if k not in cls._KEYS})
