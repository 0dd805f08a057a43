"""The `onnx` target: the deploy ONNX with the attention's q/k/v projections fused into one MatMul +
Split, gated on its own (real ONNX Runtime); a model without attention gets the deploy ONNX byte for
byte, certified by the deploy ONNX's gate."""

import hashlib
import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from onnx import numpy_helper  # noqa: E402

from partialdeploy import demo, verification  # noqa: E402
from partialdeploy.exporting.request import ExportRequest  # noqa: E402
from partialdeploy.exporting.run import run_export  # noqa: E402

ATTN = "stages.6.blocks.0"  # the demo's attention (PAT_sf) block


def _sha(p) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _spy(monkeypatch) -> list:
    """(sha256 of the file, runner) of every file the one run-and-gate path opened."""
    opened = []
    real = verification.verify_file
    monkeypatch.setattr(verification, "verify_file", lambda ctx, cls, path, *a, **k:
                        opened.append((_sha(path), cls.name)) or real(ctx, cls, path, *a, **k))
    return opened


def _const_matmuls_per_input(m) -> dict:
    inits = {i.name for i in m.graph.initializer}
    per: dict = {}
    for n in m.graph.node:
        if n.op_type == "MatMul" and n.input[1] in inits:
            per.setdefault(n.input[0], []).append(n.name)
    return per


@pytest.fixture(scope="module")
def fused_export(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    try:
        opened = _spy(mp)
        dist = tmp_path_factory.mktemp("onnxform") / "dist"
        res = run_export(ExportRequest(targets=("onnx",), out_dir=dist, parity_images=4))
    finally:
        mp.undo()
    assert res.exit_code == 0, res.failures
    return res, json.loads((dist / "manifest.json").read_text()), opened


def test_attention_model_ships_fused_qkv_gated_on_its_own(fused_export):
    res, manifest, opened = fused_export
    entry = manifest["artifacts"][0]
    f = res.out_dir / entry["path"]
    m = onnx.load(str(f))
    assert entry["extra"]["deploy_form"] == {"attention_projections": "fused qkv"}
    assert any("q/k/v projections fused" in n for n in entry["notes"])
    # one projection per q/k/v group: no tensor feeds several constant-weight MatMuls any more
    assert all(len(v) == 1 for v in _const_matmuls_per_input(m).values())
    assert not [n.name for n in m.graph.node if any(f"/mixing/{p}/MatMul" in n.name for p in "qkv")]
    fused = [n for n in m.graph.node if "fused_matmul" in n.name]
    assert [n.op_type for n in fused] == ["MatMul", "Add", "Split"]
    assert all(n.name.startswith(f"{ATTN}/mixing/fused_matmul_") for n in fused)  # named in its block
    # the manifest's parity record comes from a run of this very file in ONNX Runtime
    assert (entry["sha256"], "onnxruntime") in opened
    assert entry["verified"] == "parity" and entry["parity"][-1]["passed"]
    assert entry["parity"][-1]["stage"] == "ONNX -> ONNX Runtime fp32 (4 parity images)"
    assert entry["parity"][-1]["rel_max"] < 1e-4
    # everything else an ONNX consumer reads is the deploy ONNX's: metadata, inputs, outputs
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["block_outputs"])[-2] == ATTN and meta["producer"] == "partialdeploy"


def test_fused_artifact_profiles_and_diffs_by_block(fused_export, tmp_path):
    """Per-layer profile rows of the fused projection map to the attention block; `diff` on the
    export directory attributes a change in the fused weight to that block."""
    from partialdeploy import families
    from partialdeploy.analysis.blockdiff import run_diff
    from partialdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner
    from partialdeploy.spec import ArchSpec

    res, manifest, _ = fused_export
    f = res.out_dir / manifest["artifacts"][0]["path"]
    spec = ArchSpec.from_dict(manifest["model"])
    with OnnxRuntimeRunner(f, threads=1, profile_layers=True) as r:
        x = np.zeros((1, 3, spec.img_size, spec.img_size), np.float32)
        r.run(x)
        rows = r.layer_times()
    fam = families.get(spec.family)
    fused_rows = [row for row in rows if "fused_matmul" in row["name"]]
    assert fused_rows and {fam.block_of_layer(row["name"], spec) for row in fused_rows} == {ATTN}

    d = run_diff(demo.DEMO_CKPT, res.out_dir, target="onnx", count=4)
    assert d.agree and ATTN in [b.block for b in d.blocks]
    m = onnx.load(str(f))
    w = next(i for i in m.graph.initializer if i.name.startswith(f"{ATTN}/mixing/fused_matmul_"))
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * np.float32(1.5), w.name))
    changed = tmp_path / "changed.onnx"
    onnx.save(m, str(changed))
    d = run_diff(f, changed, count=4)
    assert d.first_divergent == ATTN


