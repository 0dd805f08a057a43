"""Typed records that travel between stages and are stored on disk, each with one serializer.

* :class:`ParityResult` — one parity gate's numbers (``parity.gate`` makes them; the manifest, the
  TensorRT bundle and the engine sidecar store them);
* :class:`Artifact` — one artifact from its conversion to its entry in ``manifest.json`` (made by a
  target, gated by ``verification``, recorded by ``exporting.manifest``; read by ``integrity``,
  ``profiling``, ``diff``, ``backends.tensorrt.build``);
* :class:`TargetFailure` / :class:`TargetSkip` — a target that failed / was not attempted in an export
  (the result's and the manifest's ``failures`` / ``skipped``);
* :class:`ProfileResult` — one (artifact, batch) row of a profile report (written by ``profiling``,
  read by ``report`` and the CLI's table);

``to_dict`` gives plain JSON types; ``from_dict`` is its inverse and reads files written by any earlier
version (missing keys take their defaults, unknown keys are kept and written back). Plain Python, no
numpy: the device side (``integrity``, ``build-engine``) reads these too.
"""

from __future__ import annotations

import math
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

    @property
    def agree_count(self) -> int:
        """How many of the ``n`` images the top-1 class agreed on (a count, not only a percentage)."""
        return int(round(self.top1_agree * self.n))

    def summary(self) -> str:
        s = (f"max|Δ|={self.max_abs:.3g} (rel {self.rel_max:.3g}), cos≥{self.cosine_min:.6f}, "
             f"top-1 agree {self.agree_count}/{self.n} ({100 * self.top1_agree:.1f}%)")
        if self.acc is not None and self.acc_ref is not None:
            s += f", acc {100 * self.acc_ref:.2f}%→{100 * self.acc:.2f}%"
        return s

    def cell(self) -> str:
        """The short form a table shows: cosine, relative max |Δ|, top-1 agreement (and accuracy)."""
        s = f"cos {self.cosine_min:.6f}, rel {self.rel_max:.2g}, top-1 {self.agree_count}/{self.n}"
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
class Artifact:
    """One artifact, from its conversion to ``manifest.json``: a target makes it (paths relative to its
    directory), verification adds its parity results, the export moves it into place and records its
    hashes and size (``sha256``, ``files_sha256``, ``size_bytes``, ``command``), and it is written as one
    manifest entry; ``integrity``, ``profile``, ``diff`` and ``build-engine`` read it back with
    :meth:`from_dict`. The integrity fields are kept exactly as read — ``integrity.check_artifact_files``
    judges them — so a damaged value is refused there, never silently replaced by a default here."""

    target: str
    precision: str
    path: str  # main file/dir: relative to the target's directory while converting, to the export dir after
    files: list = field(default_factory=list)  # every file, relative as ``path`` is
    sha256: str | None = None  # of the artifact (a directory: over its files); set when recorded
    files_sha256: dict | None = None  # {file: sha256}; absent in manifests before per-file hashes
    size_bytes: int | None = None
    inputs: list = field(default_factory=list)  # [{name, shape, dtype}]
    outputs: list = field(default_factory=list)
    parity: list[ParityResult] = field(default_factory=list)
    verified: str = "converted"  # "parity" once its gate passed here; else what could be checked
    # ("spec-checked (run needs macOS)", "bundle (build on device)")
    runtime_version: str | None = None
    notes: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # what the runner needs to open it as the gate did
    command: str | None = None
    other: dict = field(default_factory=dict)  # keys this version does not know, written back unchanged
    # never stored: for verification, other ways to open it when the recorded one misses the gate
    # (verification.Alternative) and the gate its target already ran on this very file
    # (verification.Proof); for tuning, other correct ways to run the same files (tuning.Form)
    alternatives: list = field(default_factory=list, repr=False, compare=False)
    proof: object = field(default=None, repr=False, compare=False)
    forms: list = field(default_factory=list, repr=False, compare=False)

    _KEYS = ("target", "precision", "path", "files", "sha256", "files_sha256", "size_bytes", "inputs", "outputs",
             "parity", "verified", "runtime_version", "notes", "extra", "command")

    @property
    def gate(self) -> ParityResult | None:
        """The parity result of this very artifact run through its runtime (or, for a TensorRT bundle,
        its precision-carrying ONNX); None when it could only be checked without running (a CoreML
        package off macOS: its parity list holds the fp32 trace it was converted from, not itself)."""
        if not self.parity or self.verified.startswith(("spec-checked", "converted")):
            return None
        return self.parity[-1]

    def to_dict(self) -> dict:
        """The manifest entry (plain JSON types; also what ``export --json`` lists)."""
        d = {k: getattr(self, k) for k in self._KEYS}
        d["parity"] = [p.to_dict() for p in self.parity]
        return {**d, **self.other}

    @classmethod
    def from_dict(cls, d: dict) -> "Artifact":
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


