"""ONNX Runtime target (CPU).

fp32: ``model.onnx`` = the verified ONNX after ONNX Runtime's *basic* offline graph optimization
      (constant folding, redundant-node elimination, semantics-preserving fusions). Why basic and not
      extended/all: basic rewrites keep standard ONNX operators only, so the file stays portable
      (any ORT version/execution provider, and other ONNX consumers); extended/all levels write
      ``com.microsoft`` fused kernels and CPU-specific layouts (NCHWc) that tie the file to one ORT
      build and provider. The remaining extended/layout fusions are applied at session creation
      (``graph_optimization_level: all`` recorded in the artifact), where they are cheap and always
      match the runtime that loads the model. If the optimized graph were ever to contain a non-standard
      operator, the unoptimized verified ONNX is written instead (noted).
fp16: not offered: ONNX Runtime's CPU provider has no fp16 kernels for most of these operators (it
      would insert casts and run slower than fp32) — use openvino or tensorrt for fp16.
int8: static QDQ quantization (``quant_pre_process`` then ``quantize_static``) calibrated on the
      calibration images, per-channel int8 weights, uint8 activations (U8S8, what ORT's x86 kernels
      with VNNI run fastest), of the verified ONNX with q/k/v fused and every GELU as one ``Gelu`` op
      (opset 20), Q/DQ on the convolutions and matrix products (ONNX Runtime's own default placement,
      every op it knows, is the measured alternative).
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from partialdeploy.backends.onnxruntime.quantizer import block_nodes, calibration_method, ort_quantizer, quantize_qdq
from partialdeploy.backends.target import ExportContext, Target, quiet
from partialdeploy.records import Artifact
from partialdeploy.errors import RuntimeUnavailable, UserError, VerificationError, first_line
from partialdeploy.exporting.onnx import io_meta
from partialdeploy.verification import Proof, open_options, stage_name, static_batch

INSTALL = "pip install onnxruntime onnx"
FP16_MESSAGE = ("onnxruntime (CPU) does not support fp16: most operators have no fp16 CPU kernel; "
                "use --target openvino or --target tensorrt for fp16, or fp32/int8 here")


def optimize_offline(src: Path, dst: Path, level: str = "basic") -> None:
    """Write ONNX Runtime's offline-optimized graph of ``src`` to ``dst``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                   "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED}[level]
    so.optimized_model_filepath = str(dst)
    so.log_severity_level = 3
    ort.InferenceSession(str(src), so, providers=["CPUExecutionProvider"])


def nonstandard_ops(path: Path) -> list[str]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    return sorted({f"{n.domain}::{n.op_type}" for n in m.graph.node if n.domain not in ("", "ai.onnx")})


def node_count(path: Path) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


# Q/DQ placement: the default puts Q/DQ on the inputs and outputs of the convolutions and matrix
# products only, the element-wise ops between them (the channel gate's multiply, residual adds, concat,
# GELU) run in float on the dequantized tensors; the alternative is ONNX Runtime's default, every op
# its quantizer knows (QLinearMul/Add/Concat…), timed against it by the measured selection.
ARITHMETIC_OPS = ("Conv", "MatMul", "Gemm")
PLACEMENT_DEFAULT = "Conv/MatMul/Gemm (element-wise ops in float)"
PLACEMENT_EVERY = "every quantizable op"


def placement_form(ctx: ExportContext, qdq, float_blocks) -> list:
    """The INT8 form with Q/DQ on every op ONNX Runtime's quantizer knows (its default), the same
    blocks kept in float, quantized from the same form of the ONNX as the artifact; built by
    partialdeploy.exporting.tuning only within the budget."""
    from onnxruntime.quantization import quant_pre_process

    from partialdeploy.exporting.tuning import Form

    form = Form(PLACEMENT_EVERY, {"qdq_placement": PLACEMENT_EVERY},
                "Q/DQ on every op ONNX Runtime's quantizer knows (QLinearMul/Add/Concat between the convolutions)")

    def build(art_dir: Path) -> str:
        pre = art_dir / "model.every-pre.part.onnx"
        name = "model.every.part.onnx"
        try:
            source = _int8_source(ctx, art_dir / "model.every-src.part.onnx", {}, [])
            with quiet():
                quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
            qdq(pre, art_dir / name, block_nodes(pre, float_blocks), None)
        finally:
            pre.unlink(missing_ok=True)
            for f in art_dir.glob("model.every-src.*"):
                f.unlink(missing_ok=True)
        form.extra["nodes"] = node_count(art_dir / name)
        return name
    form.build = build
    return [form]


