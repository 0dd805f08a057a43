"""A TensorRT bundle describes itself and runs on the device the first time: bundle.json and the README
carry the input/output contract, preprocessing, labels, precision recipe, TensorRT generations and
sha256 of each file; infer.py (numpy + TensorRT, no torch, no partialdeploy) reproduces the reference
logits from the bundled raw sample images — run here with its ONNX Runtime engine on model.onnx, the
same preprocessing and batching code path the TensorRT engine uses."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from targets_common import export, make_ctx

from partialdeploy.backends import get_target

pytestmark = pytest.mark.skipif(get_target("tensorrt").can_build_here(), reason="a GPU is present: builds run")

RUN = ("import json, runpy, sys\nsys.argv = ['infer.py'] + sys.argv[1:]\ncode = 0\n"
       "try:\n    runpy.run_path('infer.py', run_name='__main__')\nexcept SystemExit as e:\n    code = e.code\n"
       "print(json.dumps({'exit': code, 'torch': 'torch' in sys.modules, 'partialdeploy': 'partialdeploy' in "
       "sys.modules}))\n")


def _infer(d, *args):
    """infer.py run in the bundle directory as a device would (its own interpreter, the bundle as cwd);
    returns (its JSON output, the exit/imports record)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-c", RUN, *args, "--json"], cwd=d, capture_output=True, text=True,
                       env=env, timeout=120)
    lines = r.stdout.strip().splitlines()
    assert lines, r.stderr
    return (json.loads(lines[0]) if len(lines) > 1 else None), json.loads(lines[-1])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle") / "fp16"
    d.mkdir()
    ctx = make_ctx("fp16", dynamic=False, batch=3)  # static batch 3: 8 samples run as 3 + 3 + 2 (padded)
    art = export("tensorrt", ctx, d)
    return art, d, ctx


def test_bundle_json_describes_how_to_feed_the_model(bundle):
    art, d, ctx = bundle
    b = json.loads((d / "bundle.json").read_text())
    assert b["input"] == {"name": "input", "shape": [3, 3, 64, 64], "dtype": "float32", "layout": "NCHW"}
    assert b["output"]["name"] == "logits" and b["output"]["shape"] == [3, 10] and b["output"]["dtype"] == "float32"
    p = b["preprocessing"]
    assert p["mean"] == list(ctx.spec.mean) and p["std"] == list(ctx.spec.std) and p["size"] == [64, 64]
    assert (p["color"], p["layout"], p["crop"], p["interpolation"]) == ("RGB", "NCHW", "center", "bicubic")
    assert p["resize_shorter_side_to"] == max(64, round(64 / ctx.spec.crop_ratio))
    assert b["labels"] == list(ctx.spec.labels) and len(b["labels"]) == 10  # the demo's digits
    assert b["onnx_precision"]["summary"].startswith("fp16 strongly typed")
    assert b["tensorrt"]["builds_with"] == [8, 10, 11] and set(b["typing_by_generation"]) == {"8", "10", "11"}
    assert b["parity"]["gate"] == {"cosine_min": 0.9995}  # the fp16 default, as numbers
    assert [s["image"] for s in b["samples"]] == [f"sample_{i}.png" for i in range(8)]
    # sha256 of every file but README.txt and bundle.json (those are in the export's manifest)
    assert set(b["sha256"]) == set(b["files"]) - {"README.txt", "bundle.json"}
    for f, h in b["sha256"].items():
        assert hashlib.sha256((d / f).read_bytes()).hexdigest() == h, f
    readme = (d / "README.txt").read_text()
    for text in ("input   'input' 3x3x64x64 float32, layout NCHW", "resize the shorter side to",
                 f"subtract mean {p['mean']}", "10 classes: 0=0, 1=1", "python3 infer.py",
                 "TensorRT 8:", "comes with JetPack", b["sha256"]["model.onnx"],
                 "TensorRT 8.5 (JetPack 5) cannot parse LayerNormalization"):
        assert text in readme, text