def test_fused_artifact_is_exact_in_openvino(fused_export):
    """The interchange model is read by OpenVINO too: its fused form (MatMul + Add + Split, not the
    qkv + Gather whose static-shape attention OpenVINO's CPU plugin miscomputed) is exact there."""
    ov = pytest.importorskip("openvino", reason="OpenVINO is not installed")
    import onnxruntime as ort

    res, manifest, _ = fused_export
    f = res.out_dir / manifest["artifacts"][0]["path"]
    spec_size = manifest["model"]["img_size"]
    x = np.random.default_rng(0).standard_normal((4, 3, spec_size, spec_size)).astype(np.float32)
    sess = ort.InferenceSession(str(f), providers=["CPUExecutionProvider"])
    want = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    c = ov.Core().compile_model(str(f), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    got = np.concatenate([c(x[i:i + 1])[0] for i in range(len(x))])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_model_without_attention_is_the_deploy_onnx_certified_by_its_gate(tmp_path, monkeypatch):
    from partialdeploy.checkpoint import save_safetensors
    from partialdeploy.families import variant_spec
    from partialdeploy.models import build_model

    # no attention blocks (no PAT_sf): every mixer is a partial conv, nothing to fuse
    spec = variant_spec("partialnet", "t0", embed_dim=16, depths=(1, 1, 1, 1), num_classes=10, img_size=32,
                        use_channel_attn=False)
    ck = tmp_path / "noattn.safetensors"
    save_safetensors(build_model(spec).eval(), spec, ck)
    opened = _spy(monkeypatch)
    res = run_export(ExportRequest(checkpoint=ck, targets=("onnx",), out_dir=tmp_path / "dist", parity_images=4))
    assert res.exit_code == 0, res.failures
    art = res.artifacts[0]
    assert art.extra["deploy_form"] == {"attention_projections": "as exported"}
    assert art.verified == "parity" and art.parity[-1].passed and opened == []  # the deploy gate certified it
    m = onnx.load(str(res.out_dir / art.path))
    assert not [n for n in m.graph.node if "fused_matmul" in n.name]


def test_a_fusing_error_keeps_the_deploy_onnx_and_says_so(tmp_path, monkeypatch):
    from partialdeploy.exporting import onnx_forms

    def broken(src, dst):
        raise ValueError("cannot fuse here\nsecond line")

    monkeypatch.setattr(onnx_forms, "fuse_sibling_matmuls", broken)
    opened = _spy(monkeypatch)
    res = run_export(ExportRequest(targets=("onnx",), out_dir=tmp_path / "dist", parity_images=4))
    assert res.exit_code == 0, res.failures
    art = res.artifacts[0]
    assert art.extra["deploy_form"] == {"attention_projections": "as exported"}
    assert any("left separate" in n and "cannot fuse here" in n and "second line" not in n for n in art.notes)
    assert art.verified == "parity" and art.parity[-1].passed and opened == []  # the deploy gate certified it
    m = onnx.load(str(res.out_dir / art.path))
    assert [n for n in m.graph.node if n.name.endswith("/mixing/q/MatMul")]  # the separate projections
    assert sorted(p.name for p in (res.out_dir / "onnx" / "fp32").iterdir()) == ["model.onnx"]


def test_a_fused_form_missing_its_gate_falls_back_to_the_deploy_onnx(tmp_path, monkeypatch):
    """A rewrite that changed the numbers (here: the fused weight scaled after the real fusion) is
    caught by the fused file's own gate in ONNX Runtime; the deploy ONNX as exported is shipped instead,
    certified by its gate, and the notes say why."""
    from partialdeploy.exporting import onnx_forms

    real = onnx_forms.fuse_sibling_matmuls

    def wrong(src, dst):
        n = real(src, dst)
        m = onnx.load(str(dst))
        w = next(i for i in m.graph.initializer if "fused_matmul" in i.name and i.name.endswith("/weight"))
        w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * np.float32(1.5), w.name))
        onnx.save(m, str(dst))
        return n

    monkeypatch.setattr(onnx_forms, "fuse_sibling_matmuls", wrong)
    res = run_export(ExportRequest(targets=("onnx",), out_dir=tmp_path / "dist", parity_images=4))
    assert res.exit_code == 0, res.failures
    art = res.artifacts[0]
    assert art.extra["deploy_form"] == {"attention_projections": "as exported"}
    assert len(art.notes) == 1 and "missed its parity gate" in art.notes[0], art.notes
    assert art.verified == "parity" and art.parity[-1].passed and art.parity[-1].rel_max < 1e-4
    m = onnx.load(str(res.out_dir / art.path))
    assert not [n for n in m.graph.node if "fused_matmul" in n.name]
