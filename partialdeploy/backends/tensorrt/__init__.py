"""TensorRT: a bundle to build the engine on the device (``build-engine``); runs engines there."""

from partialdeploy.backends import Backend
from partialdeploy.errors import UserError


def _check(fields: dict, where: str) -> None:
    if "tensorrt" in fields and fields["tensorrt"] not in (8, 10, 11):
        raise UserError(f"{where}: field 'tensorrt' is {fields['tensorrt']}; choose 8 (8.5/8.6: JetPack 5.x and 6.0), "
                        "10 (JetPack 6.1+) or 11")
    if fields.get("int8_quantization") == "implicit" and fields.get("tensorrt") not in (8, 10):
        raise UserError(f"{where}: int8_quantization: implicit needs tensorrt: 8 or 10 (TensorRT 11 removed "
                        "calibrators)")
    if "workspace_mb" in fields and fields["workspace_mb"] < 1:
        raise UserError(f"{where}: field 'workspace_mb' must be ≥ 1, got {fields['workspace_mb']}")


BACKEND = Backend(
    name="tensorrt",
    label="TensorRT",
    runner="partialdeploy.backends.tensorrt.runner:TensorRTRunner",
    dists=("tensorrt",),
    helper_dists=("cuda-python",),
    targets={"tensorrt": "partialdeploy.backends.tensorrt.target:TensorRTTarget"},
    aliases=("trt",),
    device_install="comes with JetPack (apt install python3-libnvinfer), elsewhere pip install tensorrt; "
                   "and pip install cuda-python",
    suffixes=(".engine", ".plan"),
    bundle_files=("model.engine", "model.plan", "build_engine.sh"),
    options={"workspace_mb": ((int,), "TensorRT builder workspace in MB"),
             "tensorrt": ((int,), "TensorRT major version the device runs: 8 (8.5/8.6: JetPack 5.x, 6.0), "
                          "10 (JetPack 6.1+) or 11 (current release)"),
             "int8_quantization": ((str,), "TensorRT INT8: explicit (Q/DQ in the ONNX, default) or implicit "
                                   "(TensorRT 8 and 10 only)", ("explicit", "implicit")),
             "bundle_wheel": ((str,), "a partialdeploy wheel (make dist) the bundle carries for the device")},
    check_options=_check,
    diff_via=("model.onnx", "onnxruntime"),  # without a GPU, `diff` compares the bundle's ONNX in ONNX Runtime
)
