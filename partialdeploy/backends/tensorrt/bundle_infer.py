#!/usr/bin/env python3
"""Run this bundle's model on images, on the device: numpy + TensorRT (+ cuda-python), no torch and no
partialdeploy needed (Python 3.8+, Pillow to read image files).

  python3 infer.py                        # the bundled sample images -> compare with the reference logits
  python3 infer.py photo.jpg more.png     # top-5 classes of your images
  python3 infer.py --runtime onnxruntime  # the same through ONNX Runtime on model.onnx (no GPU needed)

Everything it needs is read from bundle.json: the input name and shape, the preprocessing (resize, crop,
mean/std, colour order, layout), the labels and the parity tolerance. The runtime is swappable: an engine
is any callable from an (N, C, H, W) float32 array to the logits; ``TensorRTEngine`` runs model.engine
(built on the device by build_engine.sh or ``partialdeploy build-engine``), ``OnnxRuntimeEngine`` runs
model.onnx. The preprocessing here is the one partialdeploy itself uses (partialdeploy/images.py calls it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def to_rgb_uint8(img: np.ndarray) -> np.ndarray:
    """Grey / RGBA / float images -> uint8 HWC RGB (what the resize works on)."""
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.stack([img] * 3, -1)
    if img.shape[-1] == 4:
        img = img[..., :3]
    if img.dtype != np.uint8:
        img = np.clip(img * (255.0 if img.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img)


def preprocess_image(img: np.ndarray, size: int, resize_to: int, mean, std, color: str = "RGB") -> np.ndarray:
    """uint8 HWC RGB (or grey) -> float32 CHW: resize the shorter side to ``resize_to`` (bicubic), centre
    crop size x size, scale to [0, 1], subtract ``mean``, divide by ``std``; channels in ``color`` order."""
    from PIL import Image

    im = Image.fromarray(to_rgb_uint8(img))
    w, h = im.size
    s = resize_to / min(w, h)
    im = im.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    im = im.crop((left, top, left + size, top + size))
    x = np.asarray(im, dtype=np.float32) / 255.0
    if str(color).upper() == "BGR":
        x = x[..., ::-1]
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(bundle: dict, img: np.ndarray) -> np.ndarray:
    """One image, preprocessed as bundle.json's ``preprocessing`` says."""
    p = bundle["preprocessing"]
    if p.get("layout", "NCHW") != "NCHW":
        raise SystemExit(f"layout {p['layout']} is not handled by this example")
    return preprocess_image(img, int(p["size"][0]), int(p["resize_shorter_side_to"]), p["mean"], p["std"],
                            p.get("color", "RGB"))


def load_image(path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


class OnnxRuntimeEngine:
    """model.onnx in ONNX Runtime on CPU (pip install onnxruntime): the same model without a GPU."""

    name = "onnxruntime"

    def __init__(self, bundle_dir: Path, bundle: dict):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(Path(bundle_dir) / bundle["onnx"]), providers=["CPUExecutionProvider"])
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.batch = inp.shape[0] if isinstance(inp.shape[0], int) else None

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, np.float32)})[0]


def _cudart():
    try:
        from cuda.bindings import runtime as rt  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart as rt  # older cuda-python (JetPack 5: cuda-python 11.x)
    return rt


