"""The bundled demo checkpoint: a small PartialNet (every block type: PAT_ch, PAT_sp, PAT_sf with
iRPE) trained by ``scripts/train_demo.py`` on scikit-learn's handwritten digits, with its
calibration images and held-out test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA = Path(__file__).parent / "data"
DEMO_CKPT = DATA / "demo.safetensors"
DEMO_EVAL = DATA / "demo_eval.npz"
DEMO_CALIB = DATA / "calib"
EVAL_METADATA_KEY = "partialdeploy.eval"


def digits_to_uint8(img8: np.ndarray) -> np.ndarray:
    """sklearn digits are 8×8 floats in 0..16 -> uint8 grey."""
    return np.clip(np.asarray(img8, np.float64) * (255.0 / 16.0), 0, 255).round().astype(np.uint8)


def is_demo(metadata: dict) -> bool:
    return metadata.get(EVAL_METADATA_KEY) == "digits-test"


def eval_size() -> int:
    """Number of held-out test images (read without decoding them)."""
    with np.load(DEMO_EVAL) as d:
        return int(d["labels"].shape[0])


def eval_raw(n: int | None = None) -> list[np.ndarray]:
    """The first ``n`` held-out test images as stored (uint8 grey), before preprocessing."""
    with np.load(DEMO_EVAL) as d:
        return [np.asarray(im) for im in d["images"][:n]]


def eval_set(spec) -> tuple[np.ndarray, np.ndarray]:
    """Held-out real test images (preprocessed for ``spec``) and their labels."""
    from partialdeploy.images import preprocess

    d = np.load(DEMO_EVAL)
    x = np.stack([preprocess(im, spec.img_size, spec.mean, spec.std, spec.crop_ratio) for im in d["images"]])
    return x.astype(np.float32), d["labels"].astype(np.int64)