def test_infer_py_reproduces_the_reference_without_torch(bundle):
    art, d, ctx = bundle
    res, run = _infer(d, "--runtime", "onnxruntime")
    assert run == {"exit": 0, "torch": False, "partialdeploy": False}
    assert res["passed"] and res["runtime"] == "onnxruntime" and res["images"] == 8
    assert res["preprocessing_max_abs_diff"] == 0.0  # the raw samples preprocess to exactly parity_inputs.npy
    assert res["cosine_min"] > 0.9995 and res["top1_agree"] == 1.0
    # auto: no tensorrt here, so ONNX Runtime on model.onnx
    res, run = _infer(d)
    assert run["exit"] == 0 and res["runtime"] == "onnxruntime"
    rows, run = _infer(d, "--runtime", "onnxruntime", "sample_0.png", "sample_1.png")
    ref = np.load(d / "reference_logits.npy")
    assert run["exit"] == 0 and [r["top"][0]["class"] for r in rows] == list(ref[:2].argmax(1))
    assert [r["top"][0]["label"] for r in rows] == [ctx.spec.labels[i] for i in ref[:2].argmax(1)]


def test_infer_py_check_can_fail(bundle, tmp_path):
    """The check is a real comparison: wrong preprocessing in bundle.json misses the reference (exit 1)."""
    _, src, _ = bundle
    d = tmp_path / "b"
    shutil.copytree(src, d)
    b = json.loads((d / "bundle.json").read_text())
    b["preprocessing"]["color"] = "BGR" if b["preprocessing"]["color"] == "RGB" else "RGB"
    b["preprocessing"]["mean"] = [0.0, 0.0, 0.0]
    (d / "bundle.json").write_text(json.dumps(b))
    res, run = _infer(d, "--runtime", "onnxruntime")
    assert run["exit"] == 1 and not res["passed"] and "cosine" in res["reason"]
    assert res["preprocessing_max_abs_diff"] > 0.1
    _, run = _infer(d, "--runtime", "tensorrt")  # not importable here: one line naming how to get it
    assert run["exit"] != 0


def test_infer_py_tensorrt_needs_jetpack_message(bundle):
    _, d, _ = bundle
    r = subprocess.run([sys.executable, "infer.py", "--runtime", "tensorrt"], cwd=d, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "comes with JetPack" in r.stderr and "Traceback" not in r.stderr


def test_bundle_carries_a_wheel(tmp_path):
    """export --bundle-wheel: the bundle carries the partialdeploy wheel, hashed, and its README says how
    to install it on the device; anything but a wheel file is refused."""
    from types import SimpleNamespace

    from partialdeploy.errors import UserError
    from partialdeploy.backends.tensorrt.bundle import BundleImages, BundleSpec, write_bundle

    (tmp_path / "src.onnx").write_bytes(b"onnx")
    whl = tmp_path / "partialdeploy-0.1.0-py3-none-any.whl"
    whl.write_bytes(b"PK wheel")
    x = np.zeros((1, 3, 32, 32), np.float32)
    ctx = SimpleNamespace(parity_inputs=x, reference=np.ones((1, 10), np.float32), calib=None, calib_source=None,
                          eval_images=None, eval_labels=None, eval_reference=None)
    spec = BundleSpec(onnx_path=tmp_path / "src.onnx", precision="fp32", images=BundleImages.of(ctx), chw=[3, 32, 32],
                      batch={"min": 1, "opt": 1, "max": 1}, wheel=whl)
    out = tmp_path / "b"
    out.mkdir()
    b = write_bundle(out, spec)
    assert b["wheel"] == whl.name and (out / whl.name).read_bytes() == b"PK wheel" and whl.name in b["sha256"]
    assert f"pip install './{whl.name}[tensorrt]'" in (out / "README.txt").read_text()
    spec.wheel = tmp_path / "src.onnx"
    (tmp_path / "c").mkdir()
    with pytest.raises(UserError, match="not a wheel file: build one with `make dist`"):
        write_bundle(tmp_path / "c", spec)


def _fake_trt_and_cuda(onnx_path):
    """Fakes of the documented APIs infer.py's TensorRTEngine uses: tensorrt's name-based tensor API
    (8.5+, 10, 11: num_io_tensors, get_tensor_name/mode/shape/dtype, set_input_shape, set_tensor_address,
    execute_async_v3) and cuda-python's runtime (cudaMalloc/cudaMemcpy/cudaFree/stream). "Device" memory
    is host memory; the "engine" runs model.onnx in ONNX Runtime between the copies."""
    import ctypes
    import types

    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    in_name, out_name = sess.get_inputs()[0].name, sess.get_outputs()[0].name
    static = sess.get_inputs()[0].shape
    bufs = {}
    rt = types.ModuleType("cuda.bindings.runtime")
    rt.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def malloc(n):
        b = ctypes.create_string_buffer(int(n))
        bufs[ctypes.addressof(b)] = b
        return 0, ctypes.addressof(b)

    rt.cudaMalloc = malloc
    rt.cudaFree = lambda p: (bufs.pop(int(p), None), 0)[1]
    rt.cudaMemcpy = lambda dst, src, n, kind: (ctypes.memmove(int(dst), int(src), int(n)), (0,))[1]
    rt.cudaStreamCreate = lambda: (0, 7)
    rt.cudaStreamSynchronize = lambda s: (0,)

    trt = types.ModuleType("tensorrt")
    trt.__version__ = "8.6.2.3"
    trt.TensorIOMode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    trt.nptype = lambda dt: np.float32
    trt.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, sev: None})

    class Context:
        def __init__(self):
            self.shape, self.addr = None, {}

        def set_input_shape(self, name, shape):
            assert name == in_name
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return (self.shape[0], 10)

        def set_tensor_address(self, name, ptr):
            self.addr[name] = int(ptr)

        def execute_async_v3(self, stream):
            n = int(np.prod(self.shape))
            x = np.frombuffer((ctypes.c_float * n).from_address(self.addr[in_name]), np.float32).reshape(self.shape)
            y = np.ascontiguousarray(sess.run(None, {in_name: x.copy()})[0], np.float32)
            ctypes.memmove(self.addr[out_name], y.ctypes.data, y.nbytes)
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return [in_name, out_name][i]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name == in_name else trt.TensorIOMode.OUTPUT

        def get_tensor_shape(self, name):
            return tuple(d if isinstance(d, int) else -1 for d in static)

        def get_tensor_dtype(self, name):
            return "float32"

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, blob):
            return Engine() if blob == b"fake engine" else None

    trt.Runtime = Runtime
    cuda = types.ModuleType("cuda")
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = rt
    cuda.bindings = bindings
    return {"tensorrt": trt, "cuda": cuda, "cuda.bindings": bindings, "cuda.bindings.runtime": rt}, bufs


