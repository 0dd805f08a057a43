"""The two steps every target starts from: the deploy form (gated against the train form in PyTorch)
and its ONNX (exported, simplified, checked, gated in ONNX Runtime)."""

from __future__ import annotations

import json
from pathlib import Path

from partialdeploy import parity
from partialdeploy.exporting.request import ExportRequest
from partialdeploy.records import ParityResult


def deploy_form(model, px, ref, size: int, tolerances: dict):
    """(deploy-form model, its gate against the train form's logits ``ref``, BatchNorms folded)."""
    import torch

    from partialdeploy.reparam import reparameterize, torch_logits

    deploy = reparameterize(model, size)
    res = parity.gate(ref, torch_logits(deploy, px), "train form -> deploy form (PyTorch)",
                      tolerances.get("fp32", "fp32"))
    n_bn = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    return deploy, res, n_bn


def complexity(deploy, size: int) -> dict:
    """Parameters and FLOPs (one image) of the deploy form: what the manifest records for planning."""
    from partialdeploy.analysis.inspect import count_flops, count_params

    return {"params": count_params(deploy), "flops": count_flops(deploy, size).flops}


def onnx_metadata(spec, checkpoint_sha256: str) -> dict:
    """What the ONNX file carries about its model: the architecture, the preprocessing, the labels."""
    return {"model": spec.name, "architecture": spec.to_json(),
            "mean": json.dumps(list(spec.mean)), "std": json.dumps(list(spec.std)),
            "img_size": str(spec.img_size), "layout": "NCHW", "color": "RGB",
            "crop_ratio": str(spec.crop_ratio), "labels": json.dumps(list(spec.labels) if spec.labels else None),
            "checkpoint_sha256": checkpoint_sha256}


def deploy_onnx(req: ExportRequest, spec, ckpt, deploy, px, ref, staging: Path):
    """The deploy-form ONNX (with the preprocessing in its metadata) and its gate in ONNX Runtime:
    (path, exporting.onnx.OnnxInfo, ParityResult, the runner options it was gated with — what the
    `onnx` target's artifact, this same file, opens with: its certificate)."""
    from partialdeploy.exporting.onnx import export_onnx
    from partialdeploy import backends
    from partialdeploy.verification import runner_logits

    onnx_path = staging / "deploy.onnx"
    info = export_onnx(deploy, onnx_path, spec.img_size, dynamic_batch=req.dynamic_batch, batch=req.batch,
                       opset=req.opset, metadata=onnx_metadata(spec, ckpt.sha256), in_chans=spec.in_chans)
    options = {"threads": req.options.threads}
    with backends.get("onnxruntime").runner_class()(onnx_path, **options) as r:
        out = runner_logits(r, 1)(px)  # in the model's static batch, the last chunk padded
    res: ParityResult = parity.gate(ref, out, "train form -> ONNX (ONNX Runtime)", req.tolerances.get("fp32", "fp32"))
    return onnx_path, info, res, options


def onnx_summary(info, res: ParityResult) -> tuple[dict, str]:
    """(the manifest's ``onnx`` record, the stage's one-line detail)."""
    record = {"nodes": info.nodes, "opset": info.opset, "simplified": info.simplified, "ops": info.ops}
    detail = (f"{info.nodes} nodes, opset {info.opset}, {'simplified' if info.simplified else 'not simplified'}, "
              f"BatchNormalization: {info.ops.get('BatchNormalization', 0)}; {res.summary()}")
    return record, detail
