"""Real images for parity, calibration and evaluation, and the preprocessing contract.

Preprocessing (recorded in every manifest): RGB, resize shorter side to size/crop_ratio (bicubic),
centre crop size×size, scale to [0,1], subtract mean, divide by std, NCHW float32.
No torch here: profiling and the TensorRT build run where torch is absent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from partialdeploy.errors import UserError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


def preprocess(img: np.ndarray, size: int, mean, std, crop_ratio: float = 0.875) -> np.ndarray:
    """uint8 HWC (RGB or grey) -> float32 CHW. The code is the TensorRT bundle's device example's
    (``bundle_infer.preprocess_image``, copied into every bundle as infer.py): one preprocessing path."""
    from partialdeploy.backends.tensorrt.bundle_infer import preprocess_image

    return preprocess_image(img, size, resize_shorter_side(size, crop_ratio), mean, std)


def resize_shorter_side(size: int, crop_ratio: float = 0.875) -> int:
    """What the shorter side is resized to before the centre crop."""
    return max(size, int(round(size / crop_ratio)))


def preprocessing_record(spec) -> dict:
    """The preprocessing contract of a model (ArchSpec), as manifests and TensorRT bundles record it and
    the bundle's device example (infer.py) reads it."""
    size = int(spec.img_size)
    return {"mean": list(spec.mean), "std": list(spec.std), "size": [size, size],
            "resize_shorter_side_to": resize_shorter_side(size, spec.crop_ratio), "crop": "center",
            "interpolation": "bicubic", "scale": "1/255", "layout": "NCHW", "color": "RGB", "dtype": "float32"}


MAX_PIXELS = 64_000_000  # per image (a 12-megapixel photo is 12 M); larger ones are skipped as bombs


def open_image_bounded(f: Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode one image as uint8 RGB, refusing decompression bombs from the header (before any pixel is
    decoded) and corrupt files. Raises ValueError with a short reason."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as im:
                w, h = im.size
                if w * h > max_pixels or w < 1 or h < 1:
                    raise ValueError(f"{w}×{h} pixels (limit {max_pixels // 1_000_000} M): a decompression bomb "
                                     "or not a photo")
                return np.asarray(im.convert("RGB"))
    except ValueError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ValueError(f"decompression bomb ({str(e)[:80]})") from None
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, MemoryError, TypeError, IndexError) as e:
        raise ValueError(f"unreadable ({type(e).__name__}: {str(e)[:80]})") from None


def image_files(path: str | Path) -> list[Path]:
    """Image files under a folder (recursively), sorted by path."""
    return sorted(f for f in Path(path).rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())


def load_image_files(files, size: int, mean, std, crop_ratio: float = 0.875, limit: int | None = None,
                     skipped: list | None = None) -> tuple[np.ndarray, list[Path]]:
    """Preprocess ``files`` (at most ``limit`` usable ones) -> ((N,3,size,size) float32, files used).
    Corrupt images and decompression bombs are skipped; ``skipped`` receives ``(file, reason)``."""
    out, used = [], []
    for f in files:
        if limit and len(out) >= limit:
            break
        try:
            out.append(preprocess(open_image_bounded(f), size, mean, std, crop_ratio))
            used.append(f)
        except ValueError as e:
            if skipped is not None:
                skipped.append((f, str(e)))
    return (np.stack(out) if out else np.zeros((0, 3, size, size), np.float32)), used


def calib_folder_error(path) -> str:
    """What is wrong with a ``--calib`` that is not a folder, in one line."""
    p = Path(path)
    if p.exists():
        return (f"--calib takes a folder of images, and {path} is a file: put the calibration images "
                "(100-500 representative ones) in a folder and pass that folder")
    return f"calibration folder {path} does not exist: pass --calib DIR with images in it"


