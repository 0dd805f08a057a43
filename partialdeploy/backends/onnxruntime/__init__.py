"""ONNX Runtime: runs the interchange ONNX (target ``onnx``) and its own optimized / INT8 ONNX
(target ``onnxruntime``)."""

from partialdeploy.backends import Backend

BACKEND = Backend(
    name="onnxruntime",
    label="ONNX Runtime",
    runner="partialdeploy.backends.onnxruntime.runner:OnnxRuntimeRunner",
    dists=("onnxruntime", "onnxruntime-gpu"),
    targets={"onnx": "partialdeploy.exporting.onnx:OnnxTarget",
             "onnxruntime": "partialdeploy.backends.onnxruntime.target:OnnxRuntimeTarget"},
    aliases=("onnx", "ort"),
    device_install="pip install onnxruntime (Jetson: the onnxruntime-gpu wheel from the Jetson Zoo)",
    suffixes=(".onnx",),
    options={"ort_calibration": ((str,), "ONNX Runtime INT8 calibration: minmax, entropy or percentile",
                                 ("minmax", "entropy", "percentile"))},
)
