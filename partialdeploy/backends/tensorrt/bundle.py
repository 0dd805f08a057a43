"""The TensorRT build bundle, export side: what ``export --target tensorrt`` writes so that the engine can
be built — and the model fed — on the device without anything else.

A bundle is self-describing: ``bundle.json`` (and the README written from it) carries the input and
output names, shapes, dtype and layout, the preprocessing (resize, crop, mean/std, colour order), the
labels, the precision recipe, the TensorRT generations it builds with and the sha256 of every other file;
``infer.py`` (a copy of ``bundle_infer.py``: numpy + TensorRT, no torch, no partialdeploy)
reads them, and ``sample_*.png`` are parity images as decoded, so the example reproduces the bundle's
reference logits from raw pixels. No torch here.
"""

from __future__ import annotations

import json
import shlex
import shutil
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import numpy as np

from partialdeploy.integrity import file_sha256
from partialdeploy.backends.tensorrt.cuda import SIDECAR
from partialdeploy.errors import UserError
from partialdeploy.backends.tensorrt.build import (BUNDLE_SCHEMA, CALIB_CACHE, DEFAULT_WORKSPACE_MB, ENGINE,
                                                   TIMING_CACHE, check_generation, trtexec_args)
from partialdeploy.backends.tensorrt.onnx_support import GENERATIONS
from partialdeploy.backends.tensorrt.bundle_text import build_script, readme

EVAL_BYTES_MAX = 64 << 20  # keep the bundle small: at most 64 MB of held-out images
SAMPLES_MAX = 8  # raw parity images carried for infer.py
SAMPLES_BYTES_MAX = 8 << 20
EXAMPLE = "infer.py"
TYPING = {8: "weak: --fp16 / --int8 builder flags (no strong typing in 8.x); the fp16 ONNX's fp32 nodes "
             "pinned by precision constraints",
          10: "strong (--stronglyTyped / STRONGLY_TYPED)", 11: "strong (always)"}


def _tol_dict(tol) -> dict | str | None:
    if tol is None or isinstance(tol, str):
        return tol
    if is_dataclass(tol):
        return {k: v for k, v in asdict(tol).items() if v is not None}
    return dict(tol)


def _gate(tol, precision: str) -> dict:
    """The tolerance as numbers (a precision name resolved to its defaults): what infer.py checks."""
    from partialdeploy.parity import DEFAULT_TOLERANCES

    d = _tol_dict(tol)
    if d is None or isinstance(d, str):
        d = _tol_dict(DEFAULT_TOLERANCES[d or precision])
    return d


@dataclass
class BundleImages:
    """The real images a bundle carries: the parity reference (always; ``raw``: the same images as
    decoded, before preprocessing), calibration images (the implicit INT8 path) and the held-out
    labelled set (INT8)."""

    parity_inputs: np.ndarray  # preprocessed real images
    reference: np.ndarray  # train-form logits on them
    calib: np.ndarray | None = None
    calib_source: str | None = None
    eval_images: np.ndarray | None = None
    eval_labels: np.ndarray | None = None
    eval_reference: np.ndarray | None = None
    raw: list | None = None

    @classmethod
    def of(cls, ctx) -> "BundleImages":
        """The images of an export context (backends.target.ExportContext)."""
        return cls(ctx.parity_inputs, ctx.reference, ctx.calib, ctx.calib_source, ctx.eval_images, ctx.eval_labels,
                   ctx.eval_reference, getattr(ctx, "parity_raw", None))


