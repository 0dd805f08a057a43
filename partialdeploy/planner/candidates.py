"""Candidates from what was measured: every row of the given profile reports (several devices allowed),
joined to its export's ``manifest.json`` by the artifact's sha256 — variant, parameters/FLOPs, target,
precision, batch, latency, throughput, peak memory, artifact size and accuracy, with its lineage
(checkpoint sha256, export command, manifest and profile it came from).

A row is *excluded*, with the reason, when it was not measured (not run here, error), when its numbers
are not finite, when no manifest lists the artifact it measured, or when that artifact's sha256 no
longer matches the manifest (changed on disk, or re-exported since it was profiled).

Accuracy: the artifact's accuracy on a labelled held-out set where its export measured it (INT8 with
``--eval`` / the demo's digits; a sweep measures it for every cell into ``accuracy.json``), otherwise
its top-1 agreement with the fp32 train form of the same checkpoint (``accuracy_kind`` says which).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field, fields
from pathlib import Path

from partialdeploy.errors import UserError
from partialdeploy.records import Artifact, ProfileResult
from partialdeploy.integrity import MANIFEST

ACCURACY = "accuracy.json"
ACCURACY_SCHEMA = "partialdeploy.accuracy/1"
MAX_JSON_BYTES = 64 << 20


@dataclass
class Candidate:
    device: str
    target: str | None
    precision: str | None
    batch: int | None
    variant: str | None = None  # the checkpoint's name (file stem)
    model: str | None = None  # the architecture's name
    checkpoint_sha256: str | None = None
    params: int | None = None
    flops: int | None = None
    compute_precision: str | None = None
    mode: str = "latency"
    latency_ms: dict | None = None
    throughput_ips: float | None = None
    peak_memory_mb: float | None = None
    size_bytes: int | None = None
    accuracy: float | None = None  # fraction
    accuracy_kind: str | None = None  # "accuracy" (labelled set) | "agreement" (top-1 agreement with fp32)
    accuracy_set: str | None = None  # what it was measured on
    accuracy_ref: float | None = None  # the fp32 train form's accuracy on the same set
    artifact: str | None = None
    artifact_sha256: str | None = None
    manifest: str | None = None
    profile: str | None = None
    export_command: str | None = None
    warnings: list = field(default_factory=list)
    status: str = "candidate"  # fits | misses | excluded
    misses: list = field(default_factory=list)
    reason: str | None = None  # why it was excluded
    pareto: bool = False
    role: str | None = None  # recommended | runner-up | closest

    def latency(self, percentile: str) -> float | None:
        v = (self.latency_ms or {}).get(percentile)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    @property
    def drop_points(self) -> float | None:
        """Accuracy lost against the fp32 model of the same checkpoint, in percentage points: measured
        accuracy vs the fp32 accuracy on the same set, else 100 − top-1 agreement with fp32."""
        if self.accuracy is None:
            return None
        if self.accuracy_kind == "accuracy":
            return None if self.accuracy_ref is None else max(0.0, 100 * (self.accuracy_ref - self.accuracy))
        return 100 * (1 - self.accuracy)

    @property
    def drop_name(self) -> str:
        return "accuracy drop" if self.accuracy_kind == "accuracy" else "top-1 disagreement with fp32"

    @property
    def label(self) -> str:
        return f"{self.variant or self.model or '?'} {self.target}/{self.precision} b{self.batch}"

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["label"] = self.label
        d["drop_points"] = self.drop_points
        d["lineage"] = {k: d.pop(k) for k in ("checkpoint_sha256", "export_command", "manifest", "profile",
                                               "artifact", "artifact_sha256")}
        return d


def _read_json(path: Path, what: str):
    try:
        if path.stat().st_size > MAX_JSON_BYTES:
            raise UserError(f"{path} is larger than {MAX_JSON_BYTES >> 20} MiB: not a {what}")
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no such {what}: {path}") from None
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{path} is not a readable JSON {what}: {str(e)[:160]}") from None


def load_report(path: str | Path) -> tuple[Path, dict]:
    """A profile report as untrusted JSON: bounded, our schema, a results list. The rows are judged one
    by one later (a row with non-finite numbers is excluded, not the whole report)."""
    from partialdeploy.report.schema import SCHEMA, SCHEMA_PREFIX

    p = Path(path)
    if p.is_dir():
        p = p / "profile.json"
    data = _read_json(p, "profile report")
    if not isinstance(data, dict) or not str(data.get("schema", "")).startswith(SCHEMA_PREFIX):
        raise UserError(f"{p} is not a partialdeploy profile report (expected schema {SCHEMA!r})")
    if data["schema"] != SCHEMA:
        raise UserError(f"{p} has schema {data['schema']!r}; this partialdeploy reads {SCHEMA!r} (upgrade it)")
    if not isinstance(data.get("results"), list):
        raise UserError(f"{p} has no results list: not a report written by `partialdeploy profile`")
    return p, data


class Manifests:
    """Export manifests looked up by directory, read once; artifacts verified once (sha256 on disk)."""

    def __init__(self):
        self._by_dir: dict[Path, tuple[dict, list[Artifact]] | None] = {}
        self._verified: dict[tuple[Path, str], str | None] = {}
        self._accuracy: dict[Path, dict] = {}

    def get(self, d: Path) -> tuple[dict, list[Artifact]] | None:
        from partialdeploy.integrity import entries, load_manifest

        d = Path(d).resolve()
        if d not in self._by_dir:
            mp = d / MANIFEST
            self._by_dir[d] = None
            if mp.is_file():
                m = load_manifest(mp)  # a damaged manifest is bad input: UserError (exit 2)
                self._by_dir[d] = (m, entries(m))
        return self._by_dir[d]

    def problem(self, d: Path, entry: Artifact) -> str | None:
        """Why the artifact of ``entry`` cannot be trusted now (None: its files match the manifest)."""
        from partialdeploy.integrity import check_artifact_files

        key = (Path(d).resolve(), entry.path)
        if key not in self._verified:
            try:
                check_artifact_files(d, entry)
                self._verified[key] = None
            except UserError as e:
                self._verified[key] = str(e)
        return self._verified[key]

    def accuracy(self, d: Path) -> dict:
        """{artifact sha256: record} of the export's ``accuracy.json`` (written by a sweep), {} if none."""
        d = Path(d).resolve()
        if d not in self._accuracy:
            recs = {}
            p = d / ACCURACY
            if p.is_file():
                data = _read_json(p, "accuracy record")
                if isinstance(data, dict) and data.get("schema") == ACCURACY_SCHEMA and isinstance(data.get("records"),
                                                                                                      list):
                    recs = {r["sha256"]: r for r in data["records"] if isinstance(r, dict)
                            and isinstance(r.get("sha256"), str) and _fraction(r.get("accuracy"))}
            self._accuracy[d] = recs
        return self._accuracy[d]


