"""TensorRT target.

The precision travels in the ONNX, so one bundle builds with TensorRT 11 (strong typing always on;
``--fp16/--int8/--calib`` and the calibrators are gone), 10 (``--stronglyTyped``) and 8.5/8.6 (JetPack 5.x
and 6.0: no strong typing, so the builder flag ``--fp16`` with the fp32 nodes pinned, or ``--int8``,
which turns the Q/DQ nodes on):

fp32: the verified deploy ONNX. fp16 and int8 (``precision.py``):
fp16: a strongly typed mixed-precision ONNX (onnxconverter-common ``convert_float_to_float16``, inputs
      and outputs kept fp32, the sums of squares / square roots of the channel gates kept fp32 so they
      cannot overflow fp16's 65504).
int8: an explicit-quantization ONNX of the verified ONNX with the attention's q/k/v projections fused
      into one MatMul + Split (``exporting.onnx_forms.int8_source``, as for the ONNX Runtime and OpenVINO
      INT8 artifacts; exact): Q/DQ nodes from ``onnxruntime.quantization.quantize_static``
      (symmetric int8 activations, per-channel symmetric int8 weights, float bias, Q/DQ only on the
      inputs of Conv / MatMul / Gemm where TensorRT fuses them), calibrated on the calibration images
      here (min-max by default, ``ort_calibration`` picks entropy / percentile); Conv/MatMul/Gemm outputs
      are not quantized, so the float residual adds and gates stay float. No calibrator and no
      calibration cache on the device. Nodes of blocks kept in float (the
      INT8 fallback) get no Q/DQ. The implicit quantization of TensorRT 8 and 10 (IInt8EntropyCalibrator2
      on the device) stays available on request, only for bundles that target one of them
      (``int8_quantization: implicit``).

These ONNX files run in ONNX Runtime on CPU here and pass their parity gates (fp16 cosine; INT8
agreement and accuracy on the held-out labelled images) before the bundle is written, so a bundle is
proven before any GPU sees it. Where ``tensorrt`` imports and an NVIDIA GPU is visible, the engine is
also built right away (``build.build_engine``, without its own gate): the pipeline gates it through the
TensorRT runner like any artifact (partialdeploy.verification), once.
"""

from __future__ import annotations

import time
from pathlib import Path

from partialdeploy.backends.target import ExportContext, Target
from partialdeploy.records import Artifact
from partialdeploy.backends.tensorrt.build import (CALIB_CACHE, DEFAULT_WORKSPACE_MB, ENGINE, batch_range,
                                                   build_engine, check_generation)
from partialdeploy.backends.tensorrt.cuda import SIDECAR
from partialdeploy.backends.tensorrt.bundle import BundleImages, BundleSpec, write_bundle
from partialdeploy.backends.tensorrt.onnx_support import GENERATIONS, onnx_ops_report
from partialdeploy.backends.tensorrt.precision import to_fp16, to_qdq_int8
from partialdeploy.errors import UserError
from partialdeploy.images import preprocessing_record
from partialdeploy.records import ParityResult
from partialdeploy.verification import verify_file

BUNDLE_VERIFIED = "bundle (build the engine on the device)"
def _buildable(rep: dict, gens, generation, onnx_name: str, notes: list[str]) -> list[int]:
    """The generations of ``gens`` whose ONNX parser takes the model (``rep``: onnx_ops_report). A problem
    with the profile's ``generation`` — or with every generation — is a UserError; with another one, a note."""
    builds, problems = [], []
    for g in gens:
        r = rep["by_generation"][str(g)]
        problem = None
        if r["unsupported"]:
            problem = (f"TensorRT {g}'s ONNX parser does not support {', '.join(r['unsupported'])} in "
                       f"{onnx_name}: re-export without them (or extend TensorRT with a plugin)")
        elif not r["opset_supported"]:
            lo, hi = r["opsets"]
            problem = (f"ONNX opset {rep['opset']} is outside TensorRT {g}'s {lo}-{hi}: "
                       f"re-export with --opset {min(hi, 17)}")
        if problem and generation == g:
            raise UserError(problem)
        if problem:
            problems.append(problem)
            notes.append(f"not buildable with TensorRT {g}: {problem.split(':')[0]}")
        else:
            builds.append(g)
        if g == 8 and not problem and r.get("needs_8_6"):
            notes.append(f"TensorRT 8.5 (JetPack 5) cannot parse {', '.join(r['needs_8_6'])} (added in 8.6, JetPack "
                         "6.0): for 8.5 re-export with --opset 16, which writes it as basic operators")
    if not builds:
        raise UserError(problems[0])
    return builds


