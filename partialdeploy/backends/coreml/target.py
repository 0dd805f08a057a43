"""CoreML target: an ML program (``model.mlpackage``) converted with coremltools from the deploy-form
PyTorch model (traced on a (1,3,H,W) input; the deploy form holds the attention bias as a constant,
so the trace is exact).

fp32: ``compute_precision=FLOAT32``.
fp16: ``compute_precision=FLOAT16`` (fp16 weights and activations; what the Neural Engine runs).
int8: the fp16 program with its weights linearly quantized to int8 (symmetric, per-channel) by
      ``coremltools.optimize.coreml.linear_quantize_weights``: int8 weights, fp16 compute (needs
      iOS16/macOS13 or newer).

Running a CoreML model needs macOS. There (``sys.platform == "darwin"``) parity runs through
``predict``; elsewhere the package is checked structurally — ML program type, input/output names,
shapes and dtypes, weight precision, minimum deployment target — and marked
``spec-checked (running needs macOS)``.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from partialdeploy.errors import RuntimeUnavailable, UserError, VerificationError
from partialdeploy.backends.target import ExportContext, Target, quiet
from partialdeploy.records import Artifact
from partialdeploy.errors import first_line
from partialdeploy.verification import parity_gates, run_padded

INSTALL = "pip install coremltools"
DEFAULT_TARGET = "iOS16"
SPEC_CHECKED = "spec-checked (running needs macOS)"
# ML program specification versions per minimum deployment target (CoreML's own numbering)
SPEC_VERSION = {"iOS15": 6, "iOS16": 7, "iOS17": 8, "iOS18": 9}
# MIL DataType enum values (coremltools.proto.MIL_pb2.DataType)
_MIL_DTYPES = {10: "float16", 11: "float32", 12: "float64", 13: "bfloat16", 21: "int8", 22: "int16", 23: "int32",
               24: "int64", 25: "int4", 31: "uint8", 35: "uint4", 1: "bool", 2: "string"}
# CoreML FeatureTypes ArrayFeatureType.ArrayDataType
_ARRAY_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32"}
_QUANT_OPS = ("constexpr_affine_dequantize", "constexpr_blockwise_shift_scale")



def _ct():
    try:
        with quiet():
            import coremltools as ct
        return ct
    except ImportError as e:
        raise RuntimeUnavailable(f"coremltools is not installed: {INSTALL}") from e


def deployment_target(ct, name: str | None):
    name = str(name or DEFAULT_TARGET)
    members = {k.lower(): k for k in ct.target.__members__}
    key = members.get(name.lower().replace(" ", ""))
    if key is None:
        raise UserError(f"unknown CoreML minimum_deployment_target {name!r}: use e.g. iOS16, iOS17, iOS18, macOS13")
    return key, ct.target[key]


class CoreMLTarget(Target):
    name = "coreml"
    requires = ("coremltools",)
    precisions = ("fp32", "fp16", "int8")
    needs_torch_model = True
    int8_calibrates = False  # int8 = weight-only linear quantization: no activation ranges, no images
    source = "PyTorch"

    @classmethod
    def check_env(cls) -> str | None:
        return None if cls.is_available() else f"coremltools is not installed: {INSTALL}"

    def export(self, ctx: ExportContext, out_dir: Path) -> Artifact:
        """Trace the deploy model (proved equal to it), convert to an ML program at the precision,
        check its spec; the pipeline predicts through CoreMLRunner where CoreML runs (macOS)."""
        prec = ctx.precision  # one of self.precisions (Target.refusal, at the request)
        if ctx.deploy_model is None:
            raise UserError("the CoreML target converts from the PyTorch deploy model: install torch "
                            "(pip install torch) and export from the checkpoint")
        ct = _ct()
        tname, tgt = deployment_target(ct, ctx.options.runtime_option("minimum_deployment_target"))
        if prec == "int8" and tgt < ct.target.iOS16:
            raise UserError(f"CoreML int8 weights need minimum_deployment_target iOS16 or newer, not {tname}")
        if tgt < ct.target.iOS15:
            raise UserError(f"an ML program needs minimum_deployment_target iOS15 or newer, not {tname}")
        out_dir = Path(out_dir)
        size, c = ctx.img_size, int(ctx.spec.in_chans or 3)
        batch = ctx.options.batch
        in_shape, shape_desc = _input_shape(ct, ctx, batch, c)
        t0 = time.perf_counter()
        traced, trace_par = _trace_and_prove(ctx, c)
        ml = _convert(ct, traced, ctx, in_shape, tgt)
        ml.short_description = f"{ctx.spec.name} deploy form ({prec}), partialdeploy"
        ml.user_defined_metadata.update({"partialdeploy.precision": prec, "partialdeploy.img_size": str(size)})
        pkg = out_dir / "model.mlpackage"
        with quiet():
            ml.save(str(pkg))
        convert_s = round(time.perf_counter() - t0, 3)

        report = check_spec(ml.get_spec(), prec, tname, ctx.input_name, ctx.output_name,
                            [None if ctx.dynamic_batch else batch, c, size, size])
        files = sorted(p.relative_to(out_dir).as_posix() for p in pkg.rglob("*") if p.is_file())
        notes = []
        if prec == "int8":
            notes.append(f"int8 weights (linear symmetric, per channel) for {report['quantized_weight_ops']} weight "
                         "tensors, fp16 compute; tensors under coremltools' size threshold stay fp16")
        extra = {"minimum_deployment_target": tname, "compute_precision": "float32" if prec == "fp32" else "float16",
                 "convert_seconds": convert_s, "spec_check": report}
        inputs = [{"name": ctx.input_name, "shape": shape_desc, "dtype": "float32"}]
        outputs = [{"name": ctx.output_name, "shape": report["output_shape"] or [shape_desc[0], None],
                    "dtype": report["output_dtype"]}]
        extra["compute_units"] = ctx.options.runtime_option("compute_units", "ALL")
        if sys.platform != "darwin":  # the pipeline's verification predicts where CoreML can (macOS)
            notes.append(f"converted and spec-checked on {sys.platform}; parity needs macOS "
                         "(run `partialdeploy profile` or predict on a Mac)")
        return Artifact(target=self.name, precision=prec, path="model.mlpackage", files=files, inputs=inputs,
                        outputs=outputs, parity=list(trace_par), verified=SPEC_CHECKED,
                        runtime_version=self.version(), notes=notes, extra=extra)


def _input_shape(ct, ctx: ExportContext, batch: int, c: int):
    """(the converter's input shape, the manifest's description of it): a RangeDim batch up to the
    profile's max when dynamic, else the static batch."""
    size = ctx.img_size
    if ctx.dynamic_batch:
        bmax = int((ctx.options.batch_range or {}).get("max") or 64)
        return (ct.RangeDim(1, bmax, default=1), c, size, size), [f"1..{bmax}", c, size, size]
    return (batch, c, size, size), [batch, c, size, size]


