"""Resource budget, checked before any work: what an export at the requested size, batch and targets
needs in memory and on disk, against what this machine has. An export that cannot fit is refused at
once (exit 2) with the estimate and what to change, instead of being killed by the kernel's OOM
killer minutes later or filling the disk.

The estimate is deliberately simple and on the high side (no torch needed):

* weights: the parameters plus the constants the family's deploy form bakes in (``Family.memory``:
  e.g. the PAT_sf blocks' attention bias, heads × L × L with L = (size/32)², one per block), held
  about five times at once (train form, deploy form, ONNX in memory, a runtime session, a converter);
* activations: per image, what the family says is alive at its widest point (``Family.memory``:
  e.g. PartialNet embed_dim × (size/4)² × (mlp_ratio + 3) plus attention scores; each family
  knows its own), plus the input, for the largest batch run at once (PyTorch runs the gate 8
  images at a time);
* images: parity, calibration and held-out images as float32 (3 × size²), twice (the list of
  preprocessed images and the stacked batch), plus 1 GiB for the interpreter and the runtimes' code;
* disk: the artifacts (ONNX once in staging, once per target; the TensorRT bundle also stores the
  parity/calibration inputs as .npy).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from partialdeploy.errors import UserError

GiB = 1 << 30
BASE_BYTES = 1 * GiB
TORCH_GATE_BATCH = 8
MODEL_COPIES = 5


@dataclass
class Estimate:
    memory: int
    disk: int
    weights: int
    activations: int
    images: int

    def to_dict(self) -> dict:
        return dict(vars(self))


def human(n: float) -> str:
    for unit, div in (("PiB", 1 << 50), ("TiB", 1 << 40), ("GiB", GiB), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div:
            return f"{n / div:.1f} {unit}"
    return f"{int(n)} B"


def estimate(spec, n_params: int, img_size: int, batch: int = 1, targets=("onnx",), precision: str = "fp32",
             parity_images: int = 16, calib_images: int = 0, eval_images: int = 0) -> Estimate:
    from partialdeploy import backends, families

    s = int(img_size)
    need = families.get(spec.family).memory(spec, s)
    weights = 4 * int(n_params) + int(need.constants)
    per_image = int(need.per_image) + 4 * 3 * s * s
    run_batch = max(int(batch), TORCH_GATE_BATCH)
    activations = int(per_image * run_batch)
    n_img = int(parity_images) + int(calib_images) + int(eval_images)
    images = 2 * 4 * 3 * s * s * n_img  # each image twice at the peak: the list and the stacked batch
    memory = BASE_BYTES + MODEL_COPIES * weights + activations + images
    n_targets = len(tuple(targets))
    disk = weights * (1 + n_targets)
    if any(backends.get_target(t).carries_images for t in targets):  # e.g. a TensorRT bundle
        disk += 4 * 3 * s * s * (int(parity_images) + int(calib_images))
    if precision == "fp16":
        disk -= weights * n_targets // 2
    return Estimate(memory=int(memory), disk=int(max(disk, 0)), weights=int(weights), activations=activations,
                    images=int(images))


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            v = f.read().strip()
        return None if v in ("", "max") else int(v)
    except (OSError, ValueError):
        return None


def available_memory() -> int | None:
    """Bytes this process may still use: MemAvailable, lowered by a cgroup (container) limit."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    limit = _read_int("/sys/fs/cgroup/memory.max")
    if limit is not None:
        used = _read_int("/sys/fs/cgroup/memory.current") or 0
        avail = min(avail, limit - used) if avail is not None else limit - used
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return max(int(avail), 0)


def available_disk(path: Path) -> int | None:
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    try:
        return int(shutil.disk_usage(p).free)
    except OSError:
        return None


def check(spec, n_params: int, img_size: int, batch: int, targets, precision: str, out_dir: Path,
          parity_images: int = 16, calib_images: int = 0, eval_images: int = 0) -> Estimate:
    """Raise UserError when the export cannot fit in this machine's free memory or disk."""
    kw = dict(targets=tuple(targets), precision=precision, parity_images=parity_images,
              calib_images=calib_images, eval_images=eval_images)
    est = estimate(spec, n_params, img_size, batch, **kw)
    mem, disk = available_memory(), available_disk(out_dir)
    what = f"--img-size {img_size}, batch {batch}, {len(tuple(targets))} target(s)"
    if mem is not None and est.memory > mem:
        fix = _largest_fitting(spec, n_params, img_size, batch, mem, kw)
        raise UserError(f"an export at {what} needs about {human(est.memory)} of memory (weights "
                        f"{human(est.weights)}, activations {human(est.activations)}, images {human(est.images)}); "
                        f"this machine has {human(mem)} available: {fix}")
    if disk is not None and est.disk > disk:
        raise UserError(f"an export at {what} needs about {human(est.disk)} of disk; {out_dir} has "
                        f"{human(disk)} free: free space, choose another --output, fewer targets or a smaller "
                        "--img-size")
    return est


def _largest_fitting(spec, n_params, img_size, batch, mem, kw) -> str:
    if batch > 1 and estimate(spec, n_params, img_size, 1, **kw).memory <= mem:
        return "use a smaller --batch (or --dynamic-batch)"
    lo, hi = 1, max(1, int(img_size) // 32)  # in units of 32 px
    if estimate(spec, n_params, 32, 1, **kw).memory > mem:
        return "free memory or use a machine with more"
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if estimate(spec, n_params, 32 * mid, 1, **kw).memory <= mem:
            lo = mid
        else:
            hi = mid - 1
    return f"use --img-size {32 * lo} or less" + (" and --batch 1" if batch > 1 else "")