def _fraction(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and 0 <= v <= 1


def _search_dirs(report_path: Path, report: dict, exports: list[Path]) -> list[Path]:
    """Where a report's manifests may be: beside it, its ``source`` (and those it was merged from) as
    given and relative to the report, and the export directories passed explicitly."""
    out = [report_path.parent]
    sources = [report.get("source")] + [m.get("source") for m in report.get("merged_from") or [] if isinstance(m, dict)]
    for s in sources:
        if isinstance(s, str) and s and "\x00" not in s:
            for base in (Path.cwd(), report_path.parent):
                p = base / s
                out.append(p if p.is_dir() else p.parent)
    out += exports
    seen, uniq = set(), []
    for d in out:
        try:
            r = d.resolve()
        except (OSError, RuntimeError):
            continue
        if r not in seen and r.is_dir():
            seen.add(r)
            uniq.append(d)
    return uniq


def _accuracy_of(entry: Artifact, sidecar: dict) -> tuple:
    """(value, kind, set, fp32 reference) for an artifact: its measured accuracy where its export (or a
    sweep) measured it on a labelled set, else its top-1 agreement with the fp32 train form."""
    for p in reversed(entry.parity):
        if p.acc is not None and math.isfinite(p.acc):
            return p.acc, "accuracy", _set_name(p.stage, p.n), p.acc_ref
    rec = sidecar.get(entry.sha256 or "")
    if rec:
        ref = rec.get("reference_accuracy")
        return float(rec["accuracy"]), "accuracy", str(rec.get("set") or f"{rec.get('n')} labelled images"), \
            float(ref) if _fraction(ref) else None
    for p in reversed(entry.parity):
        if math.isfinite(p.top1_agree):
            return p.top1_agree, "agreement", _set_name(p.stage, p.n), None
    return None, None, None, None


def _set_name(stage: str, n: int) -> str:
    inner = stage[stage.rfind("(") + 1: -1] if stage.endswith(")") and "(" in stage else f"{n} images"
    return inner


def candidates(report_paths, exports=(), manifests: Manifests | None = None) -> list[Candidate]:
    """Every row of every report as a Candidate (excluded ones with their ``reason``)."""
    manifests = manifests or Manifests()
    out: list[Candidate] = []
    for rp in report_paths:
        path, report = load_report(rp)
        dirs = _search_dirs(path, report, [Path(e) for e in exports])
        found = [(d, manifests.get(d)) for d in dirs]
        found = [(d, m) for d, m in found if m is not None]
        for i, raw in enumerate(report["results"]):
            out.append(_candidate(raw, i, path, report, found, manifests))
    return out


def _candidate(raw, i: int, path: Path, report: dict, found, manifests: Manifests) -> Candidate:
    dev = str(report.get("device") or path.parent.name)
    if not isinstance(raw, dict):
        return Candidate(dev, None, None, None, profile=str(path), status="excluded",
                         reason=f"results[{i}] is not a mapping")
    c = Candidate(str(raw.get("device") or dev), _text(raw.get("target")), _text(raw.get("precision")),
                  raw.get("batch") if isinstance(raw.get("batch"), int) else None, profile=str(path),
                  artifact=_text(raw.get("artifact")), artifact_sha256=_text(raw.get("sha256")))
    try:
        r = ProfileResult.from_dict(raw)
    except ValueError as e:
        return _exclude(c, f"its numbers are not finite or malformed ({str(e)[:100]})")
    c.mode, c.compute_precision, c.warnings = r.mode, r.compute_precision, list(r.warnings or [])
    entry = next(((d, m, e) for d, (m, ents) in found for e in ents if isinstance(r.sha256, str)
                  and e.sha256 == r.sha256), None)
    if entry is not None:
        _describe(c, *entry, manifests)
    if not r.measured:
        return _exclude(c, f"not measured: {r.status}" + (f" ({str(r.reason)[:400]})" if r.reason else ""))
    c.latency_ms, c.throughput_ips = r.latency_ms, r.throughput_ips
    c.peak_memory_mb = (r.memory or {}).get("peak_rss_mb")
    if c.throughput_ips is not None and c.throughput_ips <= 0:
        return _exclude(c, f"throughput {c.throughput_ips} is not a positive number")
    if not isinstance(r.sha256, str):
        return _exclude(c, "the row records no artifact sha256: it cannot be tied to an export (profile an "
                           "export directory, not a loose file)")
    if not found:
        return _exclude(c, f"no {MANIFEST} beside {path.name} or at its source: pass --export DIR")
    if entry is not None:
        why = manifests.problem(entry[0], entry[2])
        return _exclude(c, f"its artifact no longer matches the manifest: {why}") if why else c
    listed = [(d, e) for d, (_, ents) in found for e in ents if e.path == r.artifact]
    if listed:
        d, e = listed[0]
        return _exclude(c, f"measured {r.artifact} with sha256 {r.sha256[:12]}…, but {d / MANIFEST} lists "
                           f"{str(e.sha256)[:12]}… for it now (re-exported since): re-profile it")
    return _exclude(c, f"artifact {r.artifact} (sha256 {r.sha256[:12]}…) is in none of the manifests found: "
                       "pass its export with --export DIR")


def _describe(c: Candidate, d: Path, m: dict, e: Artifact, manifests: Manifests) -> None:
    """What the manifest says about the measured artifact: variant, lineage, size, accuracy."""
    model = m.get("model") or {}
    c.manifest = str(d / MANIFEST)
    c.model = _text(model.get("name"))
    ck = _text(model.get("checkpoint"))
    c.variant = Path(ck).stem if ck else c.model
    c.checkpoint_sha256 = _text(model.get("checkpoint_sha256"))
    c.params = _count(model.get("params"))
    c.flops = _count(model.get("flops"))
    c.export_command = _text(e.command or m.get("command"))
    c.size_bytes = _files_size(d, e)
    c.accuracy, c.accuracy_kind, c.accuracy_set, c.accuracy_ref = _accuracy_of(e, manifests.accuracy(d))


def _files_size(d: Path, e: Artifact) -> int | None:
    """Bytes of every file of the artifact (an OpenVINO IR is its .xml and its .bin), as listed in the
    manifest; the manifest's ``size_bytes`` when the files cannot be read."""
    from partialdeploy.integrity import safe_join

    try:
        files = e.files if isinstance(e.files, list) and e.files else [e.path]
        return sum(_tree_size(safe_join(d, f, "artifact file")) for f in files)
    except (UserError, OSError):
        return _count(e.size_bytes)


def _tree_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size


def _exclude(c: Candidate, reason: str) -> Candidate:
    c.status, c.reason = "excluded", reason
    return c


def _text(v) -> str | None:
    return v if isinstance(v, str) else None


def _count(v) -> int | None:
    return int(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0 else None
