"""ONNX Runtime's static Q/DQ quantization, and the INT8 fallback loop's view of candidates that run in
ONNX Runtime. Two targets quantize this way: the ONNX Runtime target (uint8 activations, every
quantizable op) and the TensorRT target (symmetric int8 activations on the inputs of Conv / MatMul /
Gemm, proven in ONNX Runtime on CPU before any GPU sees it). Both call :func:`quantize_qdq` and hand
the loop an :func:`ort_quantizer`; the runtime is imported inside the functions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from partialdeploy.backends.target import quiet
from partialdeploy.errors import UserError, first_line
from partialdeploy.verification import pad_batch, runner_logits, static_batch

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")  # the profile field ``ort_calibration``


def block_nodes(model_or_path, blocks) -> list[str]:
    """Names of the ONNX nodes that belong to ``blocks`` — official block names like "stages.0.blocks.1"
    (the exporter prefixes every node with its block, ``stages.0.blocks.1/...``: see
    :mod:`partialdeploy.analysis.blocknames`) or exact node names: what a Q/DQ quantization leaves in float."""
    blocks = [str(b).rstrip("/") for b in blocks or ()]
    if not blocks:
        return []
    import onnx

    m = model_or_path if isinstance(model_or_path, onnx.ModelProto) else onnx.load(str(model_or_path),
                                                                                     load_external_data=False)
    prefixes = tuple(b + "/" for b in blocks)
    return [n.name for n in m.graph.node if n.name in blocks or n.name.startswith(prefixes)]


def calibration_method(options) -> str:
    """The calibration method the options ask for (``ort_calibration``, default min-max); UserError
    when it is not one of :data:`CALIBRATION_METHODS`."""
    method = str(options.runtime_option("ort_calibration", "minmax")).lower()
    if method not in CALIBRATION_METHODS:
        raise UserError(f"ort_calibration {method!r} must be one of {', '.join(CALIBRATION_METHODS)}")
    return method


class CalibrationReader:
    """onnxruntime.quantization CalibrationDataReader over preprocessed calibration images, in chunks
    of exactly ``batch`` (a static-batch model; the last chunk padded by the shared helper)."""

    def __init__(self, name: str, calib: np.ndarray, batch: int):
        self.name, self.calib, self.batch = name, calib, batch
        self.rewind()

    def get_next(self):
        i = self._i
        if i >= len(self.calib):
            return None
        self._i += self.batch
        chunk = pad_batch(self.calib[i:i + self.batch], self.batch)
        return {self.name: np.ascontiguousarray(chunk, np.float32)}

    def rewind(self):
        self._i = 0


def quantize_qdq(src: Path, dst: Path, calib: np.ndarray, input_name: str, batch: int, method: str,
                 nodes_to_exclude=(), symmetric: bool = False, op_types=None, what: str = "INT8") -> Path:
    """``quantize_static`` in Q/DQ format: per-channel int8 weights; activations uint8 (ONNX Runtime's
    U8S8, what its x86 kernels run fastest) or, ``symmetric``, int8 with zero point 0 and the bias left
    in float (what TensorRT requires). ``op_types``: quantize only these ops — their inputs and outputs,
    or, ``symmetric``, their inputs only (their outputs stay float, as TensorRT wants); None: every op
    ONNX Runtime's quantizer knows. ``nodes_to_exclude`` stay float. UserError on failure (``what`` names the form)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    kw: dict = {}
    if op_types:
        kw["op_types_to_quantize"] = list(op_types)
    if symmetric:
        kw["extra_options"] = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                               **({"OpTypesToExcludeOutputQuantization": list(op_types)} if op_types else {})}
    try:
        with quiet():
            quantize_static(str(src), str(dst), CalibrationReader(input_name, np.asarray(calib, np.float32), batch),
                            quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QInt8 if symmetric else QuantType.QUInt8,
                            weight_type=QuantType.QInt8, nodes_to_exclude=list(nodes_to_exclude),
                            calibrate_method=methods[method], **kw)
    except Exception as e:
        raise UserError(f"{what} quantization failed: {first_line(e)}") from e
    return Path(dst)


def ort_quantizer(ctx, name: str, quantize: Callable[[list], Path], options: dict | None = None):
    """The INT8 fallback loop's :class:`~partialdeploy.exporting.int8fallback.Quantizer` for candidates that are
    ONNX files run in ONNX Runtime: ``quantize(float_blocks) -> path``; each candidate is opened once,
    with ``options`` (default: the context's threads) — the options its gate, its timing and, for the
    ONNX Runtime target, the artifact itself use — and its file removed when the loop drops it. The
    boundary taps and the fp32 reference (the context's ONNX) come from :mod:`partialdeploy.analysis.taps`."""
    from partialdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner
    from partialdeploy.exporting.int8fallback import Quantizer
    from partialdeploy.analysis.taps import collector

    threads = ctx.options.threads
    opts = options if options is not None else {"threads": threads}
    runners: dict = {}

    def runner(path):
        if path not in runners:
            runners[path] = OnnxRuntimeRunner(path, **opts).load()
        return runners[path]

    def timer(path):
        r = runner(path)
        x = np.ascontiguousarray(ctx.parity_inputs[:1].repeat(static_batch(r.inputs()[0].shape) or 1, 0), np.float32)
        return lambda: r.run(x)

    def release(path):
        r = runners.pop(path, None)
        if r is not None:
            r.close()
        Path(path).unlink(missing_ok=True)

    return Quantizer(name=name, quantize=quantize, logits=lambda path: runner_logits(runner(path)),
                     boundaries=lambda path: collector(path, "onnxruntime", threads),
                     reference=collector(ctx.onnx_path, "onnxruntime", threads), timer=timer, release=release)
