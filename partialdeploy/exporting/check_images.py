"""Which images the parity gates judge on: the user's own where they exist.

In order: ``--check-images DIR`` (the user's unlabelled images); else, when ``--calib DIR`` is given,
a seeded part of it **held out** of calibration (the quantizer never sees it); else the demo's
held-out digits for the demo; else, as a named fallback, crops of the sample photographs that ship
with scikit-learn / scikit-image. What was used is recorded in the manifest (``check_images``: where
from, how many, which files, their sha256) and said in the output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from partialdeploy.errors import UserError

HOLDOUT_FRACTION = 5  # one image in five of --calib is held out for checking ...
HOLDOUT_MIN = 16  # ... when that gives at least this many (else the fallback, named)
MAX_CHECK = 64  # at most this many of the user's images are checked on
STOCK = "sample photographs shipped with scikit-learn/scikit-image"


@dataclass
class CheckImages:
    x: np.ndarray  # (N,3,H,W) preprocessed
    source: str  # one phrase: where the images come from
    record: dict  # stored in the manifest (its "described" is ``source``)
    calib_files: list[Path] | None = None  # what is left of --calib for calibration (None: all of it)
    notes: list[str] = field(default_factory=list)
    files: list[Path] | None = None  # the user's image files behind ``x``, in order

    def __post_init__(self):
        self.record["described"] = self.source

    def raw_samples(self, n: int = 8) -> list[np.ndarray]:
        """The first ``n`` check images as decoded (uint8), before preprocessing: what ``x[:n]`` was made
        from (a TensorRT bundle carries them for its device example to reproduce the reference)."""
        from partialdeploy import demo
        from partialdeploy.images import natural_raw, open_image_bounded

        kind = self.record.get("source")
        if self.files is not None:
            return [open_image_bounded(f) for f in self.files[:n]]
        if kind == "demo held-out digits":
            return demo.eval_raw(min(n, len(self.x)))
        return natural_raw(min(n, len(self.x)))


def _user_images(files: list[Path], root: Path, spec, source: str, kind: str) -> CheckImages:
    from partialdeploy.images import files_digest, load_image_files

    skipped: list = []
    x, used = load_image_files(files, spec.img_size, spec.mean, spec.std, spec.crop_ratio, limit=MAX_CHECK,
                               skipped=skipped)
    if not len(x):
        raise UserError(f"none of the {len(files)} image(s) in {root} can be read (corrupt or too large): "
                        "give a folder with readable images")
    rec = {"source": kind, "dir": str(root), "count": len(used),
           "files": [f.relative_to(root).as_posix() for f in used], "sha256": files_digest(used, root)}
    return CheckImages(x, source, rec, files=list(used))


def require_folder(check_dir: Path) -> None:
    """``--check-images`` must name a folder (checked before any work, and again when choosing)."""
    if not Path(check_dir).is_dir():
        raise UserError(f"--check-images {check_dir} is not a folder: pass a folder of your own images "
                        "(unlabelled; not the calibration images)")


def choose(spec, *, check_dir: Path | None, calib_dir: Path | None, user_calib: bool, is_demo: bool,
           demo_x: np.ndarray | None, stock_n: int, seed: int = 0) -> CheckImages:
    """The check images of one export (see the module doc)."""
    from partialdeploy.images import image_files, natural_batch, seeded_subset

    if check_dir is not None:
        require_folder(check_dir)
        files = image_files(check_dir)
        if not files:
            raise UserError(f"--check-images {check_dir} holds no images (.jpg, .png, ...)")
        ci = _user_images(seeded_subset(files, MAX_CHECK, seed), Path(check_dir), spec,
                          f"your images (--check-images {check_dir})", "--check-images")
        if len(ci.x) < HOLDOUT_MIN:
            ci.notes.append(f"only {len(ci.x)} check image(s) in {check_dir}: the INT8 agreement gate needs "
                            f"about {HOLDOUT_MIN} or more to mean something")
        return ci
    if calib_dir is not None and user_calib:
        files = image_files(calib_dir)
        n_hold = min(MAX_CHECK, len(files) // HOLDOUT_FRACTION)
        if n_hold >= HOLDOUT_MIN:
            order = seeded_subset(files, 0, seed + 1)  # another draw than the calibration subset's
            held, rest = sorted(order[:n_hold]), sorted(order[n_hold:])
            ci = _user_images(held, Path(calib_dir), spec,
                              f"{n_hold} of your --calib images held out of calibration", "held out of --calib")
            ci.calib_files = rest
            return ci
        note = (f"--calib {calib_dir} has {len(files)} image(s), too few to hold {HOLDOUT_MIN} out for checking "
                f"(one in {HOLDOUT_FRACTION}): ")
    elif is_demo and demo_x is not None:
        x = demo_x
        return CheckImages(x, f"{len(x)} held-out demo digits", {"source": "demo held-out digits", "count": len(x)})
    else:
        note = ""
    x = natural_batch(spec.img_size, spec.mean, spec.std, n=stock_n, crop_ratio=spec.crop_ratio)
    ci = CheckImages(x, f"{len(x)} crops of the {STOCK} (fallback)",
                     {"source": "stock photographs (fallback)", "count": len(x)})
    ci.notes.append(note + f"parity is checked on {len(x)} crops of the {STOCK}, not on your images: "
                    "pass --check-images DIR (or --calib DIR with 80+ images) to check on your own")
    return ci