class TensorRTTarget(Target):
    name = "tensorrt"
    precisions = ("fp32", "fp16", "int8")
    carries_images = True  # the bundle: its engine is gated on the device, on these images

    requires = ("onnx",)  # the bundle's operator check; TensorRT itself is only needed on the device

    @classmethod
    def check_env(cls) -> str | None:
        return None if cls.is_available() else "onnx is not installed: pip install onnx"

    @staticmethod
    def can_build_here() -> bool:
        from partialdeploy.backends.tensorrt.cuda import why_unavailable

        return why_unavailable() is None

    def export(self, ctx: ExportContext, out_dir: Path) -> Artifact:
        prec = ctx.precision  # one of self.precisions (Target.refusal, at the request)
        opts = ctx.options
        quant = str(opts.runtime_option("int8_quantization", "explicit")).lower()
        generation = check_generation(opts.runtime_option("tensorrt"), quant if prec == "int8" else "explicit", prec)
        implicit = prec == "int8" and quant == "implicit"
        # the precision is in the ONNX, so an explicit bundle builds with either generation whose parser takes
        # it; the profile's generation is recorded as the one expected (the other builds only on request)
        gens = [generation] if implicit else list(GENERATIONS)
        static_b = opts.batch
        brange = batch_range(opts.batch_range, ctx.dynamic_batch, static_b)
        ws = int(opts.runtime_option("workspace_mb", DEFAULT_WORKSPACE_MB))
        out_dir = Path(out_dir)
        work = out_dir / "model.precision.part.onnx"
        fused = out_dir / "model.fused.part.onnx"  # the Q/DQ source: q/k/v fused (exporting.onnx_forms)
        notes: list[str] = []
        form: dict = {}  # extra["deploy_form"] of the Q/DQ ONNX, as the other INT8 targets record it
        fb = None  # INT8 fallback result (explicit Q/DQ INT8)
        t0 = time.perf_counter()
        try:
            if prec == "fp16":
                info = to_fp16(ctx.onnx_path, work)
            elif prec == "int8" and not implicit:
                info, fb = self._qdq_until_gate(ctx, work, fused, form, notes)
            else:
                info = {"precision": prec, "summary": "fp32" if prec == "fp32" else
                        f"fp32 ONNX; INT8 by TensorRT {generation}'s implicit calibration on the device"}
            onnx_file = work if work.exists() else Path(ctx.onnx_path)
            info["convert_seconds"] = round(time.perf_counter() - t0, 3)
            rep = onnx_ops_report(onnx_file, gens)
            builds = _buildable(rep, gens, generation, ctx.onnx_path.name, notes)
            parity = []
            if fb is not None:  # the Q/DQ ONNX already passed the INT8 gate in ONNX Runtime (CPU)
                parity = list(fb.attempts[-1].results)
            elif onnx_file is work:  # the precision-carrying ONNX runs here, in ONNX Runtime on CPU
                parity = self._prove_in_ort(ctx, onnx_file, prec)
            bundle = write_bundle(out_dir, BundleSpec(
                onnx_path=onnx_file, precision=prec, images=BundleImages.of(ctx),
                chw=[int(ctx.spec.in_chans or 3), ctx.img_size, ctx.img_size], batch=brange,
                dynamic=ctx.dynamic_batch, input_name=ctx.input_name, output_name=ctx.output_name, workspace_mb=ws,
                tolerance=ctx.tolerances.get(prec), ops_report=rep, model_name=ctx.spec.name, generation=generation,
                quantization=quant, onnx_precision=info, profile=opts.profile, builds_with=builds,
                preprocessing=preprocessing_record(ctx.spec), labels=ctx.spec.labels,
                num_classes=ctx.spec.num_classes, wheel=opts.runtime_option("bundle_wheel")))
        finally:
            work.unlink(missing_ok=True)
            fused.unlink(missing_ok=True)
            for f in out_dir.glob("model.int8-*.part.onnx"):  # fallback attempts
                f.unlink(missing_ok=True)
        files = list(bundle["files"])
        inputs = [{"name": ctx.input_name, "shape": bundle["input"]["shape"], "dtype": "float32"}]
        out_shape = [bundle["input"]["shape"][0], ctx.spec.num_classes]
        outputs = [{"name": ctx.output_name, "shape": out_shape, "dtype": "float32"}]
        extra = {"trtexec": bundle["trtexec_line"], "tensorrt": bundle["tensorrt"], "onnx_precision": info,
                 "batch": brange, "workspace_mb": ws, "onnx_ops_checked": len(rep["ops"]), "onnx_opset": rep["opset"],
                 **form}
        notes.append(f"model.onnx: {info['summary']}" + (" (proven in ONNX Runtime on CPU)" if parity else ""))
        if fb is not None:
            extra["int8_fallback"] = fb.to_dict()
            if fb.note():
                notes.append(fb.note())
        if implicit:
            notes.append(f"INT8 by TensorRT {generation}'s implicit quantization (IInt8EntropyCalibrator2, deprecated "
                         "in 10, removed in 11); trtexec needs the calib.cache that build-engine writes")
        gen_note = f"TensorRT {generation or '/'.join(map(str, bundle['tensorrt']['builds_with']))}"
        if self.can_build_here():  # only build: the pipeline gates the engine like any artifact (verification)
            side = build_engine(out_dir, prec, ws, gate=False)
            files += [ENGINE, SIDECAR, "timing.cache"] + ([CALIB_CACHE] if implicit else [])
            return Artifact(target=self.name, precision=prec, path=".", files=files, inputs=inputs, outputs=outputs,
                            parity=parity, verified="converted", runtime_version=side["tensorrt_version"],
                            notes=notes, extra={**extra, "gpu": side["gpu"],
                                                "compute_capability": side["compute_capability"]})
        notes.append(f"no TensorRT/NVIDIA GPU here: build the engine on the device ({gen_note}) with "
                     "`partialdeploy build-engine DIR` (parity gate included) or `sh DIR/build_engine.sh`")
        return Artifact(target=self.name, precision=prec, path=".", files=files, inputs=inputs, outputs=outputs,
                        parity=parity, verified=BUNDLE_VERIFIED, runtime_version=None, notes=notes, extra=extra)

    @staticmethod
    def _qdq_until_gate(ctx: ExportContext, dst: Path, fused: Path, form: dict, notes: list[str]):
        """The Q/DQ INT8 ONNX, through the INT8 fallback loop (partialdeploy.exporting.int8fallback): plain PTQ
        first; when it misses the INT8 gate in ONNX Runtime (CPU), the blocks that add the most
        quantization error are left without Q/DQ (TensorRT then runs them in float: strong typing
        keeps them fp32) until the gate holds. Every attempt quantizes the same source, written once to
        ``fused`` (the caller removes it): the verified ONNX with the attention's q/k/v projections fused
        (``exporting.onnx_forms.int8_source``: one Q/DQ MatMul instead of three, as the ONNX Runtime and
        OpenVINO INT8 artifacts have; the fused nodes keep their block's name, so excluded blocks stay
        float). Records the form in ``form["deploy_form"]``. Returns (Q/DQ summary of the kept model,
        FallbackResult); VerificationError (exit 1) with every attempt's numbers when no mix holds."""
        from partialdeploy.backends.onnxruntime.quantizer import calibration_method, ort_quantizer
        from partialdeploy.exporting.int8fallback import quantize_until_gate
        from partialdeploy.exporting.onnx_forms import int8_source

        opts = ctx.options
        method = calibration_method(opts)
        source, n_fused = int8_source(ctx.onnx_path, fused, form, notes)
        infos: dict = {}

        def quantize(float_blocks):
            path = dst.with_name(f"model.int8-{len(infos) + 1}.part.onnx")
            infos[path] = to_qdq_int8(source, path, ctx.calib, ctx.input_name,
                                      exclude=list(float_blocks), method=method)
            return path

        fb = quantize_until_gate(ctx, ort_quantizer(ctx, "tensorrt", quantize),
                                 "TensorRT-ready int8 ONNX in ONNX Runtime (CPU)",
                                 enabled=opts.int8_fallback)
        if fb.latency_ms:  # no GPU here: the cost is timed where the Q/DQ ONNX is proven
            fb.latency_ms["method"] = ("ONNX Runtime CPU on the Q/DQ ONNX (the device's TensorRT latency differs); "
                                       + fb.latency_ms["method"])
        fb.handle.replace(dst)
        info = dict(infos[fb.handle])
        info["fallback_float_blocks"] = fb.float_blocks
        info["deploy_form"] = form["deploy_form"]  # bundle.json's onnx_precision: the form TensorRT builds
        if n_fused:
            info["summary"] += f"; {n_fused} group(s) of q/k/v projections fused into one MatMul + Split"
        return info, fb

    @staticmethod
    def _prove_in_ort(ctx: ExportContext, onnx_file: Path, prec: str) -> list[ParityResult]:
        """Parity gates of the fp16 / Q/DQ ONNX in ONNX Runtime (CPU) on the real images, through the
        one run-and-gate path (``verification.verify_file``): TensorRT cannot run here, the file that
        carries the precision can. Raises VerificationError on a breach (a damaged model is never
        bundled as proven)."""
        from partialdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner

        return verify_file(ctx, OnnxRuntimeRunner, onnx_file, f"TensorRT-ready {prec} ONNX in ONNX Runtime (CPU)",
                           prec)
