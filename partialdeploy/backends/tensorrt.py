"""TensorRT: a bundle to build the engine on the device (``build-engine``); runs engines there."""

from partialdeploy.backends import Backend
from partialdeploy.errors import UserError


def _check(fields: dict, where: str) -> None:
    if "tensorrt" in fields and fields["tensorrt"] not in (10, 11):
        raise UserError(f"{where}: field 'tensorrt' is {fields['tensorrt']}; choose 10 (Jetson/JetPack) or 11")
    if fields.get("int8_quantization") == "implicit" and fields.get("tensorrt") != 10:
        raise UserError(f"{where}: int8_quantization: implicit needs tensorrt: 10 (TensorRT 11 removed calibrators)")
    if "workspace_mb" in fields and fields["workspace_mb"] < 1:
        raise UserError(f"{where}: field 'workspace_mb' must be ≥ 1, got {fields['workspace_mb']}")


BACKEND = Backend(
    name="tensorrt",
    label="TensorRT",
    runner="partialdeploy.runners.tensorrt:TensorRTRunner",
    dists=("tensorrt",),
    helper_dists=("cuda-python",),
    targets={"tensorrt": "partialdeploy.exporters.tensorrt:TensorRTTarget"},
    aliases=("trt",),
    suffixes=(".engine", ".plan"),
    bundle_files=("model.engine", "model.plan", "build_engine.sh"),
    options={"workspace_mb": ((int,), "TensorRT builder workspace in MB"),
             "tensorrt": ((int,), "TensorRT major version the device runs: 10 (JetPack/Jetson) or 11 "
                          "(current release)"),
             "int8_quantization": ((str,), "TensorRT INT8: explicit (Q/DQ in the ONNX, default) or implicit "
                                   "(TensorRT 10 only)", ("explicit", "implicit"))},
    check_options=_check,
    diff_via=("model.onnx", "onnxruntime"),  # without a GPU, `diff` compares the bundle's ONNX in ONNX Runtime
    summary="TensorRT bundle (engine built on the device): fp32, fp16, INT8 (Q/DQ)",
)