def _ok(ret):
    err, *vals = ret if isinstance(ret, tuple) else (ret,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return vals[0] if len(vals) == 1 else None


class TensorRTEngine:
    """model.engine through the TensorRT Python API (8.5, 8.6, 10, 11: the name-based tensor API) with
    device buffers from cuda-python. TensorRT comes with JetPack on a Jetson (python3-libnvinfer);
    cuda-python matching the device's CUDA: pip install cuda-python."""

    name = "tensorrt"

    def __init__(self, bundle_dir: Path, bundle: dict):
        import tensorrt as trt

        path = Path(bundle_dir) / bundle.get("engine", "model.engine")
        if not path.exists():
            raise SystemExit(f"{path} does not exist yet: build it on this device first (sh build_engine.sh)")
        self.trt, self.rt = trt, _cudart()
        self.runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self.runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise SystemExit(f"TensorRT {trt.__version__} cannot load {path}: rebuild it on this device")
        self.context = self.engine.create_execution_context()
        self.names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.inputs = [n for n in self.names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.outputs = [n for n in self.names if n not in self.inputs]
        b = self.engine.get_tensor_shape(self.inputs[0])[0]
        self.batch = int(b) if b >= 0 else None
        self.stream = _ok(self.rt.cudaStreamCreate())

    def __call__(self, x: np.ndarray) -> np.ndarray:
        rt, trt = self.rt, self.trt
        x = np.ascontiguousarray(x, np.float32)
        self.context.set_input_shape(self.inputs[0], x.shape)
        ptrs, outs = [], {}
        try:
            d_in = _ok(rt.cudaMalloc(x.nbytes))
            ptrs.append(d_in)
            self.context.set_tensor_address(self.inputs[0], d_in)
            _ok(rt.cudaMemcpy(d_in, x.ctypes.data, x.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice))
            for n in self.outputs:
                dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(n)))
                outs[n] = np.empty(tuple(self.context.get_tensor_shape(n)), dtype)
                ptrs.append(_ok(rt.cudaMalloc(max(1, outs[n].nbytes))))
                self.context.set_tensor_address(n, ptrs[-1])
            if not self.context.execute_async_v3(self.stream):
                raise RuntimeError("TensorRT execute_async_v3 failed")
            _ok(rt.cudaStreamSynchronize(self.stream))
            for n, p in zip(self.outputs, ptrs[1:]):
                _ok(rt.cudaMemcpy(outs[n].ctypes.data, p, outs[n].nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost))
        finally:
            for p in ptrs:
                rt.cudaFree(p)
        return outs[self.outputs[0]].astype(np.float32)


RUNTIMES = {"tensorrt": TensorRTEngine, "onnxruntime": OnnxRuntimeEngine}


def open_engine(bundle_dir: Path, bundle: dict, runtime: str = "auto"):
    """``runtime``: tensorrt, onnxruntime, or auto (TensorRT when it imports and model.engine exists,
    else ONNX Runtime on model.onnx)."""
    if runtime == "auto":
        try:
            import tensorrt  # noqa: F401

            have_trt = (Path(bundle_dir) / bundle.get("engine", "model.engine")).exists()
        except Exception:
            have_trt = False
        runtime = "tensorrt" if have_trt else "onnxruntime"
    if runtime not in RUNTIMES:
        raise SystemExit(f"--runtime must be auto, tensorrt or onnxruntime, not {runtime!r}")
    try:
        return RUNTIMES[runtime](bundle_dir, bundle)
    except ImportError as e:
        hint = ("TensorRT comes with JetPack on a Jetson (sudo apt install nvidia-jetpack), elsewhere pip install "
                "tensorrt; and pip install cuda-python" if runtime == "tensorrt" else "pip install onnxruntime")
        raise SystemExit(f"{runtime} is not importable here ({e}): {hint}") from None


def run(engine, x: np.ndarray, batch: int | None = None) -> np.ndarray:
    """Logits of ``x`` in chunks of the engine's batch (static: the last chunk padded)."""
    batch = batch or getattr(engine, "batch", None)
    if not batch:
        return engine(x)
    out = []
    for i in range(0, len(x), batch):
        chunk = x[i:i + batch]
        n = len(chunk)
        if n < batch:
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch - n, 0)])
        out.append(engine(chunk)[:n])
    return np.concatenate(out)


