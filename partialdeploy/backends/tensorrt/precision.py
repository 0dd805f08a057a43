"""The TensorRT-ready ONNX of each precision: the precision travels in the file, so one bundle builds
with every TensorRT generation (see ``target.py``).

fp16: a strongly typed mixed-precision ONNX (onnxconverter-common ``convert_float_to_float16``, inputs
      and outputs kept fp32, the sums of squares / square roots of the channel gates kept fp32 so they
      cannot overflow fp16's 65504).
int8: an explicit-quantization ONNX: Q/DQ nodes from ONNX Runtime's ``quantize_static`` (symmetric int8
      activations, per-channel symmetric int8 weights, float bias, Q/DQ only on the inputs of Conv /
      MatMul / Gemm where TensorRT fuses them; ``backends/onnxruntime/quantizer.py``); blocks kept in
      float get no Q/DQ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from partialdeploy.backends.target import quiet
from partialdeploy.errors import UserError

INSTALL = "pip install onnx onnxruntime onnxconverter-common"
# ops whose values can leave fp16's range: sums of squares and what follows them up to the square root
FP16_KEEP_FP32_OPS = ("ReduceSum", "ReduceSumSquare", "ReduceL2", "ReduceLogSumExp", "Pow", "Sqrt")
QDQ_OP_TYPES = ("Conv", "ConvTranspose", "MatMul", "Gemm")  # where TensorRT fuses Q/DQ into int8 kernels


def _producers(model) -> dict:
    return {o: n for n in model.graph.node for o in n.output}


def _square_chains(model, depth: int = 6) -> set[str]:
    """Names of the nodes from a square (x*x or Pow) to the Sqrt that ends its statistic (variance/std
    of the channel gates): their intermediate values are sums of squares, kept in fp32."""
    prod = _producers(model)
    keep: set[str] = set()
    for n in model.graph.node:
        if n.op_type != "Sqrt":
            continue
        path, cur = [n], n
        for _ in range(depth):
            src = prod.get(cur.input[0]) if cur.input else None
            if src is None:
                break
            path.append(src)
            is_square = (src.op_type == "Mul" and len(src.input) == 2 and src.input[0] == src.input[1]) or \
                src.op_type == "Pow"
            if is_square:
                keep.update(p.name for p in path)
                break
            cur = src
    return keep


def to_fp16(src: Path, dst: Path, keep_fp32_nodes=()) -> dict:
    """Strongly typed mixed-precision fp16 ONNX of ``src`` (fp32 inputs/outputs). Returns a summary."""
    try:
        import onnx
        from onnxconverter_common import __version__ as occ_version
        from onnxconverter_common import float16
    except ImportError as e:
        raise UserError(f"TensorRT fp16 needs onnxconverter-common: {INSTALL}") from e
    m = onnx.load(str(src))
    keep_nodes = sorted(_square_chains(m) | set(keep_fp32_nodes))
    block_ops = list(float16.DEFAULT_OP_BLOCK_LIST) + list(FP16_KEEP_FP32_OPS)
    with quiet():
        m16 = float16.convert_float_to_float16(m, keep_io_types=True, op_block_list=block_ops,
                                               node_block_list=keep_nodes)
    onnx.checker.check_model(m16)
    onnx.save(m16, str(dst))
    kept = sorted({n.name for n in m.graph.node if n.op_type in block_ops} | set(keep_nodes))
    compute = [n for n in m.graph.node if n.op_type not in ("Constant",)]
    n_fp32 = sum(1 for n in compute if n.name in kept)
    return {"precision": "fp16", "method": f"onnxconverter-common {occ_version} convert_float_to_float16",
            "typing": "strong (every tensor typed in the ONNX)", "io": "float32",
            "nodes": len(compute), "nodes_fp32": n_fp32, "nodes_fp16": len(compute) - n_fp32,
            "casts": sum(1 for n in m16.graph.node if n.op_type == "Cast"), "kept_fp32": kept,
            "summary": f"fp16 strongly typed, {len(compute) - n_fp32} of {len(compute)} nodes fp16"}


def to_qdq_int8(src: Path, dst: Path, calib: np.ndarray, input_name: str, exclude=(), batch: int | None = None,
                method: str = "minmax") -> dict:
    """Explicit-quantization (Q/DQ) INT8 ONNX for TensorRT: symmetric int8 activations (zero point 0,
    as TensorRT requires), per-channel symmetric int8 weights, bias left in float, Q/DQ on the inputs
    of Conv/MatMul/Gemm only (their outputs stay float). ``exclude``: block names (or node names) kept
    in float, left without Q/DQ. Returns a summary (quantized / excluded node counts)."""
    try:
        import onnx

        from partialdeploy.backends.onnxruntime.quantizer import CALIBRATION_METHODS, block_nodes, quantize_qdq
    except ImportError as e:
        raise UserError("TensorRT INT8 needs onnxruntime's quantization tools: "
                        "pip install onnxruntime onnx") from e
    if calib is None or len(calib) == 0:
        raise UserError("INT8 needs calibration images: pass --calib DIR (100-500 representative images)")
    if method not in CALIBRATION_METHODS:
        raise UserError(f"calibration method {method!r} must be one of {', '.join(CALIBRATION_METHODS)}")
    m = onnx.load(str(src), load_external_data=False)
    excluded = block_nodes(m, exclude)
    unknown = [b for b in exclude or () if not block_nodes(m, [b])]
    if unknown:
        raise UserError(f"no nodes of {', '.join(map(str, unknown))} in the ONNX: name blocks like stages.0.blocks.1")
    if batch is None:
        dim = m.graph.input[0].type.tensor_type.shape.dim[0]
        batch = dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else 8
    quantize_qdq(src, dst, calib, input_name, int(batch), method, excluded, symmetric=True, op_types=QDQ_OP_TYPES,
                 what="Q/DQ INT8")
    q = onnx.load(str(dst), load_external_data=False)
    targets = [n for n in m.graph.node if n.op_type in QDQ_OP_TYPES]
    n_q = sum(1 for n in q.graph.node if n.op_type == "QuantizeLinear")
    n_dq = sum(1 for n in q.graph.node if n.op_type == "DequantizeLinear")
    quantized = len([n for n in targets if n.name not in set(excluded)])
    return {"precision": "int8", "method": "onnxruntime.quantization.quantize_static (QDQ)",
            "quantization": "explicit (Q/DQ)", "activations": "int8 symmetric per-tensor",
            "weights": "int8 symmetric per-channel", "bias": "float", "calibration": method,
            "calibration_images": int(len(calib)), "op_types": list(QDQ_OP_TYPES),
            "quantized_nodes": quantized, "float_nodes": len(targets) - quantized,
            "excluded_blocks": [str(b) for b in exclude or ()], "quantize_linear": n_q, "dequantize_linear": n_dq,
            "summary": f"Q/DQ INT8, {quantized} of {len(targets)} Conv/MatMul/Gemm quantized"
                       + (f"; left without Q/DQ (float): {', '.join(map(str, exclude))}" if exclude else "")}