def _trace_and_prove(ctx: ExportContext, c: int):
    """The TorchScript trace coremltools converts, proved equal to the deploy model (fp32 gate) on
    every OS — the trace is what gets converted. Returns (trace, its parity results)."""
    import torch

    size = ctx.img_size
    try:
        with quiet(), torch.no_grad():
            traced = torch.jit.trace(ctx.deploy_model.eval(), torch.zeros(1, c, size, size))
    except Exception as e:
        raise UserError(f"torch.jit.trace of the deploy model failed (CoreML needs a traceable model): "
                        f"{first_line(e)}") from e

    def traced_logits(x):
        with torch.no_grad():
            return run_padded(lambda b: traced(torch.from_numpy(b)).numpy(), x, 8)

    par = parity_gates(ctx, traced_logits, "train form -> traced deploy model (CoreML converter input)",
                       precision="fp32", eval_all=False)
    return traced, par


def _convert(ct, traced, ctx: ExportContext, in_shape, tgt):
    """coremltools: an ML program with a float32 interface at every precision (same contract as the
    other targets; fp16 programs cast at the boundary); INT8 = linear symmetric per-channel weights."""
    prec = ctx.precision
    cp = ct.precision.FLOAT32 if prec == "fp32" else ct.precision.FLOAT16
    try:
        with quiet():
            ml = ct.convert(traced, inputs=[ct.TensorType(name=ctx.input_name, shape=in_shape, dtype=np.float32)],
                            outputs=[ct.TensorType(name=ctx.output_name, dtype=np.float32)],
                            convert_to="mlprogram", compute_precision=cp, minimum_deployment_target=tgt)
            if prec == "int8":
                import coremltools.optimize.coreml as cto

                cfg = cto.OptimizationConfig(global_config=cto.OpLinearQuantizerConfig(
                    mode="linear_symmetric", dtype="int8", granularity="per_channel"))
                ml = cto.linear_quantize_weights(ml, cfg)
    except Exception as e:
        raise UserError(f"coremltools cannot convert the deploy model: {first_line(e)}") from e
    return ml