def _int8_source(ctx: ExportContext, path: Path, extra: dict, notes: list[str]) -> Path:
    """The ONNX to quantize: q/k/v fused (one Q/DQ MatMul instead of three, as the fp32 artifact has)
    and every GELU as one ``Gelu`` op (``onnx_forms.gelu_as_op``: in a Q/DQ model ONNX Runtime no
    longer fuses the five-node GELU). Temporary files are ``path`` and ``path`` with ``.gelu`` before
    its suffix; the caller removes them. Records both forms in ``extra["deploy_form"]``."""
    from partialdeploy.exporting.onnx_forms import GELU_OPSET, gelu_as_op, int8_source

    src = int8_source(ctx.onnx_path, path, extra, notes)[0]
    out = path.with_name(path.stem + ".gelu" + path.suffix)
    try:
        n = gelu_as_op(src, out)
    except Exception as e:  # keep the five-node GELU: exact too, only slower
        notes.append(f"GELU left as exported (five nodes): {first_line(e, 120)}")
        n = 0
    extra.setdefault("deploy_form", {})["gelu"] = f"one Gelu op (opset {GELU_OPSET})" if n else "as exported"
    return out if n else src


class OnnxRuntimeTarget(Target):
    name = "onnxruntime"
    requires = ("onnx", "onnxruntime")
    precisions = ("fp32", "int8")
    unsupported = {"fp16": FP16_MESSAGE}

    @classmethod
    def check_env(cls) -> str | None:
        return None if cls.is_available() else f"onnxruntime is not installed: {INSTALL}"

    def export(self, ctx: ExportContext, out_dir: Path) -> Artifact:
        prec = ctx.precision  # fp32 or int8 (Target.refusal, at the request)
        try:
            from onnxruntime.quantization import CalibrationMethod  # noqa: F401  (present in every wheel)
        except ImportError as e:
            raise RuntimeUnavailable(f"onnxruntime is not installed: {INSTALL}") from e
        out_dir = Path(out_dir)
        dst = out_dir / "model.onnx"
        notes: list[str] = []
        # session options for whoever loads the artifact (``profile`` uses them): idle worker threads
        # must not spin — they would steal the cores from the next inference or another model
        extra: dict = {"graph_optimization_level": "all", "execution_provider": "CPUExecutionProvider",
                       "session_config": {"session.intra_op.allow_spinning": "0"},
                       "nodes_in": node_count(ctx.onnx_path)}
        t0 = time.perf_counter()
        proof = None
        forms: list = []  # other correct forms, timed at export (partialdeploy.exporting.tuning)
        if prec == "int8":
            proof = self._int8(ctx, dst, extra, notes, forms)
        else:
            self._fp32(ctx, dst, extra, notes)
        extra["convert_seconds"] = round(time.perf_counter() - t0, 3)
        extra["nodes"] = node_count(dst)
        ins, outs = io_meta(dst)
        return Artifact(target=self.name, precision=prec, path="model.onnx", files=["model.onnx"], inputs=ins,
                        outputs=outs, runtime_version=self.version(), notes=notes, extra=extra, proof=proof,
                        forms=forms)

    @staticmethod
    def _fp32(ctx: ExportContext, dst: Path, extra: dict, notes: list[str]) -> None:
        tmp = dst.with_name("model.optimized.tmp.onnx")
        form = dst.with_name("model.form.tmp.onnx")
        try:
            from partialdeploy.exporting.onnx_forms import fuse_sibling_matmuls

            n = fuse_sibling_matmuls(ctx.onnx_path, form)
            extra["deploy_form"] = {"attention_projections": "fused qkv" if n else "as exported"}
            if n:
                notes.append(f"deploy form for ONNX Runtime: {n} group(s) of q/k/v projections fused into one "
                             "MatMul + Split, as in the onnx target (OpenVINO's float IRs keep them separate)")
            with quiet():
                optimize_offline(form, tmp, "basic")
            bad = nonstandard_ops(tmp)
        except Exception as e:  # keep the verified ONNX; the gate still runs
            bad = [f"optimizer failed: {first_line(e, 120)}"]
        form.unlink(missing_ok=True)
        if bad:
            shutil.copyfile(ctx.onnx_path, dst)
            tmp.unlink(missing_ok=True)
            extra["deploy_form"] = {"attention_projections": "as exported"}
            extra["offline_optimization"] = "none"
            notes.append(f"kept the unoptimized ONNX: the basic-level graph had {', '.join(bad)[:160]}")
        else:
            tmp.replace(dst)
            extra["offline_optimization"] = "basic"
            notes.append("offline ORT basic-level graph optimization (standard ONNX ops only, portable); "
                         "extended/layout fusions happen at session creation")

    @staticmethod
    def _int8(ctx: ExportContext, dst: Path, extra: dict, notes: list[str], forms: list) -> Proof:
        """Static Q/DQ INT8 through the INT8 fallback loop. Every candidate is opened exactly as the
        artifact will be (its recorded session options), so the gate of the one kept is the artifact's
        certificate (a ``verification.Proof``: the pipeline does not run it again on the same file)."""
        if ctx.calib is None or len(ctx.calib) == 0:
            raise UserError("INT8 needs calibration images: pass --calib DIR (100-500 representative images)")
        from onnxruntime.quantization import quant_pre_process

        from partialdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner
        from partialdeploy.exporting.int8fallback import quantize_until_gate

        method = calibration_method(ctx.options)
        pre = dst.with_name("model.preprocessed.tmp.onnx")
        ins, _ = io_meta(ctx.onnx_path)
        bs = static_batch(ins[0]["shape"]) or 1
        tries = [0]

        def qdq(src, path, exclude, op_types=ARITHMETIC_OPS):
            return quantize_qdq(src, path, ctx.calib, ctx.input_name, bs, method, exclude, op_types=op_types,
                                what="ONNX Runtime INT8")

        def quantize(float_blocks):
            tries[0] += 1  # every node of the blocks kept in float is excluded
            return qdq(pre, dst.with_name(f"model.int8-{tries[0]}.tmp.onnx"), block_nodes(pre, float_blocks))

        # every candidate is opened exactly as the artifact will be: the kept one's gate is its certificate
        opts = open_options(OnnxRuntimeRunner, ctx, Artifact("onnxruntime", "int8", "model.onnx", extra=extra))
        try:
            source = _int8_source(ctx, dst.with_name("model.source.tmp.onnx"), extra, notes)
            with quiet():
                quant_pre_process(str(source), str(pre), skip_symbolic_shape=True)
            fb = quantize_until_gate(ctx, ort_quantizer(ctx, "onnxruntime", quantize, opts),
                                     stage_name("onnxruntime", "int8"),
                                     enabled=ctx.options.int8_fallback)
            proof = Proof.of(ctx, fb.handle, opts, fb.attempts[-1].results)  # the kept file, as it was gated
            fb.handle.replace(dst)
        except (UserError, VerificationError):
            raise
        except Exception as e:
            raise UserError(f"ONNX Runtime INT8 quantization failed: {first_line(e)}") from e
        finally:
            pre.unlink(missing_ok=True)
            for f in dst.parent.glob("*.tmp*"):
                f.unlink(missing_ok=True)
        extra["int8_fallback"] = fb.to_dict()
        if fb.note():
            notes.append(fb.note())
        forms.extend(placement_form(ctx, qdq, fb.float_blocks))
        extra.update(qdq_placement=PLACEMENT_DEFAULT)
        extra.update(quantization="static QDQ", weights="int8 per-channel", activations="uint8 per-tensor",
                     calibration=method, calibration_images=len(ctx.calib))
        notes.append(f"INT8 static QDQ (U8S8, per-channel weights, {method} calibration) on {len(ctx.calib)} "
                     f"calibration images ({ctx.calib_source or 'given'})")
        return proof