def load_image_folder(path: str | Path, size: int, mean, std, limit: int | None = None,
                      crop_ratio: float = 0.875, skipped: list | None = None) -> np.ndarray:
    """Images in a folder (recursively, sorted) -> (N,3,size,size) float32, at most ``limit``.
    Corrupt images and decompression bombs are skipped; ``skipped`` (if given) receives
    ``(file, reason)`` for each. No usable image at all is a UserError."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(calib_folder_error(path))
    files = image_files(p)
    if not files:
        raise UserError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {path}: put calibration images there")
    bad: list = []
    x, _ = load_image_files(files, size, mean, std, crop_ratio, limit, bad)
    if skipped is not None:
        skipped.extend(bad)
    if not len(x):
        first = f"{bad[0][0].name}: {bad[0][1]}" if bad else ""
        raise UserError(f"no usable image in {path} ({len(bad)} unreadable or too large, e.g. {first}): "
                        "put real calibration images there")
    return x


def seeded_subset(files: list[Path], count: int, seed: int = 0) -> list[Path]:
    """``count`` files drawn without replacement with a fixed seed (all of them, shuffled, when fewer):
    the same folder and seed always give the same calibration set."""
    order = np.random.default_rng(seed).permutation(len(files))
    return [files[i] for i in order[:count]] if count else [files[i] for i in order]


def files_digest(files, root: Path) -> str:
    """sha256 over the files' paths (relative to ``root``) and contents, in order."""
    import hashlib

    h = hashlib.sha256()
    for f in files:
        h.update(Path(f).relative_to(root).as_posix().encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def load_labelled_folder(path: str | Path, size: int, mean, std, crop_ratio: float = 0.875,
                         labels=None, skipped: list | None = None) -> tuple[np.ndarray, np.ndarray, list[str], list]:
    """An ImageFolder layout (one sub-folder per class) -> (images, class indices, class names, files).
    The class order is ``labels`` (the checkpoint's) when given — every sub-folder must name one of
    them — else the sorted sub-folder names (torchvision's convention)."""
    p = Path(path)
    if not p.is_dir():
        raise UserError(f"--eval {path} is not a folder: pass a folder with one sub-folder of images per class")
    classes = sorted(d.name for d in p.iterdir() if d.is_dir() and image_files(d))
    if not classes:
        raise UserError(f"--eval {path} has no class sub-folders with images: use the ImageFolder layout "
                        "(DIR/<class>/<image>)")
    if labels:
        index = {str(name): i for i, name in enumerate(labels)}
        unknown = [c for c in classes if c not in index]
        if unknown:
            raise UserError(f"--eval {path}: sub-folder(s) {', '.join(unknown[:5])} are not among the checkpoint's "
                            f"{len(index)} labels (e.g. {', '.join(list(index)[:5])}): name the folders after them")
        order = list(labels)
    else:
        index = {c: i for i, c in enumerate(classes)}
        order = classes
    xs, ys, used_all = [], [], []
    for c in classes:
        x, used = load_image_files(image_files(p / c), size, mean, std, crop_ratio, skipped=skipped)
        xs.append(x)
        ys += [index[c]] * len(x)
        used_all += used
    x = np.concatenate(xs, 0)
    if not len(x):
        raise UserError(f"--eval {path}: no usable image in any class folder")
    return x, np.asarray(ys, np.int64), [str(o) for o in order], used_all


def natural_images() -> list[np.ndarray]:
    """Real photographs that ship inside installed packages (no download): scikit-learn's sample
    images and scikit-image's bundled data. uint8 HWC RGB."""
    imgs = []
    try:
        from sklearn.datasets import load_sample_images

        imgs += list(load_sample_images().images)
    except Exception:
        pass
    try:
        from skimage import data

        for name in ("astronaut", "coffee", "chelsea", "rocket", "cat", "retina", "immunohistochemistry"):
            try:
                imgs.append(np.asarray(getattr(data, name)()))
            except Exception:
                continue
    except Exception:
        pass
    if not imgs:
        raise UserError("no real sample images available: pip install scikit-learn scikit-image, "
                        "or pass --calib DIR")
    return imgs


def natural_raw(n: int = 16, seed: int = 0) -> list[np.ndarray]:
    """n real photographs as decoded (uint8 HWC RGB): several random crops/flips per photo when n is
    larger than the number of photos. What :func:`natural_batch` preprocesses."""
    base = natural_images()
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        img = base[i % len(base)]
        if i >= len(base):  # a different random crop + flip of the same photo
            h, w = img.shape[:2]
            ch, cw = int(h * rng.uniform(0.5, 0.9)), int(w * rng.uniform(0.5, 0.9))
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            img = img[y:y + ch, x:x + cw]
            if rng.random() < 0.5:
                img = img[:, ::-1]
        out.append(np.ascontiguousarray(img))
    return out


def natural_batch(size: int, mean, std, n: int = 16, seed: int = 0, crop_ratio: float = 0.875) -> np.ndarray:
    """n preprocessed crops of real photographs (:func:`natural_raw`)."""
    return np.stack([preprocess(img, size, mean, std, crop_ratio) for img in natural_raw(n, seed)]).astype(np.float32)