def check_spec(spec, precision: str, target_name: str, input_name: str, output_name: str,
               input_shape: list) -> dict:
    """Structural proof of a converted ML program; raises VerificationError with what is wrong.

    ``input_shape`` entries of None are dynamic (a shape range must cover them)."""
    problems = []
    kind = spec.WhichOneof("Type")
    if kind != "mlProgram":
        problems.append(f"model type is {kind}, expected mlProgram")
    want_v = SPEC_VERSION.get(target_name)
    if want_v is not None and spec.specificationVersion != want_v:
        problems.append(f"specification version {spec.specificationVersion} != {want_v} ({target_name})")
    ins, outs = list(spec.description.input), list(spec.description.output)
    if [i.name for i in ins] != [input_name]:
        problems.append(f"inputs {[i.name for i in ins]} != [{input_name!r}]")
    if [o.name for o in outs] != [output_name]:
        problems.append(f"outputs {[o.name for o in outs]} != [{output_name!r}]")
    in_dtype = out_dtype = None
    out_shape = None
    if ins:
        a = ins[0].type.multiArrayType
        in_dtype = _ARRAY_DTYPES.get(int(a.dataType), str(a.dataType))
        shape = [int(d) for d in a.shape]
        ranges = [(int(r.lowerBound), int(r.upperBound)) for r in a.shapeRange.sizeRanges]
        for i, want in enumerate(input_shape):
            if want is None:
                if not ranges or ranges[i][0] > 1 or (0 <= ranges[i][1] < 2):
                    problems.append(f"input dim {i} should be dynamic, ranges {ranges}")
            elif i >= len(shape) or shape[i] != want:
                problems.append(f"input shape {shape} != {input_shape}")
                break
        if in_dtype != "float32":
            problems.append(f"input dtype {in_dtype} != float32")
    if outs:
        a = outs[0].type.multiArrayType
        out_dtype = _ARRAY_DTYPES.get(int(a.dataType), str(a.dataType))
        out_shape = [int(d) for d in a.shape] or None
        if out_dtype != "float32":
            problems.append(f"output dtype {out_dtype} != float32")
    weights, ops = _weights(spec)
    if precision == "fp32" and weights.get("float16"):
        problems.append(f"{weights['float16']} fp16 weight tensors in an fp32 model")
    if precision == "fp16" and (weights.get("float32", 0) > 0 or not weights.get("float16")):
        problems.append(f"fp16 model holds fp32 weights: {weights}")
    n_quant = sum(ops.get(o, 0) for o in _QUANT_OPS)
    if precision == "int8" and (n_quant == 0 or not (weights.get("int8") or weights.get("uint8"))):
        problems.append(f"int8 model has no quantized weights ({weights})")
    if precision != "int8" and n_quant:
        problems.append(f"{n_quant} quantized weight ops in a {precision} model")
    if problems:
        raise VerificationError("CoreML spec check failed: " + "; ".join(problems))
    return {"type": kind, "specification_version": int(spec.specificationVersion),
            "minimum_deployment_target": target_name, "input_dtype": in_dtype, "output_dtype": out_dtype,
            "output_shape": out_shape, "weight_dtypes": weights, "quantized_weight_ops": n_quant,
            "ops": dict(Counter({k: v for k, v in ops.items() if k != "const"}).most_common()),
            "passed": True}


def _weights(spec) -> tuple[dict, dict]:
    """dtype histogram of the weight tensors (const / constexpr ops with ≥ 16 elements; smaller
    constants are shapes, axes and scalars) and op-type histogram of the main function."""
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    weights: Counter = Counter()
    ops: Counter = Counter()
    for op in block.operations:
        ops[op.type] += 1
        if op.type == "const":
            vals = [op.attributes["val"]] if "val" in op.attributes else []
        elif op.type in _QUANT_OPS:
            vals = [op.attributes[k] for k in ("quantized_data", "data") if k in op.attributes]
        else:
            continue
        for v in vals:
            tt = v.type.tensorType
            n = 1
            for d in tt.dimensions:
                n *= int(d.constant.size) if d.WhichOneof("dimension") == "constant" else 1
            if tt.rank >= 2 and n >= 16:
                weights[_MIL_DTYPES.get(int(tt.dataType), str(tt.dataType))] += 1
    return dict(weights), dict(ops)
