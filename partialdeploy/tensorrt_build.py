"""TensorRT on the device: the build bundle and ``partialdeploy build-engine``.

TensorRT engines are tied to the GPU (compute capability) and the TensorRT version that built them,
so ``export --target tensorrt`` writes a *bundle* that holds everything needed to build the engine on
the device — the TensorRT-ready ONNX, the exact ``trtexec`` line, calibration images for INT8 and a
reference (images + train-form logits) for the parity gate — and ``build_engine`` does the same build
through the TensorRT 10 Python API, then proves the engine against the bundled reference.

This module never imports torch (or onnx, except for the optional operator check at export time):
the device may have only TensorRT, cuda-python and numpy.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import asdict, is_dataclass
from pathlib import Path

import numpy as np

from partialdeploy.errors import RuntimeUnavailable, UserError
from partialdeploy.verify import safe_join, verify_inside_export

BUNDLE_SCHEMA = "partialdeploy.tensorrt-bundle/1"
ENGINE = "model.engine"
SIDECAR = "model.engine.json"
TIMING_CACHE = "timing.cache"
CALIB_CACHE = "calib.cache"
DEFAULT_WORKSPACE_MB = 1024
DEFAULT_BATCH_RANGE = {"min": 1, "opt": 8, "max": 32}
NOT_HERE = "TensorRT is not installed / no NVIDIA GPU: run this on the device (see build_engine.sh)"
ONNX_OPSETS = (9, 20)  # TensorRT 10's ONNX parser: opset 9 to 20 inclusive

# ONNX operators (default domain) that TensorRT 10's ONNX parser imports. Written from the
# onnx-tensorrt operator support matrix for TensorRT 10; the restrictions listed there (e.g. 2D/3D
# pooling only, constant weights for some inputs) are not modelled here — the parse on the device is
# the final word. Deliberately conservative: an op not listed is reported, not assumed to work.
TRT10_ONNX_OPS = frozenset("""
Abs Acos Acosh Add AffineGrid And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization
BlackmanWindow Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh
CumSum DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten
Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool GlobalMaxPool Greater
GreaterOrEqual GridSample GroupNormalization GRU HammingWindow HannWindow HardSigmoid HardSwish Hardmax
Identity If InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax
Loop LpNormalization LpPool LRN LSTM MatMul Max MaxPool Mean MeanVarianceNormalization Min Mish Mod Mul Neg
NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal
RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum
ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize
ReverseSequence RNN RoiAlign Round ScaledTanh Scan ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign
Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh
ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())


# ---------------------------------------------------------------------------------------------------
# export side (no GPU needed)

def onnx_ops_report(onnx_path: Path) -> dict:
    """Operators and opset of an ONNX file against TensorRT 10's parser: {opset, ops, unsupported}."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    ops: dict[str, int] = {}
    for n in m.graph.node:
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        ops[key] = ops.get(key, 0) + 1
    unsupported = sorted(op for op in ops if op not in TRT10_ONNX_OPS)
    return {"opset": opset, "ops": dict(sorted(ops.items())), "unsupported": unsupported,
            "opset_supported": opset is not None and ONNX_OPSETS[0] <= opset <= ONNX_OPSETS[1]}


def batch_range(options: dict, dynamic: bool, static_batch: int = 1) -> dict:
    """min/opt/max batch for the optimization profile (dynamic) or the fixed batch (static)."""
    if not dynamic:
        return {"min": static_batch, "opt": static_batch, "max": static_batch}
    r = dict(DEFAULT_BATCH_RANGE)
    r.update({k: int(v) for k, v in (options.get("batch_range") or {}).items() if k in r and v is not None})
    if not 1 <= r["min"] <= r["opt"] <= r["max"]:
        raise UserError(f"batch range must satisfy 1 <= min <= opt <= max, got {r}")
    return r


def _dims(b: int, chw) -> str:
    return "x".join(str(d) for d in (b, *chw))


def trtexec_args(precision: str, input_name: str, chw, dynamic: bool, batch: dict,
                 workspace_mb: int = DEFAULT_WORKSPACE_MB, onnx: str = "model.onnx", engine: str = ENGINE,
                 timing_cache: str = TIMING_CACHE, calib_cache: str = CALIB_CACHE) -> list[str]:
    """The exact trtexec invocation that builds the bundle's engine."""
    if precision not in ("fp32", "fp16", "int8"):
        raise UserError(f"TensorRT precision must be fp32, fp16 or int8, not {precision!r}")
    a = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}"]
    if precision == "fp16":
        a.append("--fp16")
    elif precision == "int8":
        # fp16 too: layers TensorRT cannot run in int8 fall back to fp16 rather than fp32
        a += ["--int8", "--fp16", f"--calib={calib_cache}"]
    if dynamic:
        a += [f"--minShapes={input_name}:{_dims(batch['min'], chw)}",
              f"--optShapes={input_name}:{_dims(batch['opt'], chw)}",
              f"--maxShapes={input_name}:{_dims(batch['max'], chw)}"]
    a += [f"--memPoolSize=workspace:{int(workspace_mb)}M", f"--timingCacheFile={timing_cache}"]
    return a


