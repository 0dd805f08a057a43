"""``partialdeploy diff REF CAND``: run two models on the same real images with every block boundary
exposed (the family's: for PartialNet patch_embed, each ``stages.N.blocks.M``, each merging layer
``stages.N``, head; for ECA-ResNet stem, ``layerN.M``, head; ...) and name the first block whose
output leaves the tolerance.

A side is a checkpoint (train form), a model file of any runtime with boundary taps (by suffix:
``.onnx``, ``.xml``, ...) or an export directory (``manifest.json``; the artifact picked by
target/precision and checked against its sha256), opened by :mod:`partialdeploy.analysis.sides`:
this module knows no runtime. The boundary tensors carry the official block names (see
:mod:`partialdeploy.analysis.blocknames`), so the same names are found in every artifact derived
from our ONNX.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np

from partialdeploy import parity
from partialdeploy.analysis.blocknames import HEAD
from partialdeploy.analysis.sides import Preprocessing, open_side
from partialdeploy.errors import UserError

_TOL_FIELDS = {f.name for f in fields(parity.Tolerance)}


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
    gate: object = None  # parity.ParityResult of the logits under the export gate's tolerance
    strict: bool = False  # told stricter (--cosine-min/--rel-max/--top1-min): every block decides
    float_blocks: list[str] = field(default_factory=list)

    @property
    def agree(self) -> bool:
        """Every block within the per-block tolerance, or — unless told stricter — the logits within the
        tolerance CAND's export gate passed (one tolerance source, parity.py): diff never fails what the
        export certified; the per-block tolerance then only locates where the two drift."""
        blocks_agree = self.first_divergent is None and self.top1_agreement >= self.tolerance["top1_min"]
        if self.strict or self.gate is None:
            return blocks_agree
        return blocks_agree or self.gate.passed

    @property
    def exit_code(self) -> int:
        return 0 if self.agree else 1

    def to_dict(self) -> dict:
        return {"agree": self.agree, "first_divergent": self.first_divergent,
                "top1_agreement": self.top1_agreement, "images": self.images, "image_source": self.image_source,
                "tolerance": self.tolerance, "ref": self.ref, "cand": self.cand,
                "blocks": [b.to_dict() for b in self.blocks], "missing": self.missing, "notes": self.notes,
                "gate": self.gate.to_dict() if self.gate is not None else None, "strict": self.strict,
                "float_blocks": self.float_blocks}


# ---------------------------------------------------------------- comparing boundary outputs

def compare_block(name: str, ref: np.ndarray, out: np.ndarray, tol: dict) -> BlockDiff:
    if ref.shape != out.shape:
        raise UserError(f"block {name}: output shape {list(out.shape)} differs from the reference's "
                        f"{list(ref.shape)}; REF and CAND are different architectures or input sizes")
    if not np.all(np.isfinite(out)):
        return BlockDiff(name, list(ref.shape[1:]), -1.0, -1.0, float("inf"), float("inf"), False)
    cos = parity.cosines(ref, out)
    max_abs, rel = parity.max_abs_rel(ref, out)
    within = float(cos.min()) >= tol["cosine_min"] and rel <= tol["rel_max"]
    return BlockDiff(name, list(ref.shape[1:]), float(cos.min()), float(cos.mean()), max_abs, rel, within)


def compare_boundaries(ref: dict, cand: dict, order: list[str], tol: dict) -> tuple[list[BlockDiff], float, str | None]:
    """Per-block diffs in ``order`` (names present in both), top-1 agreement of the head, first divergent."""
    blocks = [compare_block(b, ref[b], cand[b], tol) for b in order if b in ref and b in cand]
    first = next((b.block for b in blocks if not b.within), None)
    return blocks, parity.top1_agreement(ref[HEAD], cand[HEAD]), first


# ---------------------------------------------------------------- images and the whole diff

def _checked_on(rec: dict | None, notes: list) -> list[Path] | None:
    """The user's files an export's gates judged on (``check_images`` with a folder), when they are
    still there unchanged; else None, with a note saying why they are not used."""
    from partialdeploy.images import files_digest

    if not rec or not isinstance(rec.get("dir"), str) or not isinstance(rec.get("files"), list):
        return None
    root = Path(rec["dir"])
    try:
        base = root.resolve(strict=True)
        files = [root / str(f) for f in rec["files"]]
        inside = all(f.resolve(strict=True).is_relative_to(base) for f in files)
        same = inside and files_digest(files, root) == rec.get("sha256")
    except (OSError, ValueError):
        same = False
    if not same:
        notes.append(f"the export was checked on {len(rec['files'])} images in {root}, which are gone or have "
                     "changed since: diffing on the default images instead (pass --images DIR)")
        return None
    return files


def diff_images(prep: Preprocessing, images: Path | None, count: int,
                notes: list | None = None) -> tuple[np.ndarray, str]:
    """``--images``, else the images the export was checked on (its manifest), else the demo's digits
    for the demo, else crops of stock photographs."""
    from partialdeploy.images import load_image_files, load_image_folder, natural_batch

    if images is not None:
        x = load_image_folder(images, prep.size, prep.mean, prep.std, limit=count, crop_ratio=prep.crop_ratio)
        return x, f"{len(x)} images from {images}"
    files = _checked_on(prep.check, notes if notes is not None else [])
    if files:
        x, used = load_image_files(files, prep.size, prep.mean, prep.std, prep.crop_ratio, limit=count)
        if len(x):
            return x, f"{len(x)} of the images the export was checked on ({prep.check['dir']})"
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
    if prep.check is None:  # an export's own check images, whichever side is the export
        from dataclasses import replace

        prep = replace(prep, check=next((sd.prep.check for sd in (cand, ref) if sd.prep and sd.prep.check), None))
    x, src = diff_images(prep, images, count, notes)
    tol = parity.block_tolerance(cand.precision)  # per block, by the candidate's precision (parity.TOLERANCES)
    for k, v in (("cosine_min", cosine_min), ("rel_max", rel_max), ("top1_min", top1_min)):
        if v is not None:
            tol[k] = float(v)
    r, c = ref.collect(x), cand.collect(x)
    order = [b for b in ref.boundaries if b in c] if HEAD in c else []
    blocks, top1, first = compare_boundaries(r, c, order, tol)
    # the verdict: the logits under the tolerance CAND's export gate passed (its manifest, else the
    # precision's default in parity.py) — the same source as the certificate
    cert = cand.certificate or asdict(parity.DEFAULT_TOLERANCES.get(cand.precision or "fp32",
                                                                    parity.DEFAULT_TOLERANCES["fp32"]))
    gate = parity.check(parity.compare(r[HEAD], c[HEAD], "REF -> CAND logits"),
                        parity.Tolerance(**{k: v for k, v in cert.items() if k in _TOL_FIELDS}))
    missing = {"ref": [b for b in cand.boundaries if b not in r], "cand": [b for b in ref.boundaries if b not in c]}
    if missing["cand"] and len(blocks) <= 1:
        notes.append("CAND exposes no block boundaries (exported before official block names?): only the "
                     "logits are compared; re-export to see per-block numbers")
    strict = any(v is not None for v in (cosine_min, rel_max, top1_min))
    return DiffResult(ref.describe(), cand.describe(), len(x), src, tol, blocks, top1, first, missing, notes,
                      gate, strict, cand.float_blocks)