@dataclass
class TargetFailure:
    """A target whose conversion or gate failed (``kind``: ``verification`` — a gate missed, with its
    numbers in ``parity`` —, or ``error``); listed under ``failures`` in the result and the manifest."""

    target: str
    precision: str
    kind: str
    error: str
    parity: list[ParityResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        d = {"target": self.target, "precision": self.precision, "kind": self.kind, "error": self.error}
        if self.parity:
            d["parity"] = [p.to_dict() for p in self.parity]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "TargetFailure":
        if not isinstance(d, dict) or not all(isinstance(d.get(k, ""), str) for k in ("target", "precision", "error")):
            raise ValueError("a failure entry needs text target, precision and error")
        return cls(d.get("target", ""), d.get("precision", ""), str(d.get("kind") or "error"), d.get("error", ""),
                   parity_list(d.get("parity")))


@dataclass
class TargetSkip:
    """A target that was not attempted here (its runtime or converter is missing, or it does not make
    that precision); listed under ``skipped``."""

    target: str
    precision: str
    reason: str

    def to_dict(self) -> dict:
        return {"target": self.target, "precision": self.precision, "reason": self.reason}


def _finite(v, none_ok: bool = True) -> bool:
    if v is None:
        return none_ok
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class ProfileResult:
    """One (artifact, batch) row of a profile report (``profiling.profiler.Profiler`` makes them, ``report``
    renders, compares and merges them). Values that are only printed are kept as read; the numbers
    that are computed with are checked by :meth:`from_dict`."""

    target: str | None = None
    runtime: str | None = None
    precision: str | None = None
    artifact: str | None = None
    mode: str = "latency"
    threads: int | None = None
    batch: int | None = None
    status: str | None = None  # ok | skipped | not_run | error | interrupted
    reason: str | None = None
    sha256: str | None = None  # of the artifact measured (checked against the export's manifest)
    runtime_version: str | None = None
    compute_precision: str | None = None  # read back from the runtime
    load_time_s: float | None = None
    first_inference_ms: float | None = None
    clock: str | None = None  # when the runner's own clock is not perf_counter (TensorRT: cuda_events)
    input_shapes: dict | None = None
    memory: dict | None = None  # peak_rss_mb, rss_before_load_mb, scope
    latency_ms: dict | None = None  # p50 p90 p99 mean std min max
    cv: float | None = None
    runs: int | None = None
    timed_s: float | None = None
    throughput_ips: float | None = None
    requests_in_flight: int | None = None
    blocks: int | None = None
    block_p50_ms: list | None = None
    median_of_block_medians_ms: float | None = None
    warnings: list | None = None
    samples_ms: list | None = None
    layers: dict | None = None  # per-layer breakdown (profiling.layers.layer_breakdown)
    layers_error: str | None = None
    device: str | None = None  # set when reports of several devices are merged
    other: dict = field(default_factory=dict)  # keys this version does not know, written back unchanged

    _ALWAYS = ("target", "runtime", "precision", "artifact", "mode", "threads", "batch", "status")
    _STATS = ("p50", "p90", "p99", "mean", "std", "min", "max")

    def to_dict(self) -> dict:
        d = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name != "other" and (v is not None or f.name in self._ALWAYS):
                d[f.name] = v
        return {**d, **self.other}

    @classmethod
    def from_dict(cls, d: dict) -> "ProfileResult":
        """The inverse of :meth:`to_dict`; ValueError naming the first value a renderer would trip over."""
        if not isinstance(d, dict):
            raise ValueError("is not a mapping")
        b = d.get("batch")
        if b is not None and (not isinstance(b, int) or isinstance(b, bool) or b < 1):
            raise ValueError(f"batch {str(b)[:20]!r} is not a positive integer")
        for k in ("target", "runtime", "precision", "mode", "status", "device", "artifact"):  # they key rows
            if d.get(k) is not None and not isinstance(d.get(k), str):
                raise ValueError(f"{k} {str(d.get(k))[:20]!r} is not text")
        lat = d.get("latency_ms")
        if lat is not None and (not isinstance(lat, dict) or not all(_finite(lat.get(k), False) for k in cls._STATS)):
            raise ValueError("latency_ms is not a set of numbers")
        for k in ("throughput_ips", "load_time_s", "first_inference_ms", "cv", "runs", "timed_s"):
            if not _finite(d.get(k)):
                raise ValueError(f"{k} is not a number")
        sm = d.get("samples_ms")
        if sm is not None and (not isinstance(sm, list) or not all(_finite(v, False) for v in sm)):
            raise ValueError("samples_ms is not a list of numbers")
        w = d.get("warnings")
        if w is not None and (not isinstance(w, list) or not all(isinstance(x, str) for x in w)):
            raise ValueError("warnings is not a list of text")
        mem = d.get("memory")
        if mem is not None and (not isinstance(mem, dict) or not _finite(mem.get("peak_rss_mb"))):
            raise ValueError("memory is malformed")
        lb = d.get("layers")
        if lb is not None:
            if not isinstance(lb, dict) or not _finite(lb.get("total_ms")):
                raise ValueError("layers is malformed")
            for part, name in (("blocks", "block"), ("top", "name")):
                rows = lb.get(part, [])
                if not isinstance(rows, list) or not all(
                        isinstance(x, dict) and isinstance(x.get(name), str) and _finite(x.get("time_ms"), False)
                        and _finite(x.get("pct"), False) and isinstance(x.get("block", ""), str) for x in rows):
                    raise ValueError(f"layers.{part} is malformed")
        known = {f.name for f in fields(cls)} - {"other"}
        return cls(**{k: v for k, v in d.items() if k in known},
                   other={k: v for k, v in d.items() if k not in known})

    @property
    def measured(self) -> bool:
        """Timed and ok (what the tables and comparisons show)."""
        return self.status == "ok" and bool(self.latency_ms)

    def label(self, with_device: bool = False) -> str:
        s = f"{self.target}/{self.precision}"
        return f"{self.device}: {s}" if with_device and self.device else s
