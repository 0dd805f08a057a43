"""TensorRT on the device: the bundle's build settings and ``partialdeploy build-engine``.

TensorRT engines are tied to the GPU (compute capability) and the TensorRT version that built them,
so ``export --target tensorrt`` writes a *bundle* (``bundle.py``) that holds everything needed
to build the engine on the device — the TensorRT-ready ONNX, the exact ``trtexec`` line per TensorRT
generation, calibration images for implicit INT8 and a reference (images + train-form logits) for the
parity gate — and ``build_engine`` does the same build through the TensorRT Python API, then proves the
engine against the bundled reference.

Three TensorRT generations are in the field: 8.5/8.6 (JetPack 5.x and 6.0: most Jetsons, Xavier stays
there), 10.x (JetPack 6.1+) and 11.x (current release), which removed weak typing (``--fp16/--int8/--calib``,
``BuilderFlag.FP16/INT8``, INT8 calibrators). So the precision travels in ``model.onnx``: a strongly
typed mixed-precision model for fp16, Q/DQ nodes for INT8 (explicit quantization, since TensorRT 8.0).
TensorRT 11 builds it as is; 10 with ``--stronglyTyped`` / ``NetworkDefinitionCreationFlag.STRONGLY_TYPED``;
8.x, which has no strong typing, with the builder flag (``--fp16`` with the ONNX's fp32 nodes pinned by
precision constraints; ``--int8`` enables the Q/DQ nodes). The old implicit-quantization INT8 path
(calibrator + calibration cache) is kept only for bundles that target TensorRT 8 or 10 and ask for it
(``int8_quantization: implicit``).

This module never imports torch (or onnx, except for the optional operator check at export time):
the device may have only TensorRT, cuda-python and numpy.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from partialdeploy.backends.tensorrt.bundle_text import reexport_hint
from partialdeploy.backends.tensorrt.cuda import SIDECAR, check, check_engine_compat, cudart, device_info
from partialdeploy.backends.tensorrt.onnx_support import GENERATIONS
from partialdeploy.errors import UserError
from partialdeploy.records import ParityResult
from partialdeploy.integrity import safe_join, verify_inside_export

BUNDLE_SCHEMA = "partialdeploy.tensorrt-bundle/2"
ENGINE = "model.engine"
TIMING_CACHE = "timing.cache"
CALIB_CACHE = "calib.cache"
DEFAULT_WORKSPACE_MB = 1024
DEFAULT_BATCH_RANGE = {"min": 1, "opt": 8, "max": 32}
QUANTIZATION_MODES = ("explicit", "implicit")  # INT8: Q/DQ in the ONNX (every generation) / calibrator (8, 10)
IMPLICIT_GENERATIONS = (8, 10)  # the generations that still have INT8 calibrators


def batch_range(requested: dict | None, dynamic: bool, static_batch: int = 1) -> dict:
    """min/opt/max batch for the optimization profile (dynamic) or the fixed batch (static)."""
    if not dynamic:
        return {"min": static_batch, "opt": static_batch, "max": static_batch}
    r = dict(DEFAULT_BATCH_RANGE)
    r.update({k: int(v) for k, v in (requested or {}).items() if k in r and v is not None})
    if not 1 <= r["min"] <= r["opt"] <= r["max"]:
        raise UserError(f"batch range must satisfy 1 <= min <= opt <= max, got {r}")
    return r


def _dims(b: int, chw) -> str:
    return "x".join(str(d) for d in (b, *chw))


def trt_major(version) -> int:
    """8 from "8.6.2.3", 10 from "10.3.0.26", 11 from "11.4.0"; UserError for anything else."""
    try:
        major = int(str(version).strip().split(".")[0])
    except ValueError:
        raise UserError(f"cannot read a TensorRT version from {version!r}") from None
    if major not in GENERATIONS:
        raise UserError(f"TensorRT {version} is not supported: bundles build with TensorRT "
                        f"{', '.join(map(str, GENERATIONS[:-1]))} or {GENERATIONS[-1]} (8 means 8.5 or 8.6)")
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
        if generation not in IMPLICIT_GENERATIONS:
            raise UserError("implicit INT8 quantization (calibrator + calibration cache) exists only in TensorRT 8 "
                            "and 10 (11 removed it): set tensorrt: 8 or 10 in the profile, or use the default "
                            "explicit Q/DQ INT8")
    return generation


def trtexec_args(precision: str, input_name: str, chw, dynamic: bool, batch: dict,
                 workspace_mb: int = DEFAULT_WORKSPACE_MB, generation: int = 11, quantization: str = "explicit",
                 onnx: str = "model.onnx", engine: str = ENGINE, timing_cache: str = TIMING_CACHE,
                 calib_cache: str = CALIB_CACHE, fp32_layers=()) -> list[str]:
    """The exact trtexec invocation that builds the bundle's engine with TensorRT ``generation``.

    The precision is in model.onnx (strongly typed fp16 / Q/DQ INT8). TensorRT 10 builds it with
    ``--stronglyTyped`` (its default is weak typing), TensorRT 11 with nothing (always strongly typed, the
    precision flags are gone). TensorRT 8.5/8.6 has no strong typing: fp16 needs the builder flag
    ``--fp16``, with ``fp32_layers`` (the nodes the fp16 ONNX keeps in fp32: sums of squares) pinned to
    fp32 by precision constraints, and the Q/DQ INT8 ONNX needs ``--int8`` (explicit quantization is
    enabled by the flag there; the float layers stay fp32). Only the implicit-quantization path (8 or 10,
    on request) uses ``--int8 --fp16 --calib``."""
    if precision not in ("fp32", "fp16", "int8"):
        raise UserError(f"TensorRT precision must be fp32, fp16 or int8, not {precision!r}")
    generation = check_generation(generation, quantization, precision)
    if generation is None:
        raise UserError("trtexec_args needs a TensorRT generation (8, 10 or 11)")
    a = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}"]
    if quantization == "implicit":
        # fp16 too: layers TensorRT cannot run in int8 fall back to fp16 rather than fp32
        a += ["--int8", "--fp16", f"--calib={calib_cache}"]
    elif generation == 10:
        a.append("--stronglyTyped")
    elif generation == 8 and precision == "fp16":
        a.append("--fp16")
        if fp32_layers:
            a += ["--precisionConstraints=obey", "--layerPrecisions=" + ",".join(f"{n}:fp32" for n in fp32_layers),
                  "--layerOutputTypes=" + ",".join(f"{n}:fp32" for n in fp32_layers)]
    elif generation == 8 and precision == "int8":
        a.append("--int8")
    if precision == "fp32" and generation in (8, 10):
        # TF32 is on by default there: Ampere+ GPUs (Orin included) would run the fp32 convolutions with a
        # 10-bit mantissa, far outside the fp32 gate (relative 1e-4)
        a.append("--noTF32")
    if dynamic:
        a += [f"--minShapes={input_name}:{_dims(batch['min'], chw)}",
              f"--optShapes={input_name}:{_dims(batch['opt'], chw)}",
              f"--maxShapes={input_name}:{_dims(batch['max'], chw)}"]
    # trtexec 8.5 reads pool sizes in MiB without a unit suffix; 10 and 11 take the "M" suffix
    a += [f"--memPoolSize=workspace:{int(workspace_mb)}{'' if generation == 8 else 'M'}",
          f"--timingCacheFile={timing_cache}"]
    return a


# ---------------------------------------------------------------------------------------------------
# device side (TensorRT 8.5+, 10 or 11 Python API + cuda-python)

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
        why = (f" (its INT8 uses TensorRT {'/'.join(map(str, builds))}'s implicit calibration, which 11 removed): "
               "re-export with the default explicit Q/DQ INT8;" if t.get("int8_quantization") == "implicit" else ":")
        raise UserError(f"this bundle builds with TensorRT {'/'.join(map(str, builds))}, this device has TensorRT "
                        f"{installed}{why} {reexport_hint(major)}")
    if expected is not None and int(expected) != major and not any_tensorrt:
        raise UserError(f"this bundle was exported for TensorRT {expected} (profile {t.get('profile') or 'given'}) "
                        f"but this device has TensorRT {installed}: {reexport_hint(major)}, "
                        "or pass --any-tensorrt to build this bundle anyway")
    return major


def create_network(trt, builder, major: int, strongly_typed: bool = True):
    """TensorRT 8: explicit batch must be asked for (EXPLICIT_BATCH; the ONNX parser needs it) and there
    is no strong typing; 10: strong typing is opt-in (STRONGLY_TYPED), explicit batch the only mode;
    11: always strongly typed (the flag is deprecated and ignored), so no flag."""
    flags = 0
    if major == 8:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    elif major == 10 and strongly_typed:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return builder.create_network(flags)


def weak_typing_flags(trt, config, network, precision: str, fp32_nodes=()) -> list[str]:
    """TensorRT 8 (no strong typing) building the precision-carrying ONNX: fp16 by the FP16 builder
    flag with the layers of the ONNX's fp32 nodes (sums of squares) pinned to fp32 — precision and
    output types, obeyed —; the Q/DQ INT8 ONNX by the INT8 flag (explicit quantization; float layers
    stay fp32). Returns the layer names pinned."""
    pinned = []
    if precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
        keep = set(fp32_nodes or ())
        if keep:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            for i in range(network.num_layers):
                layer = network.get_layer(i)
                if layer.name in keep:
                    layer.precision = trt.float32
                    for j in range(layer.num_outputs):
                        layer.set_output_type(j, trt.float32)
                    pinned.append(layer.name)
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    return pinned


def build_engine(bundle_dir: Path, precision: str | None = None, workspace_mb: int | None = None,
                 progress=None, any_tensorrt: bool = False, gate: bool = True) -> dict:
    """Build ``model.engine`` from the bundle with the installed TensorRT's Python API (8.5+, 10, 11), run
    the parity gate on the bundled reference, write the sidecar JSON. Returns the sidecar content.
    ``gate=False`` only builds: for ``export`` on a GPU, whose pipeline gates the engine as the artifact
    it is (partialdeploy.verification; a failed gate discards the whole staged bundle).

    RuntimeUnavailable (exit 2) where TensorRT or the GPU is missing; UserError (exit 2) when the
    bundle was made for the other TensorRT generation; VerificationError (exit 1) when the engine
    misses the tolerance."""
    say = progress or (lambda msg: None)
    bundle_dir = Path(bundle_dir)
    b, onnx_file, prec, implicit = _checked_bundle(bundle_dir, precision)
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
    if prec == "fp32" and hasattr(trt.BuilderFlag, "TF32"):  # fp32 means fp32, not TF32 (on by default)
        config.clear_flag(trt.BuilderFlag.TF32)
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
    if major == 8 and not implicit:
        weak_typing_flags(trt, config, network, prec, (b.get("onnx_precision") or {}).get("kept_fp32"))
    if implicit:  # TensorRT 8 or 10 (check_device_generation refused 11): weak typing + calibrator
        calibrator = _implicit_int8(trt, config, b, bundle_dir, profile)
    typing = ("weak, implicit INT8" if implicit else "weak, builder flag (TensorRT 8)" if major == 8
              else "strongly typed")
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
    sidecar = {**dev, "tensorrt_major": major, "typing": typing, "precision": prec,
               "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "build_seconds": round(build_s, 2), "workspace_mb": ws, "dynamic_batch": b["dynamic_batch"],
               "batch": bb, "input": b["input"], "timing_cache": tc_path.name,
               "calibration_cache": CALIB_CACHE if implicit else None}
    tc_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    _keep_engine(bundle_dir, b, prec, sidecar, bytes(blob), gate)
    return sidecar


def _checked_bundle(bundle_dir: Path, precision: str | None) -> tuple[dict, Path, str, bool]:
    """(bundle.json, its ONNX, the precision, implicit INT8?) once the bundle and the asked precision
    are checked (UserError, one line, before TensorRT is touched)."""
    b = load_bundle(bundle_dir)
    verify_inside_export(bundle_dir)  # the bundle's files against the export's manifest.json, when it has one
    from partialdeploy.backends.tensorrt.bundlecheck import problem

    why = problem(b)  # every field the build reads, type-checked before it is used
    if why:
        raise UserError(f"{bundle_dir / 'bundle.json'} is damaged ({why}); re-export the bundle")
    onnx_file = safe_join(bundle_dir, b.get("onnx"), "bundle ONNX path")
    prec = str(precision or b.get("precision") or "").lower()
    if prec not in ("fp32", "fp16", "int8"):
        raise UserError(f"--precision must be fp32, fp16 or int8, not {prec!r}")
    if prec != b.get("precision"):
        raise UserError(f"this bundle's model.onnx is {b.get('precision')} (the precision is in the ONNX, strongly "
                        f"typed): re-export it with --precision {prec}")
    implicit = (b.get("tensorrt") or {}).get("int8_quantization") == "implicit"
    if implicit and not (bundle_dir / "calib.npy").exists():
        raise UserError("this bundle has no calib.npy: re-export it with --precision int8 --calib DIR")
    return b, onnx_file, prec, implicit


def _implicit_int8(trt, config, b: dict, bundle_dir: Path, profile):
    """TensorRT 8/10's implicit INT8: the fp16 and int8 builder flags and an entropy calibrator over the
    bundle's calib.npy (returned: free it after the build)."""
    config.set_flag(trt.BuilderFlag.FP16)
    config.set_flag(trt.BuilderFlag.INT8)
    calib = np.load(bundle_dir / "calib.npy")
    bb = b["batch"]
    # a static engine calibrates at its batch; a dynamic one at up to 8 images per batch
    cb = bb["opt"] if not b["dynamic_batch"] else max(1, min(8, bb["max"], len(calib)))
    if len(calib) < cb:
        raise UserError(f"calib.npy has {len(calib)} images, fewer than the batch {cb}: re-export with more")
    calibrator = _make_calibrator(trt, calib, cb, bundle_dir / CALIB_CACHE)
    config.int8_calibrator = calibrator
    if profile is not None:
        config.set_calibration_profile(profile)
    return calibrator


