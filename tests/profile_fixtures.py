"""Small export directories for the profiling / report tests, built here (torch + openvino) so the
tests do not depend on the export pipeline: a tiny conv net laid out like PartialNet
(patch_embed, stages.N.blocks.M, head) so layer names map to blocks."""

from __future__ import annotations

import json
from pathlib import Path

SIZE = 64


def tiny_net():
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.spatial_mixing = nn.Conv2d(dim // 4, dim // 4, 3, 1, 1)
            self.mlp = nn.Sequential(nn.Conv2d(dim, dim * 2, 1), nn.GELU(), nn.Conv2d(dim * 2, dim, 1))
            self.c1 = dim // 4

        def forward(self, x):
            a, b = torch.split(x, [self.c1, x.shape[1] - self.c1], 1)
            y = torch.cat([self.spatial_mixing(a), b], 1)
            return x + self.mlp(y)

    class Stage(nn.Module):
        def __init__(self, dim, depth):
            super().__init__()
            self.blocks = nn.Sequential(*[Block(dim) for _ in range(depth)])

        def forward(self, x):
            return self.blocks(x)

    class Merge(nn.Module):
        def __init__(self, dim):
            super().__init__()
            self.reduction = nn.Conv2d(dim, dim * 2, 2, 2)

        def forward(self, x):
            return self.reduction(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.patch_embed = nn.Conv2d(3, 32, 4, 4)
            self.stages = nn.Sequential(Stage(32, 2), Merge(32), Stage(64, 2))
            self.head = nn.Linear(64, 10)

        def forward(self, x):
            x = self.stages(self.patch_embed(x))
            return self.head(x.mean((2, 3)))

    torch.manual_seed(0)
    return Net().eval()


def _sha(p: Path) -> str:
    from partialdeploy.integrity import artifact_sha256

    return artifact_sha256(p)


def export_onnx(path: Path, dynamic: bool = True, batch: int = 1, size: int = SIZE) -> Path:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    net = tiny_net()
    x = torch.randn(batch, 3, size, size)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, (x,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}
                          if dynamic else None)
    return path


def export_openvino(onnx_path: Path, xml_path: Path) -> Path:
    import openvino as ov

    xml_path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(ov.convert_model(str(onnx_path)), str(xml_path), compress_to_fp16=False)
    return xml_path


def make_export_dir(root: Path, with_unrunnable: bool = True) -> Path:
    """dist-like directory: onnx (dynamic batch), openvino fp32 (dynamic), onnx static batch 1,
    plus a TensorRT bundle and a CoreML package that cannot run here."""
    root = Path(root)
    onnx = export_onnx(root / "onnx" / "model.onnx", dynamic=True)
    export_onnx(root / "onnx-static" / "model.onnx", dynamic=False)
    export_openvino(onnx, root / "openvino" / "fp32" / "model.xml")
    arts = [("onnx", "fp32", "onnx/model.onnx", ["batch", 3, SIZE, SIZE]),
            ("openvino", "fp32", "openvino/fp32/model.xml", ["batch", 3, SIZE, SIZE]),
            ("onnxruntime", "fp32", "onnx-static/model.onnx", [1, 3, SIZE, SIZE])]
    if with_unrunnable:
        trt = root / "tensorrt" / "fp16"
        trt.mkdir(parents=True, exist_ok=True)
        (trt / "model.onnx").write_bytes(onnx.read_bytes())
        (trt / "build_engine.sh").write_text("#!/bin/sh\ntrtexec --onnx=model.onnx --fp16 --saveEngine=model.engine\n")
        ml = root / "coreml" / "fp16" / "model.mlpackage"
        ml.mkdir(parents=True, exist_ok=True)
        (ml / "Manifest.json").write_text("{}")
        arts += [("tensorrt", "fp16", "tensorrt/fp16", ["batch", 3, SIZE, SIZE]),
                 ("coreml", "fp16", "coreml/fp16/model.mlpackage", [1, 3, SIZE, SIZE])]
    manifest = {
        "schema": "partialdeploy.manifest/1", "tool": {"name": "partialdeploy", "version": "0.1.0"},
        "model": {"name": "TinyNet-test", "img_size": SIZE},
        "preprocessing": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "size": [SIZE, SIZE],
                          "layout": "NCHW", "color": "RGB"},
        "artifacts": [{"target": t, "precision": p, "path": rel,
                       "inputs": [{"name": "input", "shape": shape, "dtype": "float32"}],
                       "outputs": [{"name": "logits", "shape": [shape[0], 10], "dtype": "float32"}],
                       "sha256": _sha(root / rel), "size_bytes": 0, "parity": [], "verified": "parity"}
                      for t, p, rel, shape in arts],
        "failures": [],
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


_CACHE: dict = {}


def shared_export_dir(tmp_path_factory) -> Path:
    """One fixture export dir per test session (the tests must not write into it)."""
    if "dist" not in _CACHE:
        _CACHE["dist"] = make_export_dir(tmp_path_factory.mktemp("profile-dist"))
    return _CACHE["dist"]
