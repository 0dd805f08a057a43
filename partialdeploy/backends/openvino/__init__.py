"""OpenVINO: IR (model.xml + .bin), fp32/fp16/bf16 and INT8 through NNCF."""

from partialdeploy.backends import Backend

BACKEND = Backend(
    name="openvino",
    label="OpenVINO",
    runner="partialdeploy.backends.openvino.runner:OpenVINORunner",
    dists=("openvino",),
    targets={"openvino": "partialdeploy.backends.openvino.target:OpenVINOTarget"},
    aliases=("ov",),
    device_install="pip install openvino",
    suffixes=(".xml",),
    options={"openvino_preset": ((str,), "OpenVINO INT8 NNCF preset: mixed or performance",
                                 ("mixed", "performance"))},
)
