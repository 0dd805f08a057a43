"""TensorRT on the device: the build bundle and ``partialdeploy build-engine``.

TensorRT engines are tied to the GPU (compute capability) and the TensorRT version that built them,
so ``export --target tensorrt`` writes a *bundle* that holds everything needed to build the engine on
the device — the TensorRT-ready ONNX, the exact ``trtexec`` line, calibration images for INT8 and a
reference (images + train-form logits) for the parity gate — and ``build_engine`` does the same build
through the TensorRT Python API, then proves the engine against the bundled reference.

Two TensorRT generations are in the field: 10.x (JetPack on Jetson) and 11.x (current release), which
removed weak typing (``--fp16/--int8/--calib``, ``BuilderFlag.FP16/INT8``, INT8 calibrators). So the
precision travels in ``model.onnx``: a strongly typed mixed-precision model for fp16, Q/DQ nodes for
INT8 (explicit quantization). TensorRT 10 builds the same file with ``--stronglyTyped`` /
``NetworkDefinitionCreationFlag.STRONGLY_TYPED``; TensorRT 11 needs no flag (strong typing is always on).
The old implicit-quantization INT8 path (calibrator + calibration cache) is kept only for bundles
that target TensorRT 10 and ask for it (``int8_quantization: implicit``).

This module never imports torch (or onnx, except for the optional operator check at export time):
the device may have only TensorRT, cuda-python and numpy.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from dataclasses import asdict, dataclass, is_dataclass
from pathlib import Path

import numpy as np

from partialdeploy.cuda_env import (NOT_HERE, SIDECAR, check, check_engine_compat, cudart, device_info,  # noqa: F401
                                    load_sidecar_checked)
from partialdeploy.errors import UserError
from partialdeploy.records import ParityResult
from partialdeploy.verify import safe_join, verify_inside_export

BUNDLE_SCHEMA = "partialdeploy.tensorrt-bundle/2"
ENGINE = "model.engine"
TIMING_CACHE = "timing.cache"
CALIB_CACHE = "calib.cache"
DEFAULT_WORKSPACE_MB = 1024
DEFAULT_BATCH_RANGE = {"min": 1, "opt": 8, "max": 32}
ONNX_OPSETS = (9, 20)  # TensorRT 10's ONNX parser: opset 9 to 20 inclusive
GENERATIONS = (10, 11)  # TensorRT major versions a bundle builds with
QUANTIZATION_MODES = ("explicit", "implicit")  # INT8: Q/DQ in the ONNX (10 and 11) / calibrator (10 only)

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
# TensorRT 11.x's parser: the 10.x set plus Swish (added in 11.0); opsets 9-24 (the 11.4 release; 11.5
# added opset 25). From the 11.x release notes and ONNX opset guide; the parse on the device is final.
TRT11_ONNX_OPS = TRT10_ONNX_OPS | {"Swish"}
ONNX_SUPPORT = {10: (TRT10_ONNX_OPS, ONNX_OPSETS), 11: (TRT11_ONNX_OPS, (9, 24))}


# ---------------------------------------------------------------------------------------------------
# export side (no GPU needed)

def onnx_ops_report(onnx_path: Path, generations=GENERATIONS) -> dict:
    """Operators and opset of an ONNX file against the ONNX parsers of TensorRT ``generations``:
    {opset, ops, unsupported, opset_supported, by_generation: {"10": {...}, "11": {...}}}; the top-level
    ``unsupported`` / ``opset_supported`` cover every generation asked for."""
    import onnx

    m = onnx.load(str(onnx_path), load_external_data=False)
    opset = next((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")), None)
    ops: dict[str, int] = {}
    for n in m.graph.node:
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        ops[key] = ops.get(key, 0) + 1
    by_gen = {}
    for g in generations:
        known, (lo, hi) = ONNX_SUPPORT[int(g)]
        by_gen[str(g)] = {"unsupported": sorted(op for op in ops if op not in known), "opsets": [lo, hi],
                          "opset_supported": opset is not None and lo <= opset <= hi}
    return {"opset": opset, "ops": dict(sorted(ops.items())),
            "unsupported": sorted({op for r in by_gen.values() for op in r["unsupported"]}),
            "opset_supported": all(r["opset_supported"] for r in by_gen.values()), "by_generation": by_gen}


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


def trt_major(version) -> int:
    """10 from "10.3.0.26", 11 from "11.4.0"; UserError for anything else."""
    try:
        major = int(str(version).strip().split(".")[0])
    except ValueError:
        raise UserError(f"cannot read a TensorRT version from {version!r}") from None
    if major not in GENERATIONS:
        raise UserError(f"TensorRT {version} is not supported: bundles build with TensorRT "
                        f"{' or '.join(map(str, GENERATIONS))}")
    return major


def check_generation(generation, quantization: str = "explicit", precision: str = "fp32") -> int | None:
    """Validate a bundle's TensorRT generation (None = any) against its INT8 quantization mode."""
    if generation is not None:
        generation = trt_major(generation)
    if quantization not in QUANTIZATION_MODES:
        raise UserError(f"int8_quantization must be explicit or implicit, not {quantization!r}")
    if quantization == "implicit":
        if precision != "int8":
            raise UserError("int8_quantization: implicit only applies to --precision int8")
        if generation != 10:
            raise UserError("implicit INT8 quantization (calibrator + calibration cache) exists only in TensorRT 10 "
                            "(11 removed it): set tensorrt: 10 in the profile, or use the default explicit Q/DQ INT8")
    return generation