def _tol_dict(tol) -> dict | str | None:
    if tol is None or isinstance(tol, str):
        return tol
    if is_dataclass(tol):
        return {k: v for k, v in asdict(tol).items() if v is not None}
    return dict(tol)


EVAL_BYTES_MAX = 64 << 20  # keep the bundle small: at most 64 MB of held-out images


def write_bundle(out_dir: Path, *, onnx_path: Path, precision: str, input_name: str, output_name: str,
                 chw, dynamic: bool, batch: dict, workspace_mb: int, parity_inputs: np.ndarray,
                 reference: np.ndarray, calib: np.ndarray | None = None, calib_source: str | None = None,
                 eval_images: np.ndarray | None = None, eval_labels: np.ndarray | None = None,
                 eval_reference: np.ndarray | None = None, tolerance=None, ops_report: dict | None = None,
                 model_name: str = "") -> dict:
    """Write the build bundle into ``out_dir``; returns bundle.json's content."""
    import shutil

    from partialdeploy import __version__

    out_dir = Path(out_dir)
    shutil.copyfile(onnx_path, out_dir / "model.onnx")
    files = ["model.onnx"]
    np.save(out_dir / "parity_inputs.npy", np.ascontiguousarray(parity_inputs, np.float32))
    np.save(out_dir / "reference_logits.npy", np.ascontiguousarray(reference, np.float32))
    files += ["parity_inputs.npy", "reference_logits.npy"]
    calib_info = None
    if precision == "int8":
        if calib is None or len(calib) == 0:
            raise UserError("INT8 needs calibration images: pass --calib DIR (100-500 representative images)")
        np.save(out_dir / "calib.npy", np.ascontiguousarray(calib, np.float32))
        files.append("calib.npy")
        calib_info = {"file": "calib.npy", "count": int(len(calib)), "source": calib_source,
                      "cache": CALIB_CACHE, "calibrator": "IInt8EntropyCalibrator2"}
    eval_info = None
    if precision == "int8" and eval_images is not None and eval_reference is not None:
        per = max(1, eval_images[0].nbytes)
        n = min(len(eval_images), EVAL_BYTES_MAX // per)
        np.save(out_dir / "eval_images.npy", np.ascontiguousarray(eval_images[:n], np.float32))
        np.save(out_dir / "eval_reference.npy", np.ascontiguousarray(eval_reference[:n], np.float32))
        files += ["eval_images.npy", "eval_reference.npy"]
        if eval_labels is not None:
            np.save(out_dir / "eval_labels.npy", np.asarray(eval_labels[:n], np.int64))
            files.append("eval_labels.npy")
        eval_info = {"count": int(n), "labels": eval_labels is not None}
    args = trtexec_args(precision, input_name, chw, dynamic, batch, workspace_mb)
    bundle = {
        "schema": BUNDLE_SCHEMA, "tool": f"partialdeploy {__version__}", "model": model_name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "precision": precision, "onnx": "model.onnx", "engine": ENGINE, "sidecar": SIDECAR,
        "input": {"name": input_name, "shape": [None if dynamic else batch["opt"], *chw], "dtype": "float32"},
        "output": {"name": output_name, "dtype": "float32"},
        "dynamic_batch": dynamic, "batch": batch, "workspace_mb": int(workspace_mb), "timing_cache": TIMING_CACHE,
        "calibration": calib_info, "eval": eval_info,
        "parity": {"inputs": "parity_inputs.npy", "reference": "reference_logits.npy",
                   "tolerance": _tol_dict(tolerance) or precision},
        "onnx_check": ops_report, "trtexec": args, "trtexec_line": shlex.join(args),
    }
    (out_dir / "build_engine.sh").write_text(_script(bundle))
    (out_dir / "build_engine.sh").chmod(0o755)
    (out_dir / "README.txt").write_text(_readme(bundle))
    files += ["build_engine.sh", "README.txt", "bundle.json"]
    bundle["files"] = files
    (out_dir / "bundle.json").write_text(json.dumps(bundle, indent=2) + "\n")
    return bundle


def _script(b: dict) -> str:
    lines = ["#!/bin/sh", "# Build the TensorRT engine for this GPU (engines are not portable across GPUs or",
             "# TensorRT versions). Same build through the Python API, with the parity gate:",
             "#   partialdeploy build-engine .", "set -e", 'cd "$(dirname "$0")"']
    if b["precision"] == "int8":
        lines += [f'if [ ! -f {CALIB_CACHE} ]; then',
                  f'  echo "{CALIB_CACHE} is missing: trtexec cannot calibrate from images. Run'
                  f' \\`partialdeploy build-engine .\\` (calibrates on calib.npy, writes {CALIB_CACHE}) first." >&2',
                  "  exit 2", "fi"]
    lines.append(b["trtexec_line"])
    return "\n".join(lines) + "\n"


def _readme(b: dict) -> str:
    shape = "x".join("N" if d is None else str(d) for d in b["input"]["shape"])
    bb = b["batch"]
    return f"""TensorRT build bundle ({b['model']}, {b['precision']}) from {b['tool']}

TensorRT engines only run on the GPU model and TensorRT version that built them, so the engine is
built on the device from this bundle.

  model.onnx            TensorRT-ready ONNX (opset {(b.get('onnx_check') or {}).get('opset')}), input '{b['input']['name']}' {shape} float32,
                        output '{b['output']['name']}'
  build_engine.sh       the trtexec build: {b['trtexec_line']}
  parity_inputs.npy     preprocessed real images and reference_logits.npy, the train-form logits on them
{'  calib.npy             INT8 calibration images (preprocessed, N x C x H x W float32)' if b['calibration'] else ''}
  bundle.json           all of the above, machine-readable

On the device (TensorRT 10 + cuda-python):

  partialdeploy build-engine .          # build via the Python API, parity gate, writes {ENGINE} + {SIDECAR}
  sh build_engine.sh                    # or the same with trtexec{' (needs calib.cache from build-engine)' if b['calibration'] else ''}
  partialdeploy profile .               # latency on the device

Batch: {'dynamic, optimization profile min/opt/max = ' + f"{bb['min']}/{bb['opt']}/{bb['max']}" if b['dynamic_batch'] else f"static {bb['opt']}"}; workspace {b['workspace_mb']} MB;
the timing cache ({TIMING_CACHE}) is reused by later builds on the same device.
"""


# ---------------------------------------------------------------------------------------------------
# device side (TensorRT 10 Python API + cuda-python)

def load_bundle(bundle_dir: Path) -> dict:
    p = Path(bundle_dir) / "bundle.json"
    if not p.exists():
        raise UserError(f"{bundle_dir} is not a TensorRT bundle (no bundle.json): export one with "
                        "`partialdeploy export --target tensorrt`")
    try:
        b = json.loads(p.read_text())
    except (ValueError, OSError, RecursionError) as e:
        raise UserError(f"{p} is not valid JSON ({str(e)[:120]}); re-export the bundle") from None
    if not isinstance(b, dict) or b.get("schema") != BUNDLE_SCHEMA:
        schema = b.get("schema") if isinstance(b, dict) else None
        raise UserError(f"{p} has schema {schema!r}, expected {BUNDLE_SCHEMA}; re-export the bundle")
    return b


def check_engine_compat(sidecar: dict, trt_version: str, compute_capability: str) -> None:
    """Raise UserError (one line) when an engine was built for another TensorRT or GPU."""
    built_v, built_cc = str(sidecar.get("tensorrt_version")), str(sidecar.get("compute_capability"))
    problems = []
    if built_v != str(trt_version):
        problems.append(f"TensorRT {built_v} (this device has {trt_version})")
    if built_cc != str(compute_capability):
        problems.append(f"compute capability {built_cc} (this GPU is {compute_capability})")
    if problems:
        raise UserError(f"the engine was built with {' and '.join(problems)}: engines are not portable; "
                        f"rebuild it here with `partialdeploy build-engine DIR`")


def device_info() -> dict:
    """TensorRT version and GPU 0's name and compute capability. RuntimeUnavailable when absent."""
    from partialdeploy.runners.tensorrt import _check, _cudart, _why_unavailable

    if _why_unavailable():
        raise RuntimeUnavailable(NOT_HERE)
    import tensorrt as trt

    cudart = _cudart()
    props = _check(cudart.cudaGetDeviceProperties(0))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"tensorrt_version": trt.__version__, "compute_capability": f"{props.major}.{props.minor}",
            "gpu": name.strip("\x00 ")}