@dataclass
class BundleSpec:
    """What :func:`write_bundle` writes, built by the TensorRT target (``target.py``).

    ``onnx_path`` is the TensorRT-ready ONNX that already carries the precision (strongly typed fp16,
    Q/DQ INT8; for the implicit INT8 path the fp32 ONNX). ``generation`` is the TensorRT major version
    the target profile expects (None: any); ``quantization`` the INT8 mode. ``builds_with``: the
    generations whose ONNX parser takes the model (default: all; the implicit path: the profile's) — a
    trtexec line is written for each, and building with one other than ``generation`` needs
    ``--any-tensorrt`` / ``ANY_TENSORRT=1``. ``preprocessing`` (``images.preprocessing_record``),
    ``labels`` and ``num_classes`` say how to feed the model and read its output; ``wheel``: a
    partialdeploy wheel to carry for installing on the device."""

    onnx_path: Path
    precision: str
    images: BundleImages
    chw: list  # input channels, height, width
    batch: dict  # {"min", "opt", "max"}
    dynamic: bool = False
    input_name: str = "input"
    output_name: str = "logits"
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    tolerance: object = None  # parity.Tolerance / dict / precision name for build-engine's gate
    ops_report: dict | None = None
    model_name: str = ""
    generation: int | None = None
    quantization: str = "explicit"
    onnx_precision: dict | None = None
    profile: str | None = None
    builds_with: list | None = None
    preprocessing: dict | None = None
    labels: list | None = None
    num_classes: int | None = None
    wheel: Path | None = None


