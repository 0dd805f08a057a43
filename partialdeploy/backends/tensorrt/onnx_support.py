"""Which ONNX a TensorRT generation's parser takes: the operator tables of TensorRT 8.5/8.6, 10 and 11
and the check of an ONNX file against them (export side; the parse on the device is the final word).
Imports onnx only inside the functions."""

from __future__ import annotations

from pathlib import Path

GENERATIONS = (8, 10, 11)  # TensorRT major versions a bundle builds with
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
# TensorRT 11.x's parser: the 10.x set plus Swish (added in 11.0); opsets 9-24 (the 11.4 release; 11.5
# added opset 25). From the 11.x release notes and ONNX opset guide; the parse on the device is final.
TRT11_ONNX_OPS = TRT10_ONNX_OPS | {"Swish"}
# TensorRT 8.5 (JetPack 5.x) and 8.6 (JetPack 6.0): opsets 7-17. Written from onnx-tensorrt's operator
# matrix for 8.4 and its changelog (8.4: Shrink, Xor; 8.5: RandomNormal, RandomUniform,
# MeanVarianceNormalization, RoiAlign, Mod, Trilu, GridSample, NonZero, native NonMaxSuppression; 8.6:
# GroupNormalization, LayerNormalization, IsInf). Later additions (Hardmax 9.2, DeformConv 10.1, the
# window functions 10.4, opset 18+ ops such as Gelu or Mish) are not in it; neither is Reciprocal, which
# the 8.4 matrix lists as unsupported.
TRT86_ONLY_OPS = frozenset({"GroupNormalization", "LayerNormalization", "IsInf"})
TRT8_ONNX_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DepthToSpace DequantizeLinear Div
Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GRU HardSigmoid Identity If
ImageScaler InstanceNormalization IsNaN LeakyRelu Less LessOrEqual Log LogSoftmax Loop LRN LSTM
LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min Mod Mul Neg NonMaxSuppression
NonZero Not Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin
ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan
Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus
Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu
Unsqueeze Upsample Where Xor
""".split()) | TRT86_ONLY_OPS
ONNX_SUPPORT = {8: (TRT8_ONNX_OPS, (7, 17)), 10: (TRT10_ONNX_OPS, ONNX_OPSETS), 11: (TRT11_ONNX_OPS, (9, 24))}


def onnx_ops_report(onnx_path: Path, generations=GENERATIONS) -> dict:
    """Operators and opset of an ONNX file against the ONNX parsers of TensorRT ``generations``:
    {opset, ops, unsupported, opset_supported, by_generation: {"8": {..., needs_8_6}, "10": {...}, ...}};
    the top-level ``unsupported`` / ``opset_supported`` cover every generation asked for."""
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
        if int(g) == 8:  # 8.5 (JetPack 5) lacks what 8.6 (JetPack 6.0) added
            by_gen[str(g)]["needs_8_6"] = sorted(op for op in ops if op in TRT86_ONLY_OPS)
    return {"opset": opset, "ops": dict(sorted(ops.items())),
            "unsupported": sorted({op for r in by_gen.values() for op in r["unsupported"]}),
            "opset_supported": all(r["opset_supported"] for r in by_gen.values()), "by_generation": by_gen}
