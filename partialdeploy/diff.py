"""``partialdeploy diff REF CAND``: run two models on the same real images with every block boundary
exposed (patch_embed, each ``stages.N.blocks.M``, each merging layer ``stages.N``, head) and name the
first block whose output leaves the tolerance.

A side is a checkpoint (train form, PyTorch forward hooks), an ONNX file (ONNX Runtime, the boundary
tensors added as graph outputs), an OpenVINO IR (``Model.add_outputs``) or an export directory
(``manifest.json``; the artifact picked by target/precision and checked against its sha256). The
boundary tensors carry the official block names (see :mod:`partialdeploy.blocknames`), so the same
names are found in every artifact derived from our ONNX.

The same machinery measures per-block quantization error for the INT8 fallback
(:mod:`partialdeploy.int8fallback`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from partialdeploy.blocknames import BOUNDARY, HEAD
from partialdeploy.errors import UserError, first_line
from partialdeploy.records import ManifestEntry
from partialdeploy.spec import ArchSpec
from partialdeploy.verification import pad_batch

CKPT_SUFFIXES = {".ckpt", ".pth", ".pt", ".bin", ".safetensors"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# per-block tolerance by the candidate's precision: cosine (per image, minimum) and max|Δ| relative
# to the range of the reference block output
TOLERANCES = {
    "fp32": {"cosine_min": 0.9999, "rel_max": 1e-3, "top1_min": 1.0},
    "fp16": {"cosine_min": 0.999, "rel_max": 1e-2, "top1_min": 1.0},
    "bf16": {"cosine_min": 0.995, "rel_max": 5e-2, "top1_min": 0.9},
    "int8": {"cosine_min": 0.98, "rel_max": 0.5, "top1_min": 0.9},
}

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


@dataclass
class Side:
    label: str  # what the user passed, for the report
    kind: str  # "train form (PyTorch)", "ONNX Runtime", "OpenVINO"
    precision: str | None
    collect: Collector
    boundaries: list[str]
    prep: Preprocessing | None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict:
        return {"input": self.label, "runtime": self.kind, "precision": self.precision,
                "boundaries": len(self.boundaries)}


@dataclass
class BlockDiff:
    block: str
    shape: list
    cosine_min: float
    cosine_mean: float
    max_abs: float
    rel_max: float
    within: bool

    def to_dict(self) -> dict:
        return {k: (round(v, 8) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


@dataclass
class DiffResult:
    ref: dict
    cand: dict
    images: int
    image_source: str
    tolerance: dict
    blocks: list[BlockDiff]
    top1_agreement: float
    first_divergent: str | None
    missing: dict
    notes: list[str]

    @property
    def agree(self) -> bool:
        return self.first_divergent is None and self.top1_agreement >= self.tolerance["top1_min"]

    @property
    def exit_code(self) -> int:
        return 0 if self.agree else 1

    def to_dict(self) -> dict:
        return {"agree": self.agree, "first_divergent": self.first_divergent,
                "top1_agreement": self.top1_agreement, "images": self.images, "image_source": self.image_source,
                "tolerance": self.tolerance, "ref": self.ref, "cand": self.cand,
                "blocks": [b.to_dict() for b in self.blocks], "missing": self.missing, "notes": self.notes}


# ---------------------------------------------------------------- comparing boundary outputs

def compare_block(name: str, ref: np.ndarray, out: np.ndarray, tol: dict) -> BlockDiff:
    if ref.shape != out.shape:
        raise UserError(f"block {name}: output shape {list(out.shape)} differs from the reference's "
                        f"{list(ref.shape)}; REF and CAND are different architectures or input sizes")
    r = np.asarray(ref, np.float64).reshape(len(ref), -1)
    o = np.asarray(out, np.float64).reshape(len(out), -1)
    if not np.all(np.isfinite(o)):
        return BlockDiff(name, list(ref.shape[1:]), -1.0, -1.0, float("inf"), float("inf"), False)
    num = (r * o).sum(1)
    den = np.linalg.norm(r, axis=1) * np.linalg.norm(o, axis=1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-300), np.where(np.abs(r - o).max(1) == 0, 1.0, 0.0))
    max_abs = float(np.abs(r - o).max()) if r.size else 0.0
    rng = float(r.max() - r.min()) if r.size else 1.0
    rel = max_abs / max(rng, 1e-12)
    within = float(cos.min()) >= tol["cosine_min"] and rel <= tol["rel_max"]
    return BlockDiff(name, list(ref.shape[1:]), float(cos.min()), float(cos.mean()), max_abs, rel, within)


def compare_boundaries(ref: dict, cand: dict, order: list[str], tol: dict) -> tuple[list[BlockDiff], float, str | None]:
    """Per-block diffs in ``order`` (names present in both), top-1 agreement of the head, first divergent."""
    blocks = [compare_block(b, ref[b], cand[b], tol) for b in order if b in ref and b in cand]
    top1 = float((np.asarray(ref[HEAD]).reshape(len(ref[HEAD]), -1).argmax(1)
                  == np.asarray(cand[HEAD]).reshape(len(cand[HEAD]), -1).argmax(1)).mean())
    first = next((b.block for b in blocks if not b.within), None)
    return blocks, top1, first


# ---------------------------------------------------------------- collectors per runtime

def torch_collector(model) -> tuple[Collector, list[str]]:
    """Forward hooks on a train-form PartialNet: patch_embed, stages.N.blocks.M, stages.N (merging), head."""
    import torch

    from partialdeploy.models.partialnet import MLPBlock, PatchEmbed, PatchMerging

    names = [n for n, m in model.named_modules() if isinstance(m, (PatchEmbed, MLPBlock, PatchMerging))]
    mods = dict(model.named_modules())

    def collect(x: np.ndarray) -> dict:
        acc: dict[str, list] = {n: [] for n in names + [HEAD]}
        hooks = [mods[n].register_forward_hook(lambda _m, _i, o, n=n: acc[n].append(o.detach().double().numpy()))
                 for n in names]
        try:
            model.eval()
            with torch.inference_mode():
                for i in range(0, len(x), 8):
                    acc[HEAD].append(model(torch.from_numpy(np.ascontiguousarray(x[i:i + 8]))).double().numpy())
        finally:
            for h in hooks:
                h.remove()
        return {k: np.concatenate(v, 0) for k, v in acc.items() if v}

    return collect, names + [HEAD]


def _padded(fn, x: np.ndarray, batch: int | None) -> list[dict]:
    """Run ``fn(chunk) -> dict`` over ``x`` in chunks of a static ``batch`` (padding the last)."""
    bs = batch or min(8, len(x))
    outs = []
    for i in range(0, len(x), bs):
        chunk = x[i:i + bs]
        n = len(chunk)
        if batch:
            chunk = pad_batch(chunk, bs)
        outs.append({k: np.asarray(v)[:n] for k, v in fn(np.ascontiguousarray(chunk, np.float32)).items()})
    return outs


def _stack(outs: list[dict]) -> dict:
    return {k: np.concatenate([o[k] for o in outs], 0) for k in outs[0]} if outs else {}


def onnx_boundaries(model) -> list[str]:
    """Boundary tensors of an onnx.ModelProto in execution order (head = the first graph output)."""
    produced = [t for n in model.graph.node for t in n.output]
    return [t for t in produced if BOUNDARY.match(t) and t != HEAD] + [HEAD]


def ort_collector(model_or_path, threads: int | None = None) -> tuple[Collector, list[str]]:
    """ONNX Runtime with every boundary tensor added as a graph output."""
    import onnx
    import onnxruntime as ort

    m = model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(str(model_or_path))
    m = onnx.ModelProto.FromString(m.SerializeToString())
    bounds = onnx_boundaries(m)
    have = {o.name for o in m.graph.output}
    for b in bounds[:-1]:
        if b not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(b, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = int(threads)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise UserError(f"ONNX Runtime cannot load the model: {first_line(e, 200)}") from e
    inp = sess.get_inputs()[0]
    batch = inp.shape[0] if isinstance(inp.shape[0], int) and inp.shape[0] > 0 else None
    outs = [o.name for o in sess.get_outputs()]
    head = outs[0]

    def run(chunk):
        res = dict(zip(outs, sess.run(outs, {inp.name: chunk})))
        res[HEAD] = res.pop(head)
        return res

    return (lambda x: _stack(_padded(run, x, batch))), bounds


def ov_collector(model_or_path, threads: int | None = None, config: dict | None = None) -> tuple[Collector, list[str]]:
    """OpenVINO CPU (f32 inference precision) with every boundary tensor added as a model output."""
    import openvino as ov

    core = ov.Core()
    try:
        model = core.read_model(str(model_or_path)) if isinstance(model_or_path, (str, Path)) else model_or_path.clone()
    except Exception as e:
        raise UserError(f"OpenVINO cannot read {model_or_path}: {first_line(e, 200)}") from e
    head = model.outputs[0].get_any_name()
    order = []
    for op in model.get_ordered_ops():
        for o in op.outputs():
            order += [n for n in o.get_names() if BOUNDARY.match(n) and n != HEAD]
    order = list(dict.fromkeys(order))
    if order:
        model.add_outputs(order)
    cfg = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY", **(config or {})}
    if threads:
        cfg["INFERENCE_NUM_THREADS"] = int(threads)
    try:
        compiled = core.compile_model(model, "CPU", cfg)
    except Exception as e:
        raise UserError(f"OpenVINO cannot compile the model: {first_line(e, 200)}") from e
    req = compiled.create_infer_request()
    ports = []
    for p in compiled.outputs:
        names = p.get_names()
        name = HEAD if head in names else next((n for n in names if BOUNDARY.match(n)), p.get_any_name())
        ports.append((name, p))
    ps = compiled.inputs[0].get_partial_shape()
    batch = ps[0].get_length() if ps[0].is_static else None

    def run(chunk):
        res = req.infer({0: chunk})
        return {name: np.array(res[p]) for name, p in ports}

    return (lambda x: _stack(_padded(run, x, batch))), order + [HEAD]


# ---------------------------------------------------------------- opening a side

def _prep_from_onnx(path: Path) -> Preprocessing | None:
    import onnx

    try:
        meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    except Exception:
        return None
    demo = _is_demo_sha(meta.get("checkpoint_sha256"))
    try:  # the architecture the export wrote (ArchSpec.to_json): its preprocessing
        spec = ArchSpec.from_json(meta["architecture"])
        return Preprocessing(spec.img_size, tuple(spec.mean), tuple(spec.std), float(spec.crop_ratio), demo=demo,
                             labels=list(spec.labels) if spec.labels else None, source=f"{path.name} metadata")
    except Exception:
        pass
    try:  # an ONNX without (a readable) architecture: the separate preprocessing keys
        size = int(meta["img_size"])
        mean, std = tuple(json.loads(meta["mean"])), tuple(json.loads(meta["std"]))
    except Exception:
        return None
    labels = json.loads(meta["labels"]) if meta.get("labels") else None
    return Preprocessing(size, mean, std, float(meta.get("crop_ratio", 0.875)), demo=demo, labels=labels,
                         source=f"{path.name} metadata")


def _is_demo_sha(sha: str | None) -> bool:
    if not sha:
        return False
    from partialdeploy import demo
    from partialdeploy.checkpoint import sha256_of

    return sha == sha256_of(demo.DEMO_CKPT)


def _prep_from_manifest(man: dict, where: str) -> Preprocessing | None:
    p = man.get("preprocessing") or {}
    try:
        size = int(p["size"][0])
    except (KeyError, TypeError, IndexError, ValueError):
        return None
    mdl = man.get("model") or {}
    rs = p.get("resize_shorter_side_to") or round(size / 0.875)
    return Preprocessing(size, tuple(p.get("mean", IMAGENET_MEAN)), tuple(p.get("std", IMAGENET_STD)),
                         size / float(rs), demo=_is_demo_sha(mdl.get("checkpoint_sha256")),
                         labels=mdl.get("labels"), source=f"{where}")


def _find_manifest(path: Path) -> tuple[dict, Path] | None:
    from partialdeploy.verify import load_manifest

    for d in list(path.resolve().parents)[:4]:
        mp = d / "manifest.json"
        if mp.is_file():
            return load_manifest(mp), d
    return None


def _pick_artifact(man: dict, root: Path, target: str | None, precision: str | None, label: str) -> ManifestEntry:
    from partialdeploy.verify import entries

    every = entries(man)
    arts = [a for a in every if (target is None or a.target == target)
            and (precision is None or a.precision == precision)]
    runnable = [a for a in arts if a.target in ("onnx", "onnxruntime", "openvino", "tensorrt")]
    if not arts:
        have = ", ".join(f"{a.target}/{a.precision}" for a in every) or "none"
        raise UserError(f"{label}: no artifact for --target {target or '*'} --precision {precision or '*'} in "
                        f"{root} (it has: {have})")
    if not runnable:
        raise UserError(f"{label}: {arts[0].target} artifacts cannot run here (CoreML needs macOS); "
                        "pick an onnx, onnxruntime, openvino or tensorrt artifact")
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
        mp = p / "manifest.json"
        if not mp.is_file():
            raise UserError(f"{label} {p} is a directory without manifest.json: pass an export directory, "
                            "a checkpoint, an .onnx or an .xml")
        from partialdeploy.verify import load_manifest, verify_artifact

        man = load_manifest(mp)
        art = _pick_artifact(man, p, target, precision, label)
        apath = verify_artifact(p, art)  # inside the export dir, sha256 of every file (#12)
        if art.target == "tensorrt":
            apath = apath / "model.onnx"  # the bundle's TensorRT-ready ONNX runs in ONNX Runtime here
        side = _open_file(apath, threads, label, config=art.extra.get("runtime_config"))
        side.label = f"{arg} ({art.target}/{art.precision})"
        side.precision = art.precision
        side.prep = _prep_from_manifest(man, f"{mp}") or side.prep
        return side
    return _open_file(p, threads, label, variant=variant)


def _open_file(p: Path, threads, label: str, config: dict | None = None, variant: str | None = None) -> Side:
    suf = p.suffix.lower()
    if suf in (".onnx", ".xml"):
        from partialdeploy.verify import verify_inside_export

        verify_inside_export(p)  # a file of an export directory is checked against its manifest (#12)
    if suf == ".onnx":
        from partialdeploy.onnxfile import check_external_data

        check_external_data(p)
    if suf == ".onnx":
        from partialdeploy.lazy import installed

        if not installed("onnxruntime", "onnx"):
            raise UserError("diff on ONNX needs onnxruntime: pip install 'partialdeploy[onnxruntime]'")
        collect, bounds = ort_collector(p, threads)
        prec = "int8" if _has_qdq(p) else "fp32"
        return Side(str(p), "ONNX Runtime", prec, collect, bounds, _prep_from_onnx(p))
    if suf == ".xml":
        from partialdeploy.lazy import installed

        if not installed("openvino"):
            raise UserError("diff on an OpenVINO IR needs openvino: pip install 'partialdeploy[openvino]'")
        found = _find_manifest(p)
        prep, prec = None, None
        if found:
            man, root = found
            prep = _prep_from_manifest(man, str(root / "manifest.json"))
            from partialdeploy.verify import entries

            for a in entries(man):
                if (root / a.path).resolve() == p.resolve():
                    prec = a.precision
                    config = config or a.extra.get("runtime_config")
        collect, bounds = ov_collector(p, threads, config)
        if prec is None:
            prec = "int8" if "FakeQuantize" in p.read_text(errors="replace") else "fp32"
        return Side(str(p), "OpenVINO", prec, collect, bounds, prep)
    if suf in CKPT_SUFFIXES:
        from partialdeploy import demo
        from partialdeploy.checkpoint import load_checkpoint, load_model, resolve_spec

        ckpt = load_checkpoint(p)
        spec, _ = resolve_spec(ckpt, variant=variant)
        model = load_model(ckpt, spec)
        collect, bounds = torch_collector(model)
        prep = Preprocessing(spec.img_size, tuple(spec.mean), tuple(spec.std), spec.crop_ratio,
                             demo=demo.is_demo(ckpt.metadata), labels=list(spec.labels) if spec.labels else None,
                             source=f"{p.name} ({spec.name})")
        return Side(str(p), "train form (PyTorch)", "fp32", collect, bounds, prep)
    raise UserError(f"{label} {p}: cannot tell what it is from '{suf}'; pass a checkpoint "
                    f"({', '.join(sorted(CKPT_SUFFIXES))}), an .onnx, an OpenVINO .xml or an export directory")


def _has_qdq(p: Path) -> bool:
    import onnx

    m = onnx.load(str(p), load_external_data=False)
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node)


# ---------------------------------------------------------------- images and the whole diff

def diff_images(prep: Preprocessing, images: Path | None, count: int) -> tuple[np.ndarray, str]:
    from partialdeploy.images import load_image_folder, natural_batch

    if images is not None:
        x = load_image_folder(images, prep.size, prep.mean, prep.std, limit=count, crop_ratio=prep.crop_ratio)
        return x, f"{len(x)} images from {images}"
    if prep.demo:
        from partialdeploy import demo

        d = np.load(demo.DEMO_EVAL)
        from partialdeploy.images import preprocess

        x = np.stack([preprocess(im, prep.size, prep.mean, prep.std, prep.crop_ratio) for im in d["images"][:count]])
        return x.astype(np.float32), f"{len(x)} held-out demo digits"
    return natural_batch(prep.size, prep.mean, prep.std, n=count), f"{count} crops of real photographs"


def run_diff(ref_arg, cand_arg, images: Path | None = None, count: int = 16, target: str | None = None,
             precision: str | None = None, ref_target: str | None = None, ref_precision: str | None = None,
             cosine_min: float | None = None, rel_max: float | None = None, top1_min: float | None = None,
             threads: int | None = None, variant: str | None = None) -> DiffResult:
    if count < 1:
        raise UserError("--count must be ≥ 1")
    if images is not None and not Path(images).is_dir():
        raise UserError(f"--images {images} is not a folder: pass a folder of images")
    ref = open_side(ref_arg, ref_target or target, ref_precision, threads, "REF", variant)
    cand = open_side(cand_arg, target, precision, threads, "CAND", variant)
    notes = ref.notes + cand.notes
    prep = ref.prep or cand.prep
    if prep is None:
        raise UserError("cannot tell the input size and normalisation of either side: pass a checkpoint or "
                        "an artifact inside its export directory (manifest.json) as REF")
    if ref.prep and cand.prep and ref.prep.size != cand.prep.size:
        raise UserError(f"REF takes {ref.prep.size}² inputs, CAND {cand.prep.size}²: compare models of the "
                        "same input size")
    x, src = diff_images(prep, images, count)
    tol = dict(TOLERANCES.get(cand.precision or "fp32", TOLERANCES["fp32"]))
    for k, v in (("cosine_min", cosine_min), ("rel_max", rel_max), ("top1_min", top1_min)):
        if v is not None:
            tol[k] = float(v)
    r, c = ref.collect(x), cand.collect(x)
    order = [b for b in ref.boundaries if b in c] if HEAD in c else []
    blocks, top1, first = compare_boundaries(r, c, order, tol)
    missing = {"ref": [b for b in cand.boundaries if b not in r], "cand": [b for b in ref.boundaries if b not in c]}
    if missing["cand"] and len(blocks) <= 1:
        notes.append("CAND exposes no block boundaries (exported before official block names?): only the "
                     "logits are compared; re-export to see per-block numbers")
    return DiffResult(ref.describe(), cand.describe(), len(x), src, tol, blocks, top1, first, missing, notes)
