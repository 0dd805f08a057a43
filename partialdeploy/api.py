"""The public Python API: what the CLI does, callable from a training script or a CI job.

    import partialdeploy as pd

    res = pd.export("model.ckpt", targets=["onnx", "openvino"], precision="int8", calib="calib/", out="dist")
    for a in res.artifacts:
        print(a.target, a.precision, a.path, a.sha256[:12], a.parity[0].cosine_min)
    rep = pd.profile("dist", batches=(1, 8))
    d = pd.diff("model.ckpt", "dist", target="openvino")   # d.first_divergent names a block
    info = pd.inspect("model.ckpt")

Results are frozen records; errors are typed: :class:`UserError` (bad input: what to do is in the
message), :class:`ParityError` (a gate failed: ``.parity`` carries the numbers, ``.result`` what
was exported anyway), :class:`RuntimeUnavailable` (the runtime or its hardware is missing).
``on_event(stage, info)`` reports progress. Importing this module imports no torch, numpy, onnx or
runtime: each call imports what it needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from partialdeploy.errors import ParityError, RuntimeUnavailable, UserError

__all__ = ["export", "profile", "diff", "inspect", "ExportResult", "ExportedArtifact", "ParityNumbers",
           "Failure", "ProfileReport", "Inspection", "UserError", "ParityError", "RuntimeUnavailable"]

Event = Callable[[str, dict], None]  # (stage, info)


@dataclass(frozen=True)
class ParityNumbers:
    """One parity gate: the candidate against the train form on real images."""

    stage: str
    images: int
    max_abs: float
    rel_max: float
    cosine_min: float
    top1_agree: float
    passed: bool
    acc_ref: float | None = None
    acc: float | None = None
    reason: str = ""

    @classmethod
    def of(cls, p) -> "ParityNumbers":
        return cls(p.stage, p.n, p.max_abs, p.rel_max, p.cosine_min, p.top1_agree, bool(p.passed), p.acc_ref,
                   p.acc, p.reason or "")


@dataclass(frozen=True)
class ExportedArtifact:
    target: str
    precision: str
    path: Path  # absolute: the model file or directory
    sha256: str
    files: tuple[Path, ...]
    verified: str  # "parity", or what could be established here ("bundle (build on device)", ...)
    parity: tuple[ParityNumbers, ...]
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failure:
    target: str
    precision: str
    kind: str  # "verification" (a gate failed), "error", or "skipped" (runtime missing here)
    message: str


@dataclass(frozen=True)
class ExportResult:
    model: str
    out_dir: Path
    manifest: Path | None
    artifacts: tuple[ExportedArtifact, ...]
    failures: tuple[Failure, ...]
    skipped: tuple[Failure, ...]
    notes: tuple[str, ...] = ()
    stages: tuple[tuple[str, float, str], ...] = ()  # (stage, seconds, detail)
    batch: int | None = 1  # the static batch the artifacts were made for (None: dynamic)
    data: dict = field(repr=False, default_factory=dict)  # the whole result as `export --json` prints it

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        """What ``partialdeploy export`` exits with: 0 ok, 1 a parity gate failed, 2 another failure."""
        if not self.failures:
            return 0
        return 1 if any(f.kind == "verification" for f in self.failures) else 2

    def artifact(self, target: str, precision: str | None = None) -> ExportedArtifact:
        for a in self.artifacts:
            if a.target == target and (precision is None or a.precision == precision):
                return a
        raise KeyError(f"no {target}/{precision or '*'} artifact in this export")


@dataclass(frozen=True)
class ProfileReport:
    path: Path | None  # where the JSON report was written
    device: str
    complete: bool
    results: tuple  # records.ProfileResult, one per (artifact, batch)
    data: dict = field(repr=False, default_factory=dict)  # the report as written
    exit_code: int = 0  # what `partialdeploy profile` exits with: 1 a case failed, 2 nothing measured
    written: bool = True  # False: nothing was measured and an existing report at ``path`` was kept

    def result(self, target: str, batch: int = 1, precision: str | None = None):
        for r in self.results:
            if r.target == target and r.batch == batch and (precision is None or r.precision == precision):
                return r
        raise KeyError(f"no {target}/{precision or '*'} batch {batch} result in this report")


@dataclass(frozen=True)
class Inspection:
    model: str
    family: str
    architecture: dict = field(repr=False)
    params: tuple[int, int]  # before -> after the deploy rewrite
    flops: tuple[int, int]
    folds: tuple = field(repr=False)
    notes: tuple[str, ...] = ()
    data: dict = field(repr=False, default_factory=dict)


def _paths(xs) -> tuple:
    return tuple(xs) if isinstance(xs, (list, tuple)) else (xs,)


def _opt_path(p) -> Path | None:
    return Path(p) if p else None


def export(checkpoint: str | Path | None = None, targets: str | Iterable[str] | None = None,
           precision: str | None = None, calib: str | Path | None = None, out: str | Path = "dist", *,
           img_size: int | None = None, batch: int | None = None, dynamic_batch: bool | None = None,
           variant: str | None = None, act: str | None = None, eval_dir: str | Path | None = None,
           calib_count: int | None = None, calib_seed: int = 0, check_images: str | Path | None = None,
           profile: str | None = None, fallback: bool = True, int8_exclude: str | Iterable[str] | None = None,
           tune_budget: float | None = None, tune_on=None, bundle_wheel: str | Path | None = None,
           opset: int = 17, on_event: Event | None = None, check: bool = True,
           command: str | None = None) -> ExportResult:
    """Export ``checkpoint`` (None: the bundled demo) to ``targets`` in ``precision`` (None: the
    profile's, else ``onnx`` / ``fp32``) into ``out``, every artifact proven by its parity gate, exactly
    as ``partialdeploy export`` does (which calls this).

    Raises UserError / RuntimeUnavailable on bad input (nothing written); with ``check`` (default) a
    failed gate raises ParityError carrying the numbers and the result of what was exported.
    ``command`` is what the manifest records as the command (default ``partialdeploy.export(...)``).
    ``tune_on`` (a host, or ``remote.tune.TuneDevice`` with its Python and SSH options): the measured
    selection times the forms on that device (``export --tune-on``)."""
    from partialdeploy.exporting.request import ExportRequest
    from partialdeploy.exporting.run import run_export

    req = ExportRequest.from_flags(
        profile=profile, fallback=fallback, checkpoint=_opt_path(checkpoint),
        targets=tuple(t for t in _paths(targets) if t) if targets is not None else (), precision=precision,
        out_dir=Path(out), img_size=img_size, dynamic_batch=dynamic_batch, batch=batch, calib=_opt_path(calib),
        calib_count=calib_count, calib_seed=calib_seed, eval_dir=_opt_path(eval_dir),
        check_images=_opt_path(check_images), variant=variant, act=act, opset=opset, tune_budget=tune_budget,
        tune_on=tune_on, int8_exclude=int8_exclude, bundle_wheel=_opt_path(bundle_wheel),
        command=command or "partialdeploy.export(...)")
    progress = (lambda stage, msg: on_event(stage, {"message": msg})) if on_event else None
    try:
        res = run_export(req, progress)
    except ParityError as e:  # the deploy form or the ONNX missed its gate: nothing was exported
        raise ParityError(str(e), tuple(ParityNumbers.of(p) for p in e.parity)) from None
    result = _export_result(res, None if req.dynamic_batch else req.batch)
    failed = [f for f in result.failures if f.kind == "verification"]
    if check and failed:
        numbers = tuple(ParityNumbers.of(p) for f in res.failures for p in f.parity)
        raise ParityError("; ".join(f"{f.target}/{f.precision}: {f.message}" for f in failed), numbers, result)
    return result


def _export_data(res) -> dict:
    """The result as ``export --json`` prints it."""
    return {"exit_code": res.exit_code, "model": res.spec.to_dict(), "notes": res.notes,
            "stages": [{"name": s.name, "seconds": s.seconds, "detail": s.detail,
                        "parity": s.parity.to_dict() if s.parity else None} for s in res.stages],
            "onnx": res.onnx_info, "artifacts": [a.to_dict() for a in res.artifacts],
            "failures": [f.to_dict() for f in res.failures], "skipped": [k.to_dict() for k in res.skipped],
            "manifest": str(res.manifest_path) if res.manifest_path else None}


def _export_result(res, batch: int | None) -> ExportResult:
    out = Path(res.out_dir).resolve()
    arts = tuple(ExportedArtifact(a.target, a.precision, out / a.path, a.sha256, tuple(out / f for f in a.files),
                                  a.verified, tuple(ParityNumbers.of(p) for p in a.parity), tuple(a.notes))
                 for a in res.artifacts)  # as recorded in the manifest (exporting.manifest.record)
    return ExportResult(
        model=res.spec.name, out_dir=out, manifest=Path(res.manifest_path) if res.manifest_path else None,
        artifacts=arts,
        failures=tuple(Failure(f.target, f.precision, f.kind, f.error) for f in res.failures),
        skipped=tuple(Failure(s.target, s.precision, "skipped", s.reason) for s in res.skipped),
        notes=tuple(res.notes), stages=tuple((s.name, s.seconds, s.detail) for s in res.stages), batch=batch,
        data=json.loads(json.dumps(_export_data(res), default=str)))


def profile(source: str | Path, *, target: str | None = None, batches: Iterable[int] = (1,),
            threads: int | None = None, mode: str = "latency", runs: int | None = 100,
            min_time_s: float | None = 1.0, warmup: int = 10, blocks: int = 3, layers: bool = True,
            out: str | Path | None = None, device: str | None = None, warmup_time_s: float | None = None,
            max_time_s: float | None = 120.0, top: int = 10, cv_threshold: float = 0.10,
            on_event: Event | None = None, check: bool = True) -> ProfileReport:
    """Time every artifact of an export directory (or one model file) the way ``partialdeploy
    profile`` does, and write the JSON report (``out``; default beside the source). With ``check``
    (default) a case that failed or a run that measured nothing raises UserError; without it the
    report says so (``exit_code``, ``written``) — what the CLI renders."""
    from partialdeploy.profiling.profiler import Profiler, exit_code
    from partialdeploy.profiling.settings import Settings
    from partialdeploy.profiling.source import default_report_path
    from partialdeploy.records import ProfileResult

    s = Settings(batches=tuple(int(b) for b in batches), threads=threads, mode=mode, runs=runs,
                 min_time_s=min_time_s, warmup=warmup, blocks=blocks, layers=layers, warmup_time_s=warmup_time_s,
                 max_time_s=max_time_s, top=top, cv_threshold=cv_threshold)
    path = Path(out) if out else default_report_path(source)
    progress = (lambda done, total, label: on_event("profile", {"done": done, "total": total, "case": label})) \
        if on_event else None
    prof = Profiler(source, s, target, path, progress=progress, device=device)
    rep = prof.run()
    results = tuple(ProfileResult.from_dict(r) for r in rep.get("results", []))
    code = exit_code(rep)  # a runtime that is missing raised RuntimeUnavailable above (or skipped its artifact)
    report = ProfileReport(path, str(rep.get("device", "")), bool(rep.get("complete")), results, rep, code,
                           bool(prof.written))
    if not check:
        return report
    if code == 1:
        bad = next(r for r in results if r.status == "error")
        raise UserError(f"{bad.target}/{bad.precision} batch {bad.batch} failed to run: {bad.reason} "
                        f"(the report so far: {path})")
    if code == 2:
        why = "; ".join(dict.fromkeys(f"{r.target}/{r.precision}: {r.reason}" for r in results if r.reason))
        raise UserError(f"nothing was measured: every case was skipped or cannot run on this machine"
                        f"{' (' + why[:300] + ')' if why else ''}; an existing report at {path} is kept")
    return report


def diff(ref: str | Path, cand: str | Path, *, images: str | Path | None = None, count: int = 16,
         target: str | None = None, precision: str | None = None, ref_target: str | None = None,
         ref_precision: str | None = None, cosine_min: float | None = None, rel_max: float | None = None,
         top1_min: float | None = None, threads: int | None = None, variant: str | None = None):
    """Run REF and CAND on the same real images with every block boundary exposed; the result's
    ``first_divergent`` names the first block whose output leaves the tolerance (None: they agree),
    ``blocks`` has the numbers of each (a ``partialdeploy.analysis.blockdiff.DiffResult``)."""
    from partialdeploy.analysis.blockdiff import run_diff

    return run_diff(ref, cand, images=Path(images) if images else None, count=count, target=target,
                    precision=precision, ref_target=ref_target, ref_precision=ref_precision, cosine_min=cosine_min,
                    rel_max=rel_max, top1_min=top1_min, threads=threads, variant=variant)


def inspect(checkpoint: str | Path | None = None, *, variant: str | None = None, act: str | None = None,
            img_size: int | None = None) -> Inspection:
    """What is inside a checkpoint (None: the bundled demo): its family and architecture, what each
    block type folds, parameters and FLOPs before -> after the deploy rewrite."""
    from partialdeploy.analysis.inspect import inspect_checkpoint

    r = inspect_checkpoint(Path(checkpoint) if checkpoint else None, variant=variant, act=act, img_size=img_size)
    data = json.loads(json.dumps(r, default=str))
    return Inspection(model=r["architecture"]["name"], family=r["family"], architecture=data["architecture"],
                      params=(r["params"]["before"], r["params"]["after"]),
                      flops=(r["flops"]["before"], r["flops"]["after"]), folds=tuple(data["blocks"]),
                      notes=tuple(r["notes"]), data=data)