def _keep_engine(bundle_dir: Path, b: dict, prec: str, sidecar: dict, blob: bytes, gate: bool) -> None:
    """Write the built engine as ``model.engine`` with its sidecar. Gated, it is a candidate file first
    and becomes ``model.engine`` only once it passed (the parity goes into the sidecar)."""
    import shutil
    import tempfile

    cand_dir = Path(tempfile.mkdtemp(prefix=".engine-candidate-", dir=bundle_dir))  # no stale sidecar beside it
    cand = cand_dir / ENGINE
    cand.write_bytes(blob)
    try:
        if gate:
            sidecar["parity"] = [p.to_dict() for p in verify_engine(bundle_dir, b, prec, sidecar, engine=cand)]
        os.replace(cand, bundle_dir / ENGINE)
    finally:  # a failed gate (exit 1), Ctrl-C, anything: no engine of this build is kept
        shutil.rmtree(cand_dir, ignore_errors=True)
    (bundle_dir / SIDECAR).write_text(json.dumps(sidecar, indent=2) + "\n")


def verify_engine(bundle_dir: Path, b: dict, precision: str, sidecar: dict,
                  engine: Path | None = None) -> list[ParityResult]:
    """Parity gate of the engine (``engine``, default the bundle's model.engine) on the bundled
    reference (and held-out set for INT8): the engine is opened through its runner and gated by the
    one gate every artifact goes through (partialdeploy.verification)."""
    from types import SimpleNamespace

    from partialdeploy import parity
    from partialdeploy.backends.tensorrt.runner import TensorRTRunner  # one direction: the runner never imports this module
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
