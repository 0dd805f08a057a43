"""The export flow, one direction (docs/architecture.md, "The flow"):

checkpoint -> load (safe) -> ArchSpec -> train form -> deploy form -> parity gate
-> ONNX (export, simplify, check) -> parity gate in ONNX Runtime
-> per target: convert -> artifact -> parity gate in that runtime -> manifest.json

Everything is built in a staging directory next to the output directory; a target's directory is
renamed into place only after its gate passed, and manifest.json is replaced atomically. A failed
run leaves nothing half-written and nothing claimed.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


from partialdeploy import budget, export_dir, parity
from partialdeploy.errors import PartialDeployError, UserError, VerificationError, first_line
from partialdeploy.backends import get_target, target_names
from partialdeploy.backends.target import Artifact, ExportContext
from partialdeploy.images import preprocessing_record
from partialdeploy.records import ManifestEntry, ParityResult
from partialdeploy.safety import commit, is_disk_full
from partialdeploy.images import calib_folder_error
from partialdeploy.spec import ArchSpec
from partialdeploy.verification import convert_and_verify
from partialdeploy.verify import MANIFEST
from partialdeploy.version import __version__

MANIFEST_SCHEMA = "partialdeploy.manifest/1"


@dataclass
class ExportRequest:
    checkpoint: Path | None = None  # None -> the bundled demo checkpoint
    targets: tuple[str, ...] = ("onnx",)
    precision: str = "fp32"
    out_dir: Path = Path("dist")
    img_size: int | None = None
    dynamic_batch: bool = False
    batch: int = 1
    calib: Path | None = None
    calib_count: int = 100
    calib_seed: int = 0  # the calibration subset is drawn with this seed (recorded in the manifest)
    eval_dir: Path | None = None  # ImageFolder with labels: the INT8 gate becomes an accuracy drop
    check_images: Path | None = None  # the user's images the gates judge on (else held out of calib)
    variant: str | None = None
    act: str | None = None
    opset: int = 17
    parity_images: int = 16
    options: dict = field(default_factory=dict)  # target-profile fields (threads, workspace_mb, ...)
    tolerances: dict = field(default_factory=dict)  # precision -> parity.Tolerance
    command: str = ""

    # profile fields that are request fields; every other profile field is a target option
    _PROFILE_FIELDS = {"target": "targets", "precision": "precision", "img_size": "img_size",
                       "dynamic_batch": "dynamic_batch", "batch": "batch", "calib_images": "calib_count"}

    @classmethod
    def from_flags(cls, profile: str | None = None, fallback: bool = True, **flags) -> "ExportRequest":
        """The request from command-line flags over an optional target profile (name or YAML path):
        a flag that is not None wins over the profile (``profiles.apply_overrides``), then defaults."""
        from partialdeploy.profiles import apply_overrides, load_profile

        prof = dict(load_profile(profile)) if profile else {}
        opset = flags.get("opset", 17)
        if not 13 <= opset <= 20:
            raise UserError(f"--opset {opset} is outside 13-20 (what the exporter and TensorRT 10 accept)")
        tolerances = prof.pop("tolerances_obj", {})
        from_prof = {field_: prof.pop(key) for key, field_ in cls._PROFILE_FIELDS.items() if key in prof}
        if "targets" in from_prof:
            from_prof["targets"] = (from_prof["targets"],)
        if not fallback:
            prof["int8_fallback"] = False
        tune_budget = flags.pop("tune_budget", None)
        if tune_budget is not None:  # a target option (partialdeploy.tuning), like the profile field
            prof["tune_budget"] = tune_budget
        if flags.get("targets") == ():
            flags["targets"] = None
        merged = apply_overrides(from_prof, **flags)
        merged.setdefault("targets", ("onnx",))
        merged["targets"] = tuple(merged["targets"])
        merged["precision"] = str(merged.get("precision") or "fp32").lower()
        merged["dynamic_batch"] = bool(merged.get("dynamic_batch", False))
        merged["batch"] = int(merged.get("batch", 1))
        merged["calib_count"] = int(merged.get("calib_count") or 100)
        return cls(**merged, options=prof, tolerances=tolerances)


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
    failures: list[dict]
    skipped: list[dict]
    out_dir: Path
    manifest_path: Path | None
    onnx_info: dict

    @property
    def exit_code(self) -> int:
        if not self.failures:
            return 0
        return 1 if any(f.get("kind") == "verification" for f in self.failures) else 2


Progress = Callable[[str, str], None]  # (stage, message)


def expand_targets(names) -> tuple[str, ...]:
    known = target_names()
    out: list[str] = []
    for n in names:
        for part in str(n).split(","):
            part = part.strip().lower()
            if not part:
                continue
            if part == "all":
                out += [t for t in known if t not in out]
            elif part not in known:
                raise UserError(f"unknown target {part!r}; choose from {', '.join(known)} or all")
            elif part not in out:
                out.append(part)
    if not out:
        raise UserError(f"no target given: use --target {'|'.join(known)}|all")
    return tuple(out)


def _sha256(path: Path) -> str:
    from partialdeploy.verify import artifact_sha256

    return artifact_sha256(path)


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def _write_json_atomic(path: Path, obj) -> None:
    from partialdeploy.safety import write_json_atomic

    write_json_atomic(path, json.dumps(obj, indent=2, default=str) + "\n")


def run_export(req: ExportRequest, progress: Progress | None = None) -> ExportResult:
    """One export into ``req.out_dir``: locked against a concurrent export, SIGTERM handled like
    Ctrl-C, a full disk refused, nothing claimed unless it all landed (partialdeploy.safety)."""
    from partialdeploy.safety import export_guard

    with export_guard(req.out_dir) as guard:
        return _run_export(req, progress, guard)


def check_request(req: ExportRequest) -> tuple[str, ...]:
    """Bad input is refused before any work (one line, exit 2); returns the expanded target list."""
    if req.precision not in parity.PRECISIONS:
        raise UserError(f"--precision {req.precision!r} is not supported; choose {', '.join(parity.PRECISIONS)}")
    targets = expand_targets(req.targets)
    if req.batch < 1:
        raise UserError("--batch must be ≥ 1")
    if req.img_size is not None and (req.img_size < 32 or req.img_size % 32):
        raise UserError(f"--img-size {req.img_size} must be a multiple of 32 (the network downsamples 32×) and ≥ 32")
    from partialdeploy.tuning import budget_of

    budget_of(req.options)  # a bad --tune-budget is refused before any work
    if req.check_images is not None:
        from partialdeploy.check_images import require_folder

        require_folder(req.check_images)  # refused before any work
    if req.out_dir.exists() and not req.out_dir.is_dir():
        raise UserError(f"output {req.out_dir} exists and is not a directory: choose another -o")
    export_dir.check_owned(req.out_dir, targets, req.precision)  # never write into a folder that is not ours
    # optional runtimes must exist before any work when a single target was asked for explicitly
    if len(targets) == 1:
        t = get_target(targets[0])
        why = t.check_env()
        if why:
            raise UserError(f"target {targets[0]} unavailable: {why}")
        why = t.refusal(req.precision)
        if why:
            raise UserError(why)
    return targets


def _run_export(req: ExportRequest, progress: Progress | None, guard) -> ExportResult:
    """The stages, in order: check the request, load, images, deploy form, ONNX, targets, place."""
    say = progress or (lambda stage, msg: None)
    targets = check_request(req)

    import torch

    from partialdeploy.reparam import reparameterize, torch_logits

    stages: list[StageResult] = []

    def stage(name, t0, detail="", par=None):
        stages.append(StageResult(name, time.perf_counter() - t0, detail, par))
        say(name, detail)

    # ---- load
    t0 = time.perf_counter()
    ckpt, ckpt_path, spec, notes, model, is_demo, calib_dir = _load(req, targets)
    stage("load", t0, f"{spec.name} from {ckpt.format} ({ckpt_path.name})")

    # ---- real images: parity inputs, calibration, held-out eval
    t0 = time.perf_counter()
    size = spec.img_size
    px, calib, calib_src, calib_info, eval_x, eval_y, chk = _images(req, spec, is_demo, calib_dir, notes)
    check_rec = chk.record
    ref = torch_logits(model, px)
    if calib is None:  # the held-out set measures the INT8 accuracy drop; parity needs only px
        eval_x = eval_y = None
    eval_ref = torch_logits(model, eval_x, batch=64) if eval_x is not None else None
    stage("images", t0, f"{len(px)} parity images ({check_rec['described']})"
          + (f", {len(calib)} calibration images" if calib is not None else "")
          + (f", {len(eval_x)} held-out test images" if eval_x is not None else ""))

    # ---- deploy form + gate
    t0 = time.perf_counter()
    deploy = reparameterize(model, size)
    res = parity.gate(ref, torch_logits(deploy, px), "train form -> deploy form (PyTorch)",
                      req.tolerances.get("fp32", "fp32"))
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    stage("deploy form", t0, f"{n_bn} BatchNorm folded; {res.summary()}", res)
    complexity = _complexity(deploy, size)

    out_dir = Path(req.out_dir)
    staging = guard.new_staging()
    artifacts: list[Artifact] = []
    staged: list[tuple[Path, Path]] = []
    failures: list[dict] = []
    skipped: list[dict] = []
    try:
        # ---- ONNX + gate in ONNX Runtime
        t0 = time.perf_counter()
        onnx_path, info, onnx_res = _onnx(req, spec, ckpt, deploy, px, ref, staging)
        for w in info.warnings:
            notes.append(w)
        stage("onnx export", t0, f"{info.nodes} nodes, opset {info.opset}, "
              f"{'simplified' if info.simplified else 'not simplified'}, "
              f"BatchNormalization: {info.ops.get('BatchNormalization', 0)}; {onnx_res.summary()}", onnx_res)
        onnx_info = {"nodes": info.nodes, "opset": info.opset, "simplified": info.simplified, "ops": info.ops}

        ctx_common = dict(spec=spec, onnx_path=onnx_path, img_size=size, dynamic_batch=req.dynamic_batch,
                          input_name="input", output_name="logits", parity_inputs=px, reference=ref,
                          calib=calib, calib_source=calib_src, eval_images=eval_x, eval_labels=eval_y,
                          eval_reference=eval_ref, deploy_model=deploy,
                          parity_raw=chk.raw_samples() if _carry_images(targets) else None,
                          options={**req.options, "batch": req.batch},
                          tolerances=req.tolerances)
        # ---- targets
        for name in targets:
            t0 = time.perf_counter()
            target = get_target(name)
            why = target.check_env()
            if why:
                skipped.append({"target": name, "precision": req.precision, "reason": why})
                say(name, f"skipped: {why}")
                continue
            why = target.refusal(req.precision)
            if why:
                skipped.append({"target": name, "precision": req.precision, "reason": why})
                say(name, f"skipped: {why}")
                continue
            tdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=staging))
            ctx = ExportContext(precision=req.precision, **ctx_common)
            art = _convert_one(name, target, ctx, tdir, failures, say)
            if art is None:
                continue
            if art.verified == "parity":  # measured selection among its forms; INT8 timed against fp32
                from partialdeploy.tuning import tune_or_record

                tune_or_record(ctx, art, tdir, notes)
            staged.append((tdir, Path(name) / req.precision))
            artifacts.append(art)
            say(name, f"{art.verified}: {art.path}")
            stages.append(StageResult(name, time.perf_counter() - t0, art.verified,
                                      art.parity[-1] if art.parity else None))

        # ---- place the artifacts and write the manifest
        manifest_path = None
        if artifacts:
            moves = staged  # (staging dir, place in the export) per artifact, in the same order
            for art, (_, rel) in zip(artifacts, staged):
                art.path = (rel / art.path).as_posix()
                art.files = [(rel / f).as_posix() for f in art.files]
            manifest_path = out_dir / MANIFEST

            def write_manifest():
                manifest = build_manifest(out_dir, spec, ckpt, artifacts, failures, skipped, stages, onnx_info, req,
                                          calibration=calib_info, complexity=complexity, check_images=check_rec)
                _write_json_atomic(manifest_path, manifest)

            prev = export_dir.read_previous(out_dir)
            commit(out_dir, staging, moves, write_manifest)  # all or nothing: a failure restores the previous state
            notes += _tidy(out_dir, prev, ckpt.sha256, {(a.target, a.precision) for a in artifacts})
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return ExportResult(spec, notes, stages, artifacts, failures, skipped, out_dir, manifest_path, onnx_info)


def _tidy(out_dir: Path, prev: dict | None, sha256: str, new_keys) -> list[str]:
    """After the new manifest is in place: remove the previous model's artifacts it no longer lists and
    name what else is left in the folder (export_dir)."""
    gone = export_dir.remove(export_dir.stale_paths(out_dir, prev, sha256, new_keys), out_dir)
    notes = [f"removed the previous model's artifacts: {', '.join(gone)}"] if gone else []
    left = export_dir.leftovers(out_dir, json.loads((out_dir / MANIFEST).read_text()))
    if left:
        notes.append(f"left in {out_dir} (not listed in its manifest): {', '.join(left)}")
    return notes


def _complexity(deploy, size: int) -> dict:
    """Parameters and FLOPs (one image) of the deploy form: what the manifest records for planning."""
    from partialdeploy.analysis.inspect import count_flops, count_params

    return {"params": count_params(deploy), "flops": count_flops(deploy, size).flops}


def _load(req: ExportRequest, targets: tuple[str, ...]):
    """Checkpoint (safe) -> ArchSpec -> train form, within the resource budget; the calibration and
    ``--eval`` folders are checked here, before any work."""
    from partialdeploy import demo
    from partialdeploy.checkpoint import load_checkpoint, load_model, resolve_spec

    ckpt_path = Path(req.checkpoint) if req.checkpoint else demo.DEMO_CKPT
    ckpt = load_checkpoint(ckpt_path)
    spec, notes = resolve_spec(ckpt, variant=req.variant, act=req.act, img_size=req.img_size)
    is_demo = demo.is_demo(ckpt.metadata)
    needs_calib = req.precision == "int8" and any(t != "onnx" and get_target(t).int8_calibrates for t in targets)
    budget.check(spec, sum(v.numel() for v in ckpt.state_dict.values()), spec.img_size, req.batch, targets,
                 req.precision, req.out_dir, req.parity_images, req.calib_count if needs_calib else 0,
                 demo.eval_size() if is_demo else 0)
    model = load_model(ckpt, spec)
    calib_dir = None
    if needs_calib:  # bad input is reported before any work
        calib_dir = req.calib or (demo.DEMO_CALIB if is_demo else None)
        if calib_dir is None:
            raise UserError("INT8 needs calibration images: pass --calib DIR (a folder of 100-500 "
                            "representative images)")
        if not Path(calib_dir).is_dir():
            raise UserError(calib_folder_error(calib_dir))
    if req.eval_dir is not None and not Path(req.eval_dir).is_dir():
        raise UserError(f"--eval {req.eval_dir} is not a folder: pass a folder with one sub-folder of images per class")
    return ckpt, ckpt_path, spec, notes, model, is_demo, calib_dir


def _onnx(req: ExportRequest, spec, ckpt, deploy, px, ref, staging: Path):
    """The deploy-form ONNX (with the preprocessing in its metadata) and its gate in ONNX Runtime."""
    from partialdeploy.exporters.onnx import export_onnx
    from partialdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner
    from partialdeploy.verification import runner_logits

    size = spec.img_size
    onnx_path = staging / "deploy.onnx"
    meta = {"model": spec.name, "architecture": spec.to_json(),
            "mean": json.dumps(list(spec.mean)), "std": json.dumps(list(spec.std)),
            "img_size": str(size), "layout": "NCHW", "color": "RGB",
            "crop_ratio": str(spec.crop_ratio), "labels": json.dumps(list(spec.labels) if spec.labels else None),
            "checkpoint_sha256": ckpt.sha256}
    info = export_onnx(deploy, onnx_path, size, dynamic_batch=req.dynamic_batch, batch=req.batch,
                       opset=req.opset, metadata=meta, in_chans=spec.in_chans)
    with OnnxRuntimeRunner(onnx_path) as r:
        out = runner_logits(r, 1)(px)  # in the model's static batch, the last chunk padded
    res = parity.gate(ref, out, "train form -> ONNX (ONNX Runtime)", req.tolerances.get("fp32", "fp32"))
    return onnx_path, info, res


def _images(req: ExportRequest, spec, is_demo: bool, calib_dir, notes: list[str]):
    """The real images of an export: parity inputs (the demo's held-out digits, else natural images),
    the seeded calibration subset with its file list and hash (INT8), and a labelled held-out set
    (the demo's, or ``--eval``). Returns (parity, calib, calib source, calibration record, eval x, eval y)."""
    from partialdeploy import check_images, demo
    from partialdeploy.images import load_image_folder

    size = spec.img_size
    eval_x = eval_y = None
    if is_demo:
        eval_x, eval_y = demo.eval_set(spec)
    chk = check_images.choose(spec, check_dir=req.check_images, calib_dir=calib_dir, user_calib=req.calib is not None,
                              is_demo=is_demo, demo_x=eval_x[: req.parity_images] if is_demo else None,
                              stock_n=req.parity_images, seed=req.calib_seed)
    px = chk.x
    notes += chk.notes
    calib = None
    calib_src = None
    calib_info = None
    if calib_dir is not None:
        from partialdeploy.images import files_digest, image_files, load_image_files, seeded_subset

        bad_images: list = []
        files = chk.calib_files if chk.calib_files is not None else image_files(calib_dir)
        if not files:
            calib = load_image_folder(calib_dir, size, spec.mean, spec.std)  # raises the one-line error
        calib, used = load_image_files(seeded_subset(files, 0, req.calib_seed), size, spec.mean, spec.std,
                                       spec.crop_ratio, limit=req.calib_count, skipped=bad_images)
        if not len(calib):
            load_image_folder(calib_dir, size, spec.mean, spec.std, skipped=[])  # raises "no usable image"
        if bad_images:
            notes.append(f"skipped {len(bad_images)} calibration image(s) that are corrupt or too large: "
                         + "; ".join(f"{f.name}: {why}" for f, why in bad_images[:3]))
        calib_src = str(calib_dir) if req.calib else "bundled demo calibration images"
        root = Path(calib_dir)
        calib_info = {"source": calib_src, "seed": req.calib_seed, "requested": req.calib_count,
                      "count": len(used), "available": len(files),
                      "files": [f.relative_to(root).as_posix() for f in used], "sha256": files_digest(used, root),
                      "held_out_for_checking": chk.record["count"] if chk.calib_files is not None else 0}
        if len(used) < req.calib_count:
            held = f" after holding {chk.record['count']} out for checking" if chk.calib_files is not None else ""
            msg = (f"only {len(used)} calibration image(s) in {calib_src}{held}, fewer than the {req.calib_count} "
                   "asked for (--calib-count / the profile's calib_images): INT8 scales from few images are fragile")
            notes.append(msg)
            calib_info["warning"] = msg
    if req.eval_dir is not None:
        if calib_dir is None:
            notes.append(f"--eval {req.eval_dir} ignored: it measures INT8 accuracy (use --precision int8)")
        else:
            from partialdeploy.images import load_labelled_folder

            eval_x, eval_y, classes, eval_files = load_labelled_folder(
                req.eval_dir, size, spec.mean, spec.std, spec.crop_ratio, labels=spec.labels)
            overlap = {f.resolve() for f in eval_files} & {(Path(calib_dir) / f).resolve()
                                                           for f in calib_info["files"]}
            if overlap:
                notes.append(f"{len(overlap)} --eval image(s) are also calibration images: the accuracy drop is "
                             "measured partly on data the quantizer saw")
            calib_info["eval"] = {"dir": str(req.eval_dir), "images": len(eval_x), "classes": len(set(eval_y.tolist())),
                                  "class_order": "checkpoint labels" if spec.labels else "sorted folder names",
                                  "overlap_with_calibration": len(overlap)}
    return px, calib, calib_src, calib_info, eval_x, eval_y, chk


def _carry_images(targets) -> bool:
    """Does one of the targets put the images into its artifact (``Target.carries_images``)?"""
    return any(get_target(t).carries_images for t in targets)


def _convert_one(name: str, target, ctx: ExportContext, tdir: Path, failures: list[dict],
                 say: Progress) -> Artifact | None:
    """Convert and verify one target in ``tdir``; a failure is recorded (and ``tdir`` removed) and the
    export goes on, except when the disk is full: then the whole export stops, nothing claimed."""
    try:
        # the target converts; verification opens the artifact in its runtime and gates it
        return convert_and_verify(target, ctx, tdir)
    except PartialDeployError as e:
        if is_disk_full(e):
            raise
        kind = "verification" if isinstance(e, VerificationError) else "error"
        failures.append({"target": name, "precision": ctx.precision, "kind": kind, "error": str(e),
                         **({"parity": [p.to_dict() for p in e.parity]} if getattr(e, "parity", ()) else {})})
        say(name, f"FAILED: {e}")
    except Exception as e:  # a converter crashed: report it as this target's failure, go on
        if is_disk_full(e):
            raise
        failures.append({"target": name, "precision": ctx.precision, "kind": "error",
                         "error": f"{type(e).__name__}: {first_line(e, 300)}"})
        say(name, f"FAILED: {type(e).__name__}: {e}")
    shutil.rmtree(tdir, ignore_errors=True)
    return None


def _artifact_entry(out_dir: Path, a: Artifact, command: str) -> ManifestEntry:
    from partialdeploy.verify import files_sha256

    p = out_dir / a.path
    return ManifestEntry(target=a.target, precision=a.precision, path=a.path, files=a.files, sha256=_sha256(p),
                         files_sha256=files_sha256(out_dir, a.files), size_bytes=_size(p), inputs=a.inputs,
                         outputs=a.outputs, parity=list(a.parity), verified=a.verified,
                         runtime_version=a.runtime_version, notes=a.notes, extra=a.extra, command=command)


def _kept_entries(prev: dict, out_dir: Path, new_keys) -> list[ManifestEntry]:
    """The previous manifest's artifacts of the same checkpoint that this export does not replace and
    that are still on disk (entries it cannot read are dropped)."""
    kept = []
    for d in prev.get("artifacts", []) if isinstance(prev.get("artifacts"), list) else []:
        try:
            e = ManifestEntry.from_dict(d)
        except ValueError:
            continue
        if (e.target, e.precision) not in new_keys and (out_dir / e.path).exists():
            kept.append(e)
    return kept


def build_manifest(out_dir: Path, spec, ckpt, artifacts, failures, skipped, stages, onnx_info, req,
                   calibration: dict | None = None, complexity: dict | None = None,
                   check_images: dict | None = None) -> dict:
    import platform

    import torch

    prev: dict = {}
    mp = out_dir / MANIFEST
    if mp.exists():
        try:
            prev = json.loads(mp.read_text())
            prev = prev if isinstance(prev, dict) else {}
        except (OSError, ValueError):
            prev = {}
    new_keys = {(a.target, a.precision) for a in artifacts}
    kept = []
    if isinstance(prev.get("model"), dict) and prev["model"].get("checkpoint_sha256") == ckpt.sha256:
        kept = _kept_entries(prev, out_dir, new_keys)
    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for name in sorted({a.target for a in artifacts}):
        try:
            versions[name] = get_target(name).version()
        except Exception:
            versions[name] = None
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
        "versions": versions,
        "artifacts": [e.to_dict() for e in kept + [_artifact_entry(out_dir, a, command) for a in artifacts]],
        "failures": failures,
        "skipped": skipped,
        "targets_known": list(target_names()),
    }


def command_line() -> str:
    import shlex

    return "partialdeploy " + " ".join(shlex.quote(a) for a in sys.argv[1:])
