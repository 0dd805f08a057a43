"""`diff` and the export gate share one tolerance source (parity.py, or the tolerance the artifact's
manifest records): on an artifact its export certified, diff agrees (exit 0) unless told stricter,
and it marks the blocks the INT8 fallback kept in float."""

import hashlib
import json
import shutil
from dataclasses import asdict

import numpy as np
import onnx
from onnx import numpy_helper
from typer.testing import CliRunner

from partialdeploy import parity
from partialdeploy.analysis.blockdiff import run_diff
from partialdeploy.records import Artifact, ParityResult


def _scaled(src, dst, block, scale):
    m = onnx.load(str(src))
    inits = {i.name: i for i in m.graph.initializer}
    node = next(n for n in m.graph.node if n.name.startswith(block + "/") and n.op_type == "Conv"
                and len(n.input) > 1 and n.input[1] in inits)
    w = inits[node.input[1]]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * np.float32(scale), w.name))
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(m, str(dst))
    return dst


def _certified(demo_dir, tmp_path):
    """An export folder whose onnxruntime/int8 artifact drifts inside stages.4.blocks.1 beyond diff's
    per-block INT8 tolerance (cosine 0.974 < 0.98) while its logits hold the INT8 gate (cosine 0.92,
    15+/16 top-1): the manifest certifies it, with stages.2.blocks.0 recorded as kept in float."""
    from partialdeploy.integrity import files_sha256

    d = tmp_path / "d"
    shutil.copytree(demo_dir, d)
    rel = "onnxruntime/int8/model.onnx"
    f = _scaled(d / "onnx/fp32/model.onnx", d / rel, "stages.4.blocks.1", 1.3)
    tol = {k: v for k, v in asdict(parity.DEFAULT_TOLERANCES["int8"]).items() if v is not None}
    gate = ParityResult("ONNX -> ONNX Runtime int8 (16 parity images)", 16, 0.1, 0.03, 0.92, 1.0, tolerance=tol)
    e = Artifact(target="onnxruntime", precision="int8", path=rel, files=[rel],
                      sha256=hashlib.sha256(f.read_bytes()).hexdigest(), files_sha256=files_sha256(d, [rel]),
                      size_bytes=f.stat().st_size, parity=[gate], verified="parity",
                      extra={"int8_fallback": {"enabled": True, "float_blocks": ["stages.2.blocks.0"]}})
    m = json.loads((d / "manifest.json").read_text())
    m["artifacts"].append(e.to_dict())
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def test_diff_agrees_with_the_certificate_unless_told_stricter(demo_dir, tmp_path):
    d = _certified(demo_dir, tmp_path)
    ref, cand = d / "onnx/fp32/model.onnx", d / "onnxruntime/int8/model.onnx"
    res = run_diff(ref, cand)
    assert res.first_divergent == "stages.4.blocks.1"  # it still says where they drift ...
    assert res.gate.passed and res.agree and res.exit_code == 0  # ... and agrees with the export's verdict
    assert res.gate.tolerance["cosine_min"] == 0.9 and res.float_blocks == ["stages.2.blocks.0"]
    strict = run_diff(ref, cand, cosine_min=0.98)
    assert strict.strict and not strict.agree and strict.exit_code == 1


def test_diff_table_marks_float_blocks(demo_dir, tmp_path):
    from partialdeploy.cli import app

    d = _certified(demo_dir, tmp_path)
    r = CliRunner().invoke(app, ["diff", str(d / "onnx/fp32/model.onnx"), str(d / "onnxruntime/int8/model.onnx")])
    assert r.exit_code == 0, r.output
    assert "stages.2.blocks.0 (float)" in r.output and "kept in float by the INT8 fallback" in r.output
    assert "within the export gate" in r.output
    r = CliRunner().invoke(app, ["diff", str(d / "onnx/fp32/model.onnx"), str(d / "onnxruntime/int8/model.onnx"),
                                 "--cosine-min", "0.98"])
    assert r.exit_code == 1 and "they part at stages.4.blocks.1" in r.output