def trtexec_args(precision: str, input_name: str, chw, dynamic: bool, batch: dict,
                 workspace_mb: int = DEFAULT_WORKSPACE_MB, generation: int = 11, quantization: str = "explicit",
                 onnx: str = "model.onnx", engine: str = ENGINE, timing_cache: str = TIMING_CACHE,
                 calib_cache: str = CALIB_CACHE) -> list[str]:
    """The exact trtexec invocation that builds the bundle's engine with TensorRT ``generation``.

    The precision is in model.onnx (strongly typed fp16 / Q/DQ INT8), so no precision flag: TensorRT 10
    gets ``--stronglyTyped`` (its default is weak typing), TensorRT 11 nothing (always strongly typed,
    the precision flags are gone). Only the implicit-quantization path (TensorRT 10, on request) uses
    ``--int8 --fp16 --calib``."""
    if precision not in ("fp32", "fp16", "int8"):
        raise UserError(f"TensorRT precision must be fp32, fp16 or int8, not {precision!r}")
    generation = check_generation(generation, quantization, precision)
    if generation is None:
        raise UserError("trtexec_args needs a TensorRT generation (10 or 11)")
    a = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}"]
    if quantization == "implicit":
        # fp16 too: layers TensorRT cannot run in int8 fall back to fp16 rather than fp32
        a += ["--int8", "--fp16", f"--calib={calib_cache}"]
    elif generation == 10:
        a.append("--stronglyTyped")
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


@dataclass
class BundleImages:
    """The real images a bundle carries: the parity reference (always), calibration images (the
    implicit INT8 path) and the held-out labelled set (INT8)."""

    parity_inputs: np.ndarray  # preprocessed real images
    reference: np.ndarray  # train-form logits on them
    calib: np.ndarray | None = None
    calib_source: str | None = None
    eval_images: np.ndarray | None = None
    eval_labels: np.ndarray | None = None
    eval_reference: np.ndarray | None = None

    @classmethod
    def of(cls, ctx) -> "BundleImages":
        """The images of an export context (exporters.base.ExportContext)."""
        return cls(ctx.parity_inputs, ctx.reference, ctx.calib, ctx.calib_source, ctx.eval_images, ctx.eval_labels,
                   ctx.eval_reference)


@dataclass
class BundleSpec:
    """What :func:`write_bundle` writes, built by the TensorRT target (exporters/tensorrt.py).

    ``onnx_path`` is the TensorRT-ready ONNX that already carries the precision (strongly typed fp16,
    Q/DQ INT8; for the implicit INT8 path the fp32 ONNX). ``generation`` is the TensorRT major version
    the target profile expects (None: either); ``quantization`` the INT8 mode. ``builds_with``: the
    generations whose ONNX parser takes the model (default: both; the implicit path: 10 only) — a
    trtexec line is written for each, and building with one other than ``generation`` needs
    ``--any-tensorrt`` / ``ANY_TENSORRT=1``."""

    onnx_path: Path
    precision: str
    images: BundleImages
    chw: list  # input channels, height, width
    batch: dict  # {"min", "opt", "max"}
    dynamic: bool = False
    input_name: str = "input"
    output_name: str = "logits"
    workspace_mb: int = DEFAULT_WORKSPACE_MB
    tolerance: object = None  # parity.Tolerance / dict / precision name for build-engine's gate
    ops_report: dict | None = None
    model_name: str = ""
    generation: int | None = None
    quantization: str = "explicit"
    onnx_precision: dict | None = None
    profile: str | None = None
    builds_with: list | None = None


