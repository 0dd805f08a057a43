"""The export flow, one direction (docs/architecture.md, "The flow"):

checkpoint -> load (safe) -> ArchSpec -> train form -> deploy form -> parity gate
-> ONNX (export, simplify, check) -> parity gate in ONNX Runtime
-> per target: convert -> artifact -> parity gate in that runtime -> manifest.json

Everything is built in a staging directory next to the output directory; a target's directory is
renamed into place only after its gate passed, and manifest.json is replaced atomically. A failed
run leaves nothing half-written and nothing claimed.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from partialdeploy.exporting import deploy as deploy_step
from partialdeploy.exporting import manifest as manifest_step
from partialdeploy.exporting.load import ExportImages, gather_images, load
from partialdeploy.exporting.request import ExportRequest, check_request
from partialdeploy.exporting.targets import Progress, convert_targets
from partialdeploy.records import Artifact, ParityResult, TargetFailure, TargetSkip
from partialdeploy.spec import ArchSpec


@dataclass
class StageResult:
    name: str
    seconds: float
    detail: str = ""
    parity: ParityResult | None = None

    def to_dict(self) -> dict:
        return {"stage": self.name, "seconds": round(self.seconds, 3), "detail": self.detail,
                "parity": self.parity.to_dict() if self.parity else None}


@dataclass
class ExportResult:
    spec: ArchSpec
    notes: list[str]
    stages: list[StageResult]
    artifacts: list[Artifact]
    failures: list[TargetFailure]
    skipped: list[TargetSkip]
    out_dir: Path
    manifest_path: Path | None
    onnx_info: dict

    @property
    def exit_code(self) -> int:
        if not self.failures:
            return 0
        return 1 if any(f.kind == "verification" for f in self.failures) else 2


class _Stages:
    """The stage records of one export, each said as it finishes."""

    def __init__(self, say: Progress):
        self.say, self.done = say, []

    def timed(self, name: str, t0: float, detail: str = "", par: ParityResult | None = None) -> None:
        self.done.append(StageResult(name, time.perf_counter() - t0, detail, par))
        self.say(name, detail)

    def add(self, name: str, seconds: float, detail: str, par: ParityResult | None) -> None:
        self.done.append(StageResult(name, seconds, detail, par))


def run_export(req: ExportRequest, progress: Progress | None = None) -> ExportResult:
    """One export into ``req.out_dir``: locked against a concurrent export, SIGTERM handled like
    Ctrl-C, a full disk refused, nothing claimed unless it all landed (partialdeploy.safety)."""
    from contextlib import ExitStack

    from partialdeploy.safety import export_guard

    with export_guard(req.out_dir) as guard, ExitStack() as stack:
        return _run_export(req, progress, guard, stack)


def _carry_images(targets) -> bool:
    """Does one of the targets put the images into its artifact (``Target.carries_images``)?"""
    from partialdeploy.backends import get_target

    return any(get_target(t).carries_images for t in targets)


def _images_detail(imgs: ExportImages) -> str:
    return (f"{len(imgs.parity)} parity images ({imgs.check.record['described']})"
            + (f", {len(imgs.calib.x)} calibration images" if imgs.calib is not None else "")
            + (f", {len(imgs.eval_x)} held-out test images" if imgs.eval_x is not None else ""))


def _run_export(req: ExportRequest, progress: Progress | None, guard, stack) -> ExportResult:
    """The stages, in order: check the request, load, images, deploy form, ONNX, targets, place."""
    say = progress or (lambda stage, msg: None)
    targets = check_request(req)
    device_notes: list[str] = []
    if req.options.tune_on is not None:  # --tune-on: one session for the export, the device reached now
        from partialdeploy.remote.tune import export_session

        stack.enter_context(export_session(req.options.tune_on, device_notes.append))
    from partialdeploy.reparam import torch_logits

    stages = _Stages(say)
    t0 = time.perf_counter()
    loaded = load(req, targets)
    spec, notes = loaded.spec, loaded.notes
    notes += device_notes
    stages.timed("load", t0, f"{spec.name} from {loaded.ckpt.format} ({loaded.path.name})")

    t0 = time.perf_counter()
    imgs = gather_images(req, loaded)
    notes += imgs.notes
    ref = torch_logits(loaded.model, imgs.parity)
    eval_ref = torch_logits(loaded.model, imgs.eval_x, batch=64) if imgs.eval_x is not None else None
    stages.timed("images", t0, _images_detail(imgs))

    t0 = time.perf_counter()
    deploy, res, n_bn = deploy_step.deploy_form(loaded.model, imgs.parity, ref, spec.img_size, req.tolerances)
    stages.timed("deploy form", t0, f"{n_bn} BatchNorm folded; {res.summary()}", res)
    complexity = deploy_step.complexity(deploy, spec.img_size)

    out_dir = Path(req.out_dir)
    staging = guard.new_staging()
    try:
        t0 = time.perf_counter()
        onnx_path, info, onnx_res, onnx_opts = deploy_step.deploy_onnx(req, spec, loaded.ckpt, deploy, imgs.parity,
                                                                       ref, staging)
        notes += info.warnings
        onnx_info, detail = deploy_step.onnx_summary(info, onnx_res)
        stages.timed("onnx export", t0, detail, onnx_res)

        calib = imgs.calib
        ctx_common = dict(spec=spec, onnx_path=onnx_path, img_size=spec.img_size, dynamic_batch=req.dynamic_batch,
                          input_name="input", output_name="logits", parity_inputs=imgs.parity, reference=ref,
                          calib=calib.x if calib else None, calib_source=calib.source if calib else None,
                          eval_images=imgs.eval_x, eval_labels=imgs.eval_y, eval_reference=eval_ref,
                          deploy_model=deploy,
                          parity_raw=imgs.check.raw_samples() if _carry_images(targets) else None,
                          options=req.options.with_batch(req.batch), tolerances=req.tolerances,
                          onnx_gate=onnx_res, onnx_gate_options=onnx_opts)
        done = convert_targets(targets, req.precision, ctx_common, staging, notes, say, stages.add)
        manifest_path = None
        if done.artifacts:
            manifest_path = out_dir / manifest_step.MANIFEST

            def write_manifest(path: Path) -> None:
                manifest_step.write_json_atomic(path, manifest_step.build_manifest(
                    out_dir, spec, loaded.ckpt, done.artifacts, done.failures, done.skipped, stages.done,
                    onnx_info, req, calibration=calib.record if calib else None, complexity=complexity,
                    check_images=imgs.check.record))

            notes += manifest_step.place(out_dir, staging, done.staged, done.artifacts, write_manifest,
                                         loaded.ckpt.sha256)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(spec, notes, stages.done, done.artifacts, done.failures, done.skipped, out_dir,
                        manifest_path, onnx_info)