def _make_calibrator(trt, calib: np.ndarray, batch: int, cache: Path):
    """IInt8EntropyCalibrator2 over calib.npy (device buffer through cuda-python); the calibration
    cache is written to ``cache`` and reused by later builds (and by trtexec --calib)."""
    from partialdeploy.runners.tensorrt import _check, _cudart

    cudart = _cudart()

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.i = 0
            self.nbytes = int(calib[:batch].nbytes)
            self.ptr = _check(cudart.cudaMalloc(self.nbytes))

        def get_batch_size(self):
            return batch

        def get_batch(self, names):
            if self.i + batch > len(calib):
                return None
            chunk = np.ascontiguousarray(calib[self.i:self.i + batch], np.float32)
            self.i += batch
            _check(cudart.cudaMemcpy(self.ptr, chunk.ctypes.data, chunk.nbytes,
                                     cudart.cudaMemcpyKind.cudaMemcpyHostToDevice))
            return [int(self.ptr)]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.exists() else None

        def write_calibration_cache(self, data):
            cache.write_bytes(bytes(data))

        def free(self):
            if self.ptr:
                cudart.cudaFree(self.ptr)
                self.ptr = 0

    return Calibrator()


def build_engine(bundle_dir: Path, precision: str | None = None, workspace_mb: int | None = None,
                 progress=None) -> dict:
    """Build ``model.engine`` from the bundle with the TensorRT 10 Python API, run the parity gate
    on the bundled reference, write the sidecar JSON. Returns the sidecar content.

    RuntimeUnavailable (exit 2) where TensorRT or the GPU is missing; VerificationError (exit 1)
    when the engine misses the tolerance."""
    say = progress or (lambda msg: None)
    bundle_dir = Path(bundle_dir)
    b = load_bundle(bundle_dir)
    verify_inside_export(bundle_dir)  # the bundle's files against the export's manifest.json, when it has one
    onnx_file = safe_join(bundle_dir, b.get("onnx"), "bundle ONNX path")
    prec = str(precision or b.get("precision") or "").lower()
    if prec not in ("fp32", "fp16", "int8"):
        raise UserError(f"--precision must be fp32, fp16 or int8, not {prec!r}")
    if prec == "int8" and not (bundle_dir / "calib.npy").exists():
        raise UserError("this bundle has no calib.npy: re-export it with --precision int8 --calib DIR")
    ws = int(workspace_mb or b.get("workspace_mb") or DEFAULT_WORKSPACE_MB)
    dev = device_info()  # raises RuntimeUnavailable here
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_file)):
        errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise UserError(f"TensorRT {trt.__version__} cannot parse model.onnx: {errs[:300]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, ws << 20)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer names for per-layer profiles
    tc_path = bundle_dir / b.get("timing_cache", TIMING_CACHE)
    cache = config.create_timing_cache(tc_path.read_bytes() if tc_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    chw = b["input"]["shape"][1:]
    name = b["input"]["name"]
    bb = b["batch"]
    profile = None
    if b["dynamic_batch"]:
        profile = builder.create_optimization_profile()
        profile.set_shape(name, (bb["min"], *chw), (bb["opt"], *chw), (bb["max"], *chw))
        config.add_optimization_profile(profile)
    if prec in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    calibrator = None
    if prec == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        calib = np.load(bundle_dir / "calib.npy")
        # a static engine calibrates at its batch; a dynamic one at up to 8 images per batch
        cb = bb["opt"] if not b["dynamic_batch"] else max(1, min(8, bb["max"], len(calib)))
        if len(calib) < cb:
            raise UserError(f"calib.npy has {len(calib)} images, fewer than the batch {cb}: re-export with more")
        calibrator = _make_calibrator(trt, calib, cb, bundle_dir / CALIB_CACHE)
        config.int8_calibrator = calibrator
        if profile is not None:
            config.set_calibration_profile(profile)
    say(f"building {prec} engine (TensorRT {trt.__version__}, {dev['gpu']}, sm {dev['compute_capability']})")
    t0 = time.perf_counter()
    try:
        blob = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if blob is None:
        raise UserError(f"TensorRT failed to build the {prec} engine (see the TensorRT log above)")
    build_s = time.perf_counter() - t0
    (bundle_dir / ENGINE).write_bytes(bytes(blob))
    tc_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    sidecar = {**dev, "precision": prec, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "build_seconds": round(build_s, 2), "workspace_mb": ws, "dynamic_batch": b["dynamic_batch"],
               "batch": bb, "input": b["input"], "timing_cache": tc_path.name,
               "calibration_cache": CALIB_CACHE if prec == "int8" else None}
    sidecar["parity"] = verify_engine(bundle_dir, b, prec, sidecar)
    (bundle_dir / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def verify_engine(bundle_dir: Path, b: dict, precision: str, sidecar: dict) -> list[dict]:
    """Parity gate of the engine on the bundled reference (and held-out set for INT8)."""
    from partialdeploy import parity
    from partialdeploy.runners.tensorrt import TensorRTRunner

    dev = device_info()
    check_engine_compat(sidecar, dev["tensorrt_version"], dev["compute_capability"])
    tol = b["parity"].get("tolerance") if precision == b["precision"] else precision
    tol = parity.Tolerance(**tol) if isinstance(tol, dict) else (tol or precision)
    bs = 1 if b["dynamic_batch"] else b["batch"]["opt"]
    results = []
    with TensorRTRunner(bundle_dir / ENGINE) as r:
        def run(x):
            from partialdeploy.exporters._common import run_padded

            return run_padded(r.run, x, bs)

        x, ref = np.load(bundle_dir / "parity_inputs.npy"), np.load(bundle_dir / "reference_logits.npy")
        results.append(parity.gate(ref, run(x), f"ONNX -> TensorRT {precision} ({len(x)} parity images)",
                                   tol).to_dict())
        if (bundle_dir / "eval_images.npy").exists():
            ex, er = np.load(bundle_dir / "eval_images.npy"), np.load(bundle_dir / "eval_reference.npy")
            lab = np.load(bundle_dir / "eval_labels.npy") if (bundle_dir / "eval_labels.npy").exists() else None
            results.append(parity.gate(er, run(ex), f"ONNX -> TensorRT {precision} ({len(ex)} held-out images)",
                                       tol, labels=lab).to_dict())
    return results


def load_sidecar_checked(engine_path: Path) -> dict:
    """Read an engine's sidecar and check it against this device (UserError, one line, on mismatch)."""
    side = Path(engine_path).with_name(SIDECAR) if Path(engine_path).is_file() else Path(engine_path) / SIDECAR
    if not side.exists():
        raise UserError(f"no {SIDECAR} next to the engine: rebuild it with `partialdeploy build-engine DIR`")
    meta = json.loads(side.read_text())
    dev = device_info()
    check_engine_compat(meta, dev["tensorrt_version"], dev["compute_capability"])
    return meta