def test_infer_py_tensorrt_engine_against_fake_apis(bundle, tmp_path, monkeypatch):
    """infer.py's TensorRT path (what runs on the device) against fakes of TensorRT's name-based tensor API
    and cuda-python: the same preprocessing and static-batch chunking, device buffers freed, the reference
    reproduced; auto picks TensorRT once model.engine exists."""
    import importlib.util

    _, src, _ = bundle
    d = tmp_path / "b"
    shutil.copytree(src, d)
    (d / "model.engine").write_bytes(b"fake engine")
    mods, bufs = _fake_trt_and_cuda(d / "model.onnx")
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    spec = importlib.util.spec_from_file_location("bundle_infer_copy", d / "infer.py")
    infer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(infer)
    b = json.loads((d / "bundle.json").read_text())
    engine = infer.open_engine(d, b)  # auto: tensorrt imports and model.engine exists
    assert engine.name == "tensorrt" and engine.batch == 3
    res = infer.check(d, b, engine)
    assert res["passed"] and res["runtime"] == "tensorrt" and res["preprocessing_max_abs_diff"] == 0.0
    assert res["cosine_min"] > 0.9995 and bufs == {}  # every device buffer freed
    (d / "model.engine").write_bytes(b"from another TensorRT")
    with pytest.raises(SystemExit, match="cannot load .* rebuild it on this device"):
        infer.open_engine(d, b, "tensorrt")


@pytest.mark.parametrize("source", ["check_dir", "stock"])
def test_raw_samples_are_what_the_check_images_were_made_from(tmp_path, source):
    """The raw images a bundle carries preprocess to exactly the check images the gates used, whichever
    source chose them (the user's --check-images folder, or the stock-photo fallback with a crop ratio
    of the checkpoint's own)."""
    from types import SimpleNamespace

    from PIL import Image

    from partialdeploy.exporting import check_images
    from partialdeploy.images import preprocess

    spec = SimpleNamespace(img_size=32, mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.3), crop_ratio=0.9)
    check_dir = None
    if source == "check_dir":
        check_dir = tmp_path / "mine"
        check_dir.mkdir()
        rng = np.random.default_rng(0)
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (40 + 7 * i, 50, 3), dtype=np.uint8)).save(check_dir / f"{i}.png")
    chk = check_images.choose(spec, check_dir=check_dir, calib_dir=None, user_calib=False, is_demo=False,
                              demo_x=None, stock_n=4)
    raw = chk.raw_samples(3)
    assert len(raw) == 3 and all(r.dtype == np.uint8 for r in raw)
    x = np.stack([preprocess(r, 32, spec.mean, spec.std, spec.crop_ratio) for r in raw])
    np.testing.assert_array_equal(x, chk.x[:3])