def write_bundle(out_dir: Path, spec: BundleSpec) -> dict:
    """Write the build bundle described by ``spec`` into ``out_dir``; returns bundle.json's content."""
    import shutil

    from partialdeploy import __version__

    s, img = spec, spec.images
    precision, quantization, chw, batch = s.precision, s.quantization, list(s.chw), s.batch
    generation = check_generation(s.generation, quantization if precision == "int8" else "explicit", precision)
    implicit = precision == "int8" and quantization == "implicit"
    out_dir = Path(out_dir)
    shutil.copyfile(s.onnx_path, out_dir / "model.onnx")
    files = ["model.onnx"]
    np.save(out_dir / "parity_inputs.npy", np.ascontiguousarray(img.parity_inputs, np.float32))
    np.save(out_dir / "reference_logits.npy", np.ascontiguousarray(img.reference, np.float32))
    files += ["parity_inputs.npy", "reference_logits.npy"]
    calib_info = None
    if implicit:
        if img.calib is None or len(img.calib) == 0:
            raise UserError("INT8 needs calibration images: pass --calib DIR (100-500 representative images)")
        np.save(out_dir / "calib.npy", np.ascontiguousarray(img.calib, np.float32))
        files.append("calib.npy")
        calib_info = {"file": "calib.npy", "count": int(len(img.calib)), "source": img.calib_source,
                      "cache": CALIB_CACHE, "calibrator": "IInt8EntropyCalibrator2"}
    eval_info = None
    if precision == "int8" and img.eval_images is not None and img.eval_reference is not None:
        per = max(1, img.eval_images[0].nbytes)
        n = min(len(img.eval_images), EVAL_BYTES_MAX // per)
        np.save(out_dir / "eval_images.npy", np.ascontiguousarray(img.eval_images[:n], np.float32))
        np.save(out_dir / "eval_reference.npy", np.ascontiguousarray(img.eval_reference[:n], np.float32))
        files += ["eval_images.npy", "eval_reference.npy"]
        if img.eval_labels is not None:
            np.save(out_dir / "eval_labels.npy", np.asarray(img.eval_labels[:n], np.int64))
            files.append("eval_labels.npy")
        eval_info = {"count": int(n), "labels": img.eval_labels is not None}
    gens = [10] if implicit else sorted(int(g) for g in (GENERATIONS if s.builds_with is None else s.builds_with))
    if generation is not None and generation not in gens:
        raise UserError(f"this model does not build with TensorRT {generation} (the profile's generation)")
    q = quantization if precision == "int8" else "explicit"
    args = {str(g): trtexec_args(precision, s.input_name, chw, s.dynamic, batch, s.workspace_mb, g, q) for g in gens}
    bundle = {
        "schema": BUNDLE_SCHEMA, "tool": f"partialdeploy {__version__}", "model": s.model_name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "precision": precision, "onnx": "model.onnx", "engine": ENGINE, "sidecar": SIDECAR,
        "tensorrt": {"expected": generation, "profile": s.profile, "builds_with": gens,
                     "typing": "weak (implicit INT8 calibration)" if implicit else "strong",
                     "int8_quantization": q if precision == "int8" else None},
        "onnx_precision": s.onnx_precision or {"precision": precision},
        "input": {"name": s.input_name, "shape": [None if s.dynamic else batch["opt"], *chw], "dtype": "float32"},
        "output": {"name": s.output_name, "dtype": "float32"},
        "dynamic_batch": s.dynamic, "batch": batch, "workspace_mb": int(s.workspace_mb),
        "timing_cache": TIMING_CACHE, "calibration": calib_info, "eval": eval_info,
        "parity": {"inputs": "parity_inputs.npy", "reference": "reference_logits.npy",
                   "tolerance": _tol_dict(s.tolerance) or precision},
        "onnx_check": s.ops_report, "trtexec": args, "trtexec_line": {g: shlex.join(a) for g, a in args.items()},
    }
    (out_dir / "build_engine.sh").write_text(_script(bundle))
    (out_dir / "build_engine.sh").chmod(0o755)
    (out_dir / "README.txt").write_text(_readme(bundle))
    files += ["build_engine.sh", "README.txt", "bundle.json"]
    bundle["files"] = files
    (out_dir / "bundle.json").write_text(json.dumps(bundle, indent=2) + "\n")
    return bundle


# trtexec prints "[TensorRT v100300]" (10.3.0) / "[TensorRT v110400]" (11.4.0) in its banner
_DETECT = """major="${TRT_MAJOR:-}"
if [ -z "$major" ]; then
  major=$(python3 -c 'import tensorrt; print(tensorrt.__version__.split(".")[0])' 2>/dev/null || true)
fi
if [ -z "$major" ]; then
  major=$(trtexec --help 2>&1 | sed -n 's/.*\\[TensorRT v\\([0-9][0-9]*\\)[0-9]\\{4\\}\\].*/\\1/p' | head -n 1)
fi"""


def _script(b: dict) -> str:
    t = b["tensorrt"]
    lines = ["#!/bin/sh", "# Build the TensorRT engine for this GPU (engines are not portable across GPUs or",
             "# TensorRT versions). Same build through the Python API, with the parity gate:",
             "#   partialdeploy build-engine .",
             "# The precision is in model.onnx; TensorRT 10 builds it with --stronglyTyped, TensorRT 11 as is.",
             "# TRT_MAJOR=10|11 overrides the detected TensorRT version; ANY_TENSORRT=1 skips the profile's check.",
             "set -e", 'cd "$(dirname "$0")"', _DETECT]
    if t["expected"] is not None:
        lines += [f'if [ -n "$major" ] && [ "$major" != "{t["expected"]}" ] && [ -z "${{ANY_TENSORRT:-}}" ]; then',
                  f'  echo "this bundle was exported for TensorRT {t["expected"]} (profile {t.get("profile") or "given"})'
                  f' but this device has TensorRT $major: re-export with a profile for TensorRT $major'
                  f' (or set ANY_TENSORRT=1 to build anyway)" >&2', "  exit 2", "fi"]
    if "10" in b["trtexec_line"] and b["calibration"]:
        lines += ['if [ "$major" = "10" ] && [ ! -f ' + CALIB_CACHE + ' ]; then',
                  f'  echo "{CALIB_CACHE} is missing: trtexec cannot calibrate from images. Run'
                  f' \\`partialdeploy build-engine .\\` (calibrates on calib.npy, writes {CALIB_CACHE}) first." >&2',
                  "  exit 2", "fi"]
    lines.append('case "$major" in')
    for g, line in b["trtexec_line"].items():
        lines += [f"  {g})", f"    {line}", "    ;;"]
    known = "/".join(b["trtexec_line"])
    lines += ["  *)", f'    echo "this bundle builds with TensorRT {known}; found ${{major:-no TensorRT}}'
              f' (set TRT_MAJOR={known.split("/")[0]} if trtexec is on PATH but its version was not detected)" >&2',
              "    exit 2", "    ;;", "esac"]
    return "\n".join(lines) + "\n"


def _readme(b: dict) -> str:
    shape = "x".join("N" if d is None else str(d) for d in b["input"]["shape"])
    bb = b["batch"]
    t = b["tensorrt"]
    gen = f"TensorRT {t['expected']} (profile {t.get('profile') or 'given'})" if t["expected"] else "TensorRT 10 or 11"
    lines = "\n".join(f"  TensorRT {g}:  {line}" for g, line in b["trtexec_line"].items())
    return f"""TensorRT build bundle ({b['model']}, {b['precision']}) from {b['tool']}, for {gen}

TensorRT engines only run on the GPU model and TensorRT version that built them, so the engine is
built on the device from this bundle. The precision is in model.onnx ({b['onnx_precision'].get('summary', b['precision'])}),
already proven in ONNX Runtime on CPU; TensorRT 10 builds it strongly typed (--stronglyTyped),
TensorRT 11 always does.

  model.onnx            TensorRT-ready ONNX (opset {(b.get('onnx_check') or {}).get('opset')}), input '{b['input']['name']}' {shape} float32,
                        output '{b['output']['name']}'
  build_engine.sh       the trtexec build for the installed TensorRT:
{lines}
  parity_inputs.npy     preprocessed real images and reference_logits.npy, the train-form logits on them
{'  calib.npy             INT8 calibration images (preprocessed, N x C x H x W float32)' if b['calibration'] else ''}
  bundle.json           all of the above, machine-readable

On the device (TensorRT + cuda-python):

  partialdeploy build-engine .          # build via the Python API, parity gate, writes {ENGINE} + {SIDECAR}
  sh build_engine.sh                    # or the same with trtexec{' (needs calib.cache from build-engine)' if b['calibration'] else ''}
  partialdeploy profile .               # latency on the device

Batch: {'dynamic, optimization profile min/opt/max = ' + f"{bb['min']}/{bb['opt']}/{bb['max']}" if b['dynamic_batch'] else f"static {bb['opt']}"}; workspace {b['workspace_mb']} MB;
the timing cache ({TIMING_CACHE}) is reused by later builds on the same device.
"""


# ---------------------------------------------------------------------------------------------------
# device side (TensorRT 10 or 11 Python API + cuda-python)

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


def _make_calibrator(trt, calib: np.ndarray, batch: int, cache: Path):
    """IInt8EntropyCalibrator2 over calib.npy (device buffer through cuda-python); the calibration
    cache is written to ``cache`` and reused by later builds (and by trtexec --calib)."""
    rt = cudart()

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.i = 0
            self.nbytes = int(calib[:batch].nbytes)
            self.ptr = check(rt.cudaMalloc(self.nbytes))

        def get_batch_size(self):
            return batch

        def get_batch(self, names):
            if self.i + batch > len(calib):
                return None
            chunk = np.ascontiguousarray(calib[self.i:self.i + batch], np.float32)
            self.i += batch
            check(rt.cudaMemcpy(self.ptr, chunk.ctypes.data, chunk.nbytes,
                                rt.cudaMemcpyKind.cudaMemcpyHostToDevice))
            return [int(self.ptr)]

        def read_calibration_cache(self):
            return cache.read_bytes() if cache.exists() else None

        def write_calibration_cache(self, data):
            cache.write_bytes(bytes(data))

        def free(self):
            if self.ptr:
                rt.cudaFree(self.ptr)
                self.ptr = 0

    return Calibrator()


def check_device_generation(b: dict, installed: str, any_tensorrt: bool = False) -> int:
    """The installed TensorRT's major version, checked against what the bundle was exported for."""
    t = b.get("tensorrt") or {}
    major = trt_major(installed)
    builds = [int(g) for g in (t.get("builds_with") or GENERATIONS)]
    expected = t.get("expected")
    if major not in builds:
        why = (" (its INT8 uses TensorRT 10's implicit calibration, removed in 11: re-export with the default "
               "explicit Q/DQ INT8)" if t.get("int8_quantization") == "implicit" else "")
        raise UserError(f"this bundle builds with TensorRT {'/'.join(map(str, builds))}, this device has TensorRT "
                        f"{installed}{why}; re-export it for TensorRT {major}")
    if expected is not None and int(expected) != major and not any_tensorrt:
        raise UserError(f"this bundle was exported for TensorRT {expected} (profile {t.get('profile') or 'given'}) "
                        f"but this device has TensorRT {installed}: re-export with a profile for TensorRT {major}, "
                        "or pass --any-tensorrt to build it anyway")
    return major


def create_network(trt, builder, major: int, strongly_typed: bool = True):
    """TensorRT 10: strong typing is opt-in (NetworkDefinitionCreationFlag.STRONGLY_TYPED); TensorRT 11:
    always on (the flag is deprecated and ignored), so no flag."""
    flags = 0
    if major == 10 and strongly_typed:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flags)


