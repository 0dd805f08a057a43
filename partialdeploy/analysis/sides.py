"""The two sides of ``partialdeploy diff``: what the user passed (a checkpoint, a model file of any
runtime with boundary taps, or an export directory whose artifact is picked by target/precision and
checked against its sha256), opened through its runtime's runner with ``taps=True``
(:mod:`partialdeploy.analysis.taps`: no runtime is known here), with the preprocessing it expects
and what its export certified."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from partialdeploy.errors import UserError
from partialdeploy.records import Artifact
from partialdeploy.spec import ArchSpec
from partialdeploy.integrity import MANIFEST

CKPT_SUFFIXES = {".ckpt", ".pth", ".pt", ".bin", ".safetensors"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
Collector = Callable[[np.ndarray], dict]  # images (N,C,H,W) -> {boundary name: (N, ...) array}


@dataclass
class Preprocessing:
    size: int
    mean: tuple
    std: tuple
    crop_ratio: float = 0.875
    demo: bool = False  # the bundled demo model: its held-out digits are the default images
    labels: list | None = None
    source: str = ""
    check: dict | None = None  # the export's ``check_images`` record (manifest): the default images


@dataclass
class Side:
    label: str  # what the user passed, for the report
    kind: str  # "train form (PyTorch)", "ONNX Runtime", "OpenVINO"
    precision: str | None
    collect: Collector
    boundaries: list[str]
    prep: Preprocessing | None
    notes: list[str] = field(default_factory=list)
    certificate: dict | None = None  # the tolerance its export gate passed (manifest), when known
    float_blocks: list[str] = field(default_factory=list)  # INT8 fallback: blocks kept in float

    def describe(self) -> dict:
        return {"input": self.label, "runtime": self.kind, "precision": self.precision,
                "boundaries": len(self.boundaries)}


def prep_from_metadata(meta: dict, name: str) -> Preprocessing | None:
    """The preprocessing a model file records in its metadata (``Runner.model_metadata``, any runtime
    that keeps it: an ONNX, an OpenVINO IR), None when it records none; ``name`` says where it came from."""
    demo = _is_demo_sha(meta.get("checkpoint_sha256"))
    try:  # the architecture the export wrote (ArchSpec.to_json): its preprocessing
        spec = ArchSpec.from_json(meta["architecture"])
        return Preprocessing(spec.img_size, tuple(spec.mean), tuple(spec.std), float(spec.crop_ratio), demo=demo,
                             labels=list(spec.labels) if spec.labels else None, source=f"{name} metadata")
    except Exception:
        pass
    try:  # an ONNX without (a readable) architecture: the separate preprocessing keys
        size = int(meta["img_size"])
        mean, std = tuple(json.loads(meta["mean"])), tuple(json.loads(meta["std"]))
    except Exception:
        return None
    labels = json.loads(meta["labels"]) if meta.get("labels") else None
    return Preprocessing(size, mean, std, float(meta.get("crop_ratio", 0.875)), demo=demo, labels=labels,
                         source=f"{name} metadata")


def _is_demo_sha(sha: str | None) -> bool:
    if not sha:
        return False
    from partialdeploy import demo
    from partialdeploy.integrity import file_sha256

    return sha == file_sha256(demo.DEMO_CKPT)


def _prep_from_manifest(man: dict, where: str) -> Preprocessing | None:
    p = man.get("preprocessing") or {}
    try:
        size = int(p["size"][0])
    except (KeyError, TypeError, IndexError, ValueError):
        return None
    mdl = man.get("model") or {}
    rs = p.get("resize_shorter_side_to") or round(size / 0.875)
    chk = man.get("check_images")
    return Preprocessing(size, tuple(p.get("mean", IMAGENET_MEAN)), tuple(p.get("std", IMAGENET_STD)),
                         size / float(rs), demo=_is_demo_sha(mdl.get("checkpoint_sha256")),
                         labels=mdl.get("labels"), source=f"{where}", check=chk if isinstance(chk, dict) else None)


def _tap_runtime(entry: Artifact) -> tuple[str, str | None]:
    """(runtime that taps an artifact here, file inside the artifact to open instead, or None)."""
    from partialdeploy import backends

    b = backends.find(entry.target)
    if b is None:
        raise UserError(f"unknown target {entry.target!r} in the manifest: re-export")
    if not b.is_available() and b.diff_via:  # e.g. a TensorRT bundle without a GPU: its ONNX in ORT
        return b.diff_via[1], b.diff_via[0]
    return b.name, None


def _pick_artifact(man: dict, root: Path, target: str | None, precision: str | None, label: str) -> Artifact:
    from partialdeploy import backends
    from partialdeploy.backends.runner import BOUNDARY_TAPS
    from partialdeploy.integrity import entries

    every = entries(man)
    arts = [a for a in every if (target is None or a.target == target)
            and (precision is None or a.precision == precision)]

    def tappable(a):
        b = backends.find(a.target)
        if b is None:
            return False
        rt = backends.get(_tap_runtime(a)[0])
        return BOUNDARY_TAPS in rt.runner_class().capabilities and rt.is_available()

    runnable = [a for a in arts if tappable(a)]
    if not arts:
        have = ", ".join(f"{a.target}/{a.precision}" for a in every) or "none"
        raise UserError(f"{label}: no artifact for --target {target or '*'} --precision {precision or '*'} in "
                        f"{root} (it has: {have})")
    if not runnable:
        why = backends.get(_tap_runtime(arts[0])[0]).unavailable_reason() or "its runtime cannot expose block outputs"
        raise UserError(f"{label}: {arts[0].target} artifacts cannot be compared here ({why}); "
                        "pick another artifact with --target/--precision")
    if len(runnable) > 1:
        have = ", ".join(f"{a.target}/{a.precision}" for a in runnable)
        raise UserError(f"{label}: {root} has several artifacts ({have}); pick one with --target/--precision")
    return runnable[0]


def open_side(arg: str | Path, target: str | None = None, precision: str | None = None,
              threads: int | None = None, label: str = "REF", variant: str | None = None) -> Side:
    p = Path(arg)
    if not p.exists():
        raise UserError(f"{label} {arg} does not exist: pass a checkpoint, .onnx, .xml or an export directory")
    if p.is_dir():
        mp = p / MANIFEST
        from partialdeploy.safety import refuse_while_exporting

        refuse_while_exporting(p, "diff")
        if not mp.is_file():
            raise UserError(f"{label} {p} is a directory without {MANIFEST}: pass an export directory, "
                            "a checkpoint, an .onnx or an .xml")
        from partialdeploy.integrity import load_manifest, check_artifact_files

        man = load_manifest(mp)
        art = _pick_artifact(man, p, target, precision, label)
        apath = check_artifact_files(p, art)  # inside the export dir, sha256 of every file
        runtime, inner = _tap_runtime(art)
        side = _open_model(apath / inner if inner else apath, runtime, threads, label, art)
        side.label = f"{arg} ({art.target}/{art.precision})"
        side.prep = _prep_from_manifest(man, f"{mp}") or side.prep
        return side
    if p.suffix.lower() in CKPT_SUFFIXES:
        return _open_checkpoint(p, threads, variant)
    from partialdeploy import backends

    try:
        runtime = backends.runtime_for_path(p)
    except UserError:
        raise UserError(f"{label} {p}: cannot tell what it is from '{p.suffix.lower()}'; pass a checkpoint "
                        f"({', '.join(sorted(CKPT_SUFFIXES))}), a model file "
                        f"({', '.join(backends.suffixes())}) or an export directory") from None
    from partialdeploy.integrity import export_of

    found = export_of(p)  # a file of an export directory is checked against its manifest
    if p.suffix.lower() == ".onnx":
        from partialdeploy.onnxfile import check_external_data

        check_external_data(p)  # external data outside the model's folder is refused before any runtime reads it
    side = _open_model(p, runtime, threads, label, found[2] if found else None)
    if found and found[2] is not None:
        side.prep = _prep_from_manifest(found[0], str(found[1] / MANIFEST)) or side.prep
    return side


def _open_model(p: Path, runtime: str, threads, label: str, entry: Artifact | None) -> Side:
    from partialdeploy import backends
    from partialdeploy.analysis.taps import open_taps

    opts = backends.get(runtime).runner_class().artifact_options(entry) if entry is not None else {}
    taps = open_taps(p, runtime, threads, **opts)
    prec = entry.precision if entry is not None else ("int8" if taps.quantized else "fp32")
    prep = prep_from_metadata(taps.runner.model_metadata(), p.name)
    side = Side(str(p), taps.label, prec, taps.collect, taps.boundaries, prep)
    if entry is not None and entry.parity:
        side.certificate = entry.parity[-1].tolerance
    fb = (entry.extra or {}).get("int8_fallback") if entry is not None else None
    side.float_blocks = [str(b) for b in (fb or {}).get("float_blocks") or []] if isinstance(fb, dict) else []
    return side


def _open_checkpoint(p: Path, threads, variant: str | None) -> Side:
    from partialdeploy import demo
    from partialdeploy.checkpoint import load_checkpoint, load_model, resolve_spec
    from partialdeploy.analysis.taps import open_taps

    ckpt = load_checkpoint(p)
    spec, _ = resolve_spec(ckpt, variant=variant)
    model = load_model(ckpt, spec)
    taps = open_taps(None, "torch", threads, module=model,
                     input_shape=(None, spec.in_chans, spec.img_size, spec.img_size))
    prep = Preprocessing(spec.img_size, tuple(spec.mean), tuple(spec.std), spec.crop_ratio,
                         demo=demo.is_demo(ckpt.metadata), labels=list(spec.labels) if spec.labels else None,
                         source=f"{p.name} ({spec.name})")
    return Side(str(p), "train form (PyTorch)", "fp32", taps.collect, taps.boundaries, prep)