def compare(ref: np.ndarray, out: np.ndarray, tolerance: dict) -> dict:
    """The parity numbers partialdeploy gates on (max |d| over the reference's range, minimum cosine,
    top-1 agreement) and whether ``tolerance`` holds."""
    ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
    out = np.asarray(out, np.float64).reshape(len(out), -1)
    finite = bool(np.all(np.isfinite(out)))
    rel = float(np.abs(ref - out).max() / max(float(ref.max() - ref.min()), 1e-12)) if finite else float("inf")
    den = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cos = float(np.min(np.where(den > 0, (ref * out).sum(1) / np.maximum(den, 1e-30), 1.0))) if finite else -1.0
    top1 = float((ref.argmax(1) == out.argmax(1)).mean())
    fails = [] if finite else ["non-finite outputs"]
    t = tolerance or {}
    if t.get("rel_max") is not None and rel > t["rel_max"]:
        fails.append(f"relative max|d| {rel:.3g} > {t['rel_max']:g}")
    if t.get("cosine_min") is not None and cos < t["cosine_min"]:
        fails.append(f"cosine {cos:.6f} < {t['cosine_min']:g}")
    if t.get("top1_min") is not None and top1 < t["top1_min"]:
        fails.append(f"top-1 agreement {100 * top1:.1f}% < {100 * t['top1_min']:.1f}%")
    return {"images": len(ref), "rel_max": rel, "cosine_min": cos, "top1_agree": top1, "passed": not fails,
            "reason": "; ".join(fails)}


def check(bundle_dir: Path, bundle: dict, engine) -> dict:
    """The bundled sample images (as decoded, before preprocessing) -> preprocess -> engine, compared
    with the reference logits of the same images (the train-form model's, stored at export)."""
    samples = bundle.get("samples") or []
    if not samples:
        raise SystemExit("this bundle carries no sample images: pass image files instead")
    ref_all = np.load(Path(bundle_dir) / bundle["parity"]["reference"])
    inputs_all = np.load(Path(bundle_dir) / bundle["parity"]["inputs"])
    x = np.stack([preprocess(bundle, load_image(Path(bundle_dir) / s["image"])) for s in samples])
    idx = [int(s["index"]) for s in samples]
    res = compare(ref_all[idx], run(engine, x), bundle["parity"].get("gate") or {})
    res["preprocessing_max_abs_diff"] = float(np.abs(x - inputs_all[idx]).max())
    res["runtime"] = engine.name
    return res


def classify(bundle_dir: Path, bundle: dict, engine, files, top: int = 5) -> list[dict]:
    labels = bundle.get("labels")
    x = np.stack([preprocess(bundle, load_image(f)) for f in files])
    logits = run(engine, x)
    e = np.exp(logits - logits.max(1, keepdims=True))
    prob = e / e.sum(1, keepdims=True)
    out = []
    for f, p in zip(files, prob):
        best = np.argsort(-p)[:top]
        out.append({"image": str(f), "top": [{"class": int(i), "label": labels[i] if labels else str(int(i)),
                                               "p": float(p[i])} for i in best]})
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("images", nargs="*", help="image files (none: check the bundled samples against the reference)")
    ap.add_argument("--runtime", default="auto", help="auto (default), tensorrt or onnxruntime")
    ap.add_argument("--bundle", default=str(Path(__file__).resolve().parent), help="bundle directory")
    ap.add_argument("--json", action="store_true", help="machine-readable output")
    a = ap.parse_args(argv)
    bundle_dir = Path(a.bundle)
    bundle = json.loads((bundle_dir / "bundle.json").read_text())
    engine = open_engine(bundle_dir, bundle, a.runtime)
    if not a.images:
        res = check(bundle_dir, bundle, engine)
        if a.json:
            print(json.dumps(res))
        else:
            print(f"{res['runtime']}: {res['images']} sample images, preprocessing max|d| "
                  f"{res['preprocessing_max_abs_diff']:.2g}, cosine {res['cosine_min']:.6f}, relative max|d| "
                  f"{res['rel_max']:.3g}, top-1 agreement {100 * res['top1_agree']:.1f}%: "
                  + ("matches the reference" if res["passed"] else "MISSES the reference: " + res["reason"]))
        return 0 if res["passed"] else 1
    rows = classify(bundle_dir, bundle, engine, a.images)
    if a.json:
        print(json.dumps(rows))
    else:
        for r in rows:
            print(r["image"] + ": " + ", ".join(f"{t['label']} {100 * t['p']:.1f}%" for t in r["top"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