def build_engine(bundle_dir: Path, precision: str | None = None, workspace_mb: int | None = None,
                 progress=None, any_tensorrt: bool = False) -> dict:
    """Build ``model.engine`` from the bundle with the installed TensorRT's Python API (10 or 11), run
    the parity gate on the bundled reference, write the sidecar JSON. Returns the sidecar content.

    RuntimeUnavailable (exit 2) where TensorRT or the GPU is missing; UserError (exit 2) when the
    bundle was made for the other TensorRT generation; VerificationError (exit 1) when the engine
    misses the tolerance."""
    say = progress or (lambda msg: None)
    bundle_dir = Path(bundle_dir)
    b = load_bundle(bundle_dir)
    verify_inside_export(bundle_dir)  # the bundle's files against the export's manifest.json, when it has one
    onnx_file = safe_join(bundle_dir, b.get("onnx"), "bundle ONNX path")
    prec = str(precision or b.get("precision") or "").lower()
    if prec not in ("fp32", "fp16", "int8"):
        raise UserError(f"--precision must be fp32, fp16 or int8, not {prec!r}")
    if prec != b.get("precision"):
        raise UserError(f"this bundle's model.onnx is {b.get('precision')} (the precision is in the ONNX, strongly "
                        f"typed): re-export it with --precision {prec}")
    t = b.get("tensorrt") or {}
    implicit = t.get("int8_quantization") == "implicit"
    if implicit and not (bundle_dir / "calib.npy").exists():
        raise UserError("this bundle has no calib.npy: re-export it with --precision int8 --calib DIR")
    ws = int(workspace_mb or b.get("workspace_mb") or DEFAULT_WORKSPACE_MB)
    dev = device_info()  # raises RuntimeUnavailable here
    import tensorrt as trt

    major = check_device_generation(b, trt.__version__, any_tensorrt)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = create_network(trt, builder, major, strongly_typed=not implicit)
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
    calibrator = None
    if implicit:  # TensorRT 10 only (check_device_generation refused 11): weak typing + calibrator
        config.set_flag(trt.BuilderFlag.FP16)
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
    typing = "weak, implicit INT8" if implicit else "strongly typed"
    say(f"building {prec} engine (TensorRT {trt.__version__}, {typing}, {dev['gpu']}, "
        f"sm {dev['compute_capability']})")
    t0 = time.perf_counter()
    try:
        blob = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.free()
    if blob is None:
        raise UserError(f"TensorRT failed to build the {prec} engine (see the TensorRT log above)")
    build_s = time.perf_counter() - t0
    # the engine is gated before it is kept: a candidate file first, model.engine only once it passed
    import shutil
    import tempfile

    cand_dir = Path(tempfile.mkdtemp(prefix=".engine-candidate-", dir=bundle_dir))  # no stale sidecar beside it
    cand = cand_dir / ENGINE
    cand.write_bytes(bytes(blob))
    tc_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    sidecar = {**dev, "tensorrt_major": major, "typing": typing, "precision": prec,
               "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "build_seconds": round(build_s, 2), "workspace_mb": ws, "dynamic_batch": b["dynamic_batch"],
               "batch": bb, "input": b["input"], "timing_cache": tc_path.name,
               "calibration_cache": CALIB_CACHE if implicit else None}
    try:
        sidecar["parity"] = [p.to_dict() for p in verify_engine(bundle_dir, b, prec, sidecar, engine=cand)]
        os.replace(cand, bundle_dir / ENGINE)
    finally:  # a failed gate (exit 1), Ctrl-C, anything: no engine of this build is kept
        shutil.rmtree(cand_dir, ignore_errors=True)
    (bundle_dir / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")
    return sidecar


def verify_engine(bundle_dir: Path, b: dict, precision: str, sidecar: dict,
                  engine: Path | None = None) -> list[ParityResult]:
    """Parity gate of the engine (``engine``, default the bundle's model.engine) on the bundled
    reference (and held-out set for INT8): the engine is opened through its runner and gated by the
    one gate every artifact goes through (partialdeploy.verification)."""
    from types import SimpleNamespace

    from partialdeploy import parity
    from partialdeploy.runners.tensorrt import TensorRTRunner  # one direction: the runner never imports this module
    from partialdeploy.verification import parity_gates, runner_logits

    dev = device_info()
    check_engine_compat(sidecar, dev["tensorrt_version"], dev["compute_capability"])
    tol = b["parity"].get("tolerance") if precision == b["precision"] else precision
    tol = parity.Tolerance(**tol) if isinstance(tol, dict) else (tol or precision)
    held = (bundle_dir / "eval_images.npy").exists()
    labels = bundle_dir / "eval_labels.npy"
    ctx = SimpleNamespace(  # the bundle's images and references, shaped like an export context
        precision=precision, tolerances={precision: tol},
        parity_inputs=np.load(bundle_dir / "parity_inputs.npy"), reference=np.load(bundle_dir / "reference_logits.npy"),
        eval_images=np.load(bundle_dir / "eval_images.npy") if held else None,
        eval_reference=np.load(bundle_dir / "eval_reference.npy") if held else None,
        eval_labels=np.load(labels) if held and labels.exists() else None)
    with TensorRTRunner(engine or bundle_dir / ENGINE) as r:
        return parity_gates(ctx, runner_logits(r, 1 if b["dynamic_batch"] else b["batch"]["opt"]),
                            f"ONNX -> TensorRT {precision}")
