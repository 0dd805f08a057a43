"""What an export starts from: the checkpoint (loaded safely, within the resource budget) and the real
images its gates judge on, its calibration subset and its labelled held-out set."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partialdeploy.exporting import budget
from partialdeploy.errors import UserError
from partialdeploy.backends import get_target
from partialdeploy.exporting.request import ExportRequest
from partialdeploy.images import calib_folder_error
from partialdeploy.spec import ArchSpec


@dataclass
class Loaded:
    """The checkpoint and its train form, and where INT8 calibrates from (None: no calibration)."""

    ckpt: Any  # checkpoint.Checkpoint
    path: Path
    spec: ArchSpec
    notes: list[str]
    model: Any  # the train form (torch.nn.Module)
    is_demo: bool
    calib_dir: Path | None


@dataclass
class Calibration:
    """The seeded calibration subset (preprocessed) and what the manifest records of it."""

    x: Any  # (N,3,H,W) float32
    source: str
    record: dict


@dataclass
class ExportImages:
    """The real images of an export: parity inputs, calibration (INT8), a labelled held-out set."""

    parity: Any  # (N,3,H,W) float32, preprocessed
    check: Any  # check_images.CheckImages: where the parity images come from (the manifest's check_images)
    calib: Calibration | None = None
    eval_x: Any = None
    eval_y: Any = None
    notes: list[str] = field(default_factory=list)


def load(req: ExportRequest, targets: tuple[str, ...]) -> Loaded:
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
    if req.options.int8_exclude:  # block names are the model family's (official names)
        from partialdeploy import families
        from partialdeploy.exporting.options import check_blocks

        check_blocks(req.options.int8_exclude, families.get(spec.family).boundaries(spec), spec.name)
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
    return Loaded(ckpt, ckpt_path, spec, notes, model, is_demo, Path(calib_dir) if calib_dir else None)


def gather_images(req: ExportRequest, loaded: Loaded) -> ExportImages:
    """Parity inputs (the user's, held out of calibration, the demo's digits, else stock photos:
    check_images.choose), the seeded calibration subset with its file list and hash (INT8), and a
    labelled held-out set (the demo's, or ``--eval``). What they say is in ``notes``."""
    from partialdeploy import demo
    from partialdeploy.exporting import check_images

    spec = loaded.spec
    eval_x = eval_y = None
    if loaded.is_demo:
        eval_x, eval_y = demo.eval_set(spec)
    chk = check_images.choose(spec, check_dir=req.check_images, calib_dir=loaded.calib_dir,
                              user_calib=req.calib is not None, is_demo=loaded.is_demo,
                              demo_x=eval_x[: req.parity_images] if loaded.is_demo else None,
                              stock_n=req.parity_images, seed=req.calib_seed)
    imgs = ExportImages(chk.x, chk, notes=list(chk.notes))
    if loaded.calib_dir is None:  # the held-out set measures the INT8 accuracy drop; parity needs only px
        if req.eval_dir is not None:
            imgs.notes.append(f"--eval {req.eval_dir} ignored: it measures INT8 accuracy (use --precision int8)")
        return imgs
    imgs.calib = _calibration(req, spec, loaded.calib_dir, chk, imgs.notes)
    imgs.eval_x, imgs.eval_y = eval_x, eval_y
    if req.eval_dir is not None:
        imgs.eval_x, imgs.eval_y = _labelled(req, spec, loaded.calib_dir, imgs.calib.record, imgs.notes)
    return imgs


def _calibration(req: ExportRequest, spec: ArchSpec, calib_dir: Path, chk, notes: list[str]) -> Calibration:
    """The seeded subset of ``calib_dir`` (what check_images left of it), its record for the manifest;
    corrupt images and too few images are noted."""
    from partialdeploy.images import files_digest, image_files, load_image_files, load_image_folder, seeded_subset

    size = spec.img_size
    bad_images: list = []
    files = chk.calib_files if chk.calib_files is not None else image_files(calib_dir)
    if not files:
        load_image_folder(calib_dir, size, spec.mean, spec.std)  # raises the one-line error
    calib, used = load_image_files(seeded_subset(files, 0, req.calib_seed), size, spec.mean, spec.std,
                                   spec.crop_ratio, limit=req.calib_count, skipped=bad_images)
    if not len(calib):
        load_image_folder(calib_dir, size, spec.mean, spec.std, skipped=[])  # raises "no usable image"
    if bad_images:
        notes.append(f"skipped {len(bad_images)} calibration image(s) that are corrupt or too large: "
                     + "; ".join(f"{f.name}: {why}" for f, why in bad_images[:3]))
    source = str(calib_dir) if req.calib else "bundled demo calibration images"
    held_out = chk.calib_files is not None
    record = {"source": source, "seed": req.calib_seed, "requested": req.calib_count,
              "count": len(used), "available": len(files),
              "files": [f.relative_to(calib_dir).as_posix() for f in used], "sha256": files_digest(used, calib_dir),
              "held_out_for_checking": chk.record["count"] if held_out else 0}
    if len(used) < req.calib_count:
        held = f" after holding {chk.record['count']} out for checking" if held_out else ""
        msg = (f"only {len(used)} calibration image(s) in {source}{held}, fewer than the {req.calib_count} "
               "asked for (--calib-count / the profile's calib_images): INT8 scales from few images are fragile")
        notes.append(msg)
        record["warning"] = msg
    return Calibration(calib, source, record)


def _labelled(req: ExportRequest, spec: ArchSpec, calib_dir: Path, record: dict, notes: list[str]):
    """``--eval``: the labelled held-out images (x, y); recorded under the calibration record's ``eval``,
    with how many of them the quantizer also saw."""
    from partialdeploy.images import load_labelled_folder

    eval_x, eval_y, classes, eval_files = load_labelled_folder(
        req.eval_dir, spec.img_size, spec.mean, spec.std, spec.crop_ratio, labels=spec.labels)
    overlap = {f.resolve() for f in eval_files} & {(calib_dir / f).resolve() for f in record["files"]}
    if overlap:
        notes.append(f"{len(overlap)} --eval image(s) are also calibration images: the accuracy drop is "
                     "measured partly on data the quantizer saw")
    record["eval"] = {"dir": str(req.eval_dir), "images": len(eval_x), "classes": len(set(eval_y.tolist())),
                      "class_order": "checkpoint labels" if spec.labels else "sorted folder names",
                      "overlap_with_calibration": len(overlap)}
    return eval_x, eval_y