def _write_arrays(out_dir: Path, s: BundleSpec, implicit: bool) -> tuple[list[str], dict | None, dict | None]:
    img = s.images
    np.save(out_dir / "parity_inputs.npy", np.ascontiguousarray(img.parity_inputs, np.float32))
    np.save(out_dir / "reference_logits.npy", np.ascontiguousarray(img.reference, np.float32))
    files = ["parity_inputs.npy", "reference_logits.npy"]
    calib_info = None
    if implicit:
        if img.calib is None or len(img.calib) == 0:
            raise UserError("INT8 needs calibration images: pass --calib DIR (100-500 representative images)")
        np.save(out_dir / "calib.npy", np.ascontiguousarray(img.calib, np.float32))
        files.append("calib.npy")
        calib_info = {"file": "calib.npy", "count": int(len(img.calib)), "source": img.calib_source,
                      "cache": CALIB_CACHE, "calibrator": "IInt8EntropyCalibrator2"}
    eval_info = None
    if s.precision == "int8" and img.eval_images is not None and img.eval_reference is not None:
        per = max(1, img.eval_images[0].nbytes)
        n = min(len(img.eval_images), EVAL_BYTES_MAX // per)
        np.save(out_dir / "eval_images.npy", np.ascontiguousarray(img.eval_images[:n], np.float32))
        np.save(out_dir / "eval_reference.npy", np.ascontiguousarray(img.eval_reference[:n], np.float32))
        files += ["eval_images.npy", "eval_reference.npy"]
        if img.eval_labels is not None:
            np.save(out_dir / "eval_labels.npy", np.asarray(img.eval_labels[:n], np.int64))
            files.append("eval_labels.npy")
        eval_info = {"count": int(n), "labels": img.eval_labels is not None}
    return files, calib_info, eval_info


def _write_samples(out_dir: Path, raw) -> list[dict]:
    """Up to SAMPLES_MAX parity images as decoded (lossless PNG, uint8 RGB), within SAMPLES_BYTES_MAX."""
    from PIL import Image

    from partialdeploy.backends.tensorrt.bundle_infer import to_rgb_uint8

    samples, total = [], 0
    for i, im in enumerate((raw or [])[:SAMPLES_MAX]):
        name = f"sample_{i}.png"
        Image.fromarray(to_rgb_uint8(im)).save(out_dir / name)
        total += (out_dir / name).stat().st_size
        if total > SAMPLES_BYTES_MAX and samples:
            (out_dir / name).unlink()
            break
        samples.append({"image": name, "index": i})
    return samples


def write_bundle(out_dir: Path, spec: BundleSpec) -> dict:
    """Write the build bundle described by ``spec`` into ``out_dir``; returns bundle.json's content."""
    from partialdeploy.version import __version__

    s = spec
    precision, quantization, chw, batch = s.precision, s.quantization, list(s.chw), s.batch
    generation = check_generation(s.generation, quantization if precision == "int8" else "explicit", precision)
    implicit = precision == "int8" and quantization == "implicit"
    gens = [generation] if implicit else sorted(int(g) for g in (GENERATIONS if s.builds_with is None
                                                                 else s.builds_with))
    if generation is not None and generation not in gens:
        raise UserError(f"this model does not build with TensorRT {generation} (the profile's generation)")
    out_dir = Path(out_dir)
    shutil.copyfile(s.onnx_path, out_dir / "model.onnx")
    arrays, calib_info, eval_info = _write_arrays(out_dir, s, implicit)
    files = ["model.onnx"] + arrays
    samples = _write_samples(out_dir, s.images.raw) if s.preprocessing else []
    files += [x["image"] for x in samples]
    shutil.copyfile(Path(__file__).with_name("bundle_infer.py"), out_dir / EXAMPLE)
    files.append(EXAMPLE)
    if s.wheel is not None:
        wheel = Path(s.wheel)
        if not wheel.is_file() or wheel.suffix != ".whl":
            raise UserError(f"bundle_wheel {wheel} is not a wheel file: build one with `make dist`")
        shutil.copyfile(wheel, out_dir / wheel.name)
        files.append(wheel.name)
    q = quantization if precision == "int8" else "explicit"
    keep32 = ((s.onnx_precision or {}).get("kept_fp32") or ()) if precision == "fp16" else ()
    args = {str(g): trtexec_args(precision, s.input_name, chw, s.dynamic, batch, s.workspace_mb, g, q,
                                 fp32_layers=keep32) for g in gens}
    n_batch = None if s.dynamic else batch["opt"]
    bundle = {
        "schema": BUNDLE_SCHEMA, "tool": f"partialdeploy {__version__}", "model": s.model_name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "precision": precision, "onnx": "model.onnx", "engine": ENGINE, "sidecar": SIDECAR,
        "tensorrt": {"expected": generation, "profile": s.profile, "builds_with": gens,
                     "typing": "weak (implicit INT8 calibration)" if implicit else "strong",
                     "int8_quantization": q if precision == "int8" else None},
        "typing_by_generation": {str(g): "weak (implicit INT8 calibration)" if implicit else TYPING[g] for g in gens},
        "onnx_precision": s.onnx_precision or {"precision": precision},
        "input": {"name": s.input_name, "shape": [n_batch, *chw], "dtype": "float32", "layout": "NCHW"},
        "output": {"name": s.output_name, "shape": [n_batch, s.num_classes], "dtype": "float32",
                   "meaning": "logits (softmax gives class probabilities)"},
        "preprocessing": s.preprocessing, "labels": list(s.labels) if s.labels else None,
        "dynamic_batch": s.dynamic, "batch": batch, "workspace_mb": int(s.workspace_mb),
        "timing_cache": TIMING_CACHE, "calibration": calib_info, "eval": eval_info,
        "parity": {"inputs": "parity_inputs.npy", "reference": "reference_logits.npy",
                   "tolerance": _tol_dict(s.tolerance) or precision, "gate": _gate(s.tolerance, precision)},
        "samples": samples, "example": EXAMPLE, "wheel": Path(s.wheel).name if s.wheel is not None else None,
        "onnx_check": s.ops_report, "trtexec": args, "trtexec_line": {g: shlex.join(a) for g, a in args.items()},
    }
    (out_dir / "build_engine.sh").write_text(build_script(bundle))
    (out_dir / "build_engine.sh").chmod(0o755)
    files.append("build_engine.sh")
    bundle["sha256"] = {f: file_sha256(out_dir / f) for f in files}  # README.txt and bundle.json: the manifest's
    (out_dir / "README.txt").write_text(readme(bundle))
    files += ["README.txt", "bundle.json"]
    bundle["files"] = files
    (out_dir / "bundle.json").write_text(json.dumps(bundle, indent=2) + "\n")
    return bundle
