"""INT8 that holds its gate (issue #10): on a model where plain post-training quantization misses the
INT8 gate — the trained demo network with activation outlier channels injected in two blocks (the
function unchanged) — the fallback ranks blocks by the quantization error they add, keeps the
guilty ones in float and passes, for OpenVINO (NNCF ignored scope), ONNX Runtime (nodes_to_exclude)
and the TensorRT bundle (blocks left without Q/DQ in its explicit-quantization ONNX, proven in ONNX
Runtime on CPU); ``--no-fallback`` and a too-small budget fail with the numbers."""

import json

import numpy as np
import pytest

from conftest import run_cli
from partialdeploy.exporting.options import ExportOptions

pytest.importorskip("onnxruntime")

OUTLIER_BLOCKS = ["stages.0.blocks.0", "stages.4.blocks.0"]


@pytest.fixture(scope="module")
def outlier_ctx_factory(tmp_path_factory):
    from targets_common import _demo

    from partialdeploy import demo
    from partialdeploy.checkpoint import load_checkpoint, load_model
    from partialdeploy.backends.target import ExportContext
    from partialdeploy.exporting.onnx import export_onnx
    from partialdeploy.models.outliers import inject_activation_outliers
    from partialdeploy.reparam import reparameterize, torch_logits

    spec, _deploy, ex, ey, ref, calib = _demo()
    ck = load_checkpoint(demo.DEMO_CKPT)
    model = load_model(ck, spec)
    inject_activation_outliers(model, OUTLIER_BLOCKS, scale=300.0)
    ref2 = torch_logits(model, ex, batch=64)
    assert np.abs(ref2 - ref).max() < 1e-4  # the function is unchanged
    deploy = reparameterize(model, spec.img_size)
    path = tmp_path_factory.mktemp("outliers") / "deploy.onnx"
    meta = {"img_size": str(spec.img_size), "mean": json.dumps(list(spec.mean)), "std": json.dumps(list(spec.std)),
            "crop_ratio": str(spec.crop_ratio), "checkpoint_sha256": ck.sha256}  # `diff` feeds it held-out digits
    export_onnx(deploy, path, spec.img_size, metadata=meta)
    ev = slice(0, 120)  # a held-out subset keeps each gate run short

    def make(**options):
        return ExportContext(spec=spec, onnx_path=path, img_size=spec.img_size, dynamic_batch=False,
                             precision="int8", input_name="input", output_name="logits", parity_inputs=ex[:16],
                             reference=ref2[:16], calib=calib[:32], calib_source="demo calibration digits",
                             eval_images=ex[ev], eval_labels=ey[ev], eval_reference=ref2[ev], deploy_model=deploy,
                             options=ExportOptions.from_fields({"batch": 1, **options}))
    return make


@pytest.mark.parametrize("target", ["openvino", "onnxruntime", "tensorrt"])
def test_fallback_keeps_the_outlier_blocks_in_float(outlier_ctx_factory, tmp_path, target):
    if target == "openvino":
        pytest.importorskip("openvino")
        pytest.importorskip("nncf")
    from targets_common import export

    art = export(target, outlier_ctx_factory(), tmp_path)
    fb = art.extra["int8_fallback"]
    before, after = fb["before"], fb["after"]
    assert not before["passed"] and before["top1_agree"] < 0.9  # plain PTQ misses the gate
    assert after["passed"] and after["top1_agree"] >= 0.9 and after["acc_ref"] - after["acc"] <= 0.005
    # the blocks with outliers rank first and stay float (ORT's minmax calibration on 32 images may
    # need one more); nothing else is given up
    assert set(fb["ranking"][:2]) == set(OUTLIER_BLOCKS)
    assert set(OUTLIER_BLOCKS) <= set(fb["float_blocks"]) and len(fb["float_blocks"]) <= 3
    if target == "openvino":
        assert sorted(fb["float_blocks"]) == OUTLIER_BLOCKS
    assert fb["latency_ms"]["plain"] > 0 and fb["latency_ms"]["fallback"] > 0
    assert any(n.startswith("INT8 fallback") and "stages.0.blocks.0" in n for n in art.notes)
    assert all(p.passed for p in art.parity)  # the saved artifact passed the ordinary gate too
    if target in ("onnxruntime", "tensorrt"):  # the float blocks have no Q/DQ around their nodes, the rest does
        import onnx

        m = onnx.load(str(tmp_path / "model.onnx"))
        producer = {t: n.op_type for n in m.graph.node for t in n.output}
        quantized = next(b for b in ("stages.4.blocks.1", "stages.2.blocks.0") if b not in fb["float_blocks"])

        def fc1_fed_by_dq(block):
            fc1 = next(n for n in m.graph.node if n.name.startswith(block + "/fc1/") and n.op_type == "Conv")
            return producer.get(fc1.input[0]) == "DequantizeLinear"

        assert not fc1_fed_by_dq("stages.0.blocks.0") and fc1_fed_by_dq(quantized)
    if target == "tensorrt":  # the bundle's explicit-quantization ONNX: what TensorRT 10 and 11 build
        b = json.loads((tmp_path / "bundle.json").read_text())
        assert b["onnx_precision"]["excluded_blocks"] == fb["float_blocks"]
        assert b["onnx_precision"]["float_nodes"] > 0 and "left without Q/DQ" in b["onnx_precision"]["summary"]
        assert "stages.0.blocks.0" in (tmp_path / "README.txt").read_text()
        assert "ONNX Runtime CPU" in fb["latency_ms"]["method"]  # no GPU here: says where the cost was timed
        assert not list(tmp_path.glob("*.part.onnx"))  # attempts cleaned up


def test_int8_exclude_keeps_the_asked_blocks_in_float_from_the_start(outlier_ctx_factory, tmp_path):
    """``--int8-exclude`` (or the profile's ``int8_exclude``): the first quantization already leaves those
    blocks in float; the loop only adds to them."""
    from targets_common import export

    art = export("onnxruntime", outlier_ctx_factory(int8_exclude=",".join(OUTLIER_BLOCKS)), tmp_path)
    fb = art.extra["int8_fallback"]
    assert fb["asked"] == OUTLIER_BLOCKS and fb["attempts"][0]["float_blocks"] == OUTLIER_BLOCKS
    assert fb["after"]["passed"] and set(OUTLIER_BLOCKS) <= set(fb["float_blocks"])
    assert any(n.startswith("INT8 fallback") and OUTLIER_BLOCKS[0] in n for n in art.notes)
    import onnx

    m = onnx.load(str(tmp_path / "model.onnx"))
    producer = {t: n.op_type for n in m.graph.node for t in n.output}
    for block in OUTLIER_BLOCKS:  # no Q/DQ feeds the asked blocks' first convolution
        fc1 = next(n for n in m.graph.node if n.name.startswith(block + "/fc1/") and n.op_type == "Conv")
        assert producer.get(fc1.input[0]) != "DequantizeLinear", block


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_no_fallback_fails_with_the_numbers(outlier_ctx_factory, tmp_path, target):
    from partialdeploy.errors import VerificationError
    from targets_common import export

    with pytest.raises(VerificationError, match=r"--no-fallback.*top-1 agreement \d+\.\d%"):
        export(target, outlier_ctx_factory(int8_fallback=False), tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written (no bundle, no attempt files)


@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_no_mix_within_budget_fails_with_every_attempt(outlier_ctx_factory, tmp_path, target):
    from partialdeploy.errors import VerificationError
    from targets_common import export

    with pytest.raises(VerificationError) as e:
        export(target, outlier_ctx_factory(int8_max_float_blocks=1), tmp_path)
    msg = str(e.value)
    assert "no mix of up to 1 float blocks" in msg and "float [none]" in msg
    assert "float [stages.0.blocks.0]" in msg or "float [stages.4.blocks.0]" in msg
    assert not list(tmp_path.iterdir())  # attempts cleaned up, nothing half-written


def test_diff_names_the_outlier_block_in_plain_qdq(outlier_ctx_factory, tmp_path):
    """`diff` between the fp32 ONNX and the plain-PTQ Q/DQ ONNX of the TensorRT bundle (what
    --no-fallback would ship) names the first outlier block: the block the fallback keeps in float."""
    from partialdeploy.analysis.blockdiff import run_diff
    from partialdeploy.backends.tensorrt.precision import to_qdq_int8

    ctx = outlier_ctx_factory()
    to_qdq_int8(ctx.onnx_path, tmp_path / "plain.onnx", ctx.calib, "input")
    res = run_diff(ctx.onnx_path, tmp_path / "plain.onnx", images=None, count=16)
    assert res.cand["precision"] == "int8" and res.exit_code == 1
    assert res.first_divergent == OUTLIER_BLOCKS[0]
    assert [b.block for b in res.blocks][0] == "patch_embed" and res.blocks[0].within


@pytest.mark.slow
@pytest.mark.parametrize("target", ["onnxruntime", "tensorrt"])
def test_cli_export_reports_float_blocks_and_no_fallback_exits_1(tmp_path, target):
    """End to end through the CLI on an outlier checkpoint: manifest + summary name the float blocks."""
    from safetensors.torch import save_file

    from partialdeploy import demo
    from partialdeploy.checkpoint import load_checkpoint, load_model, resolve_spec
    from partialdeploy.models.outliers import inject_activation_outliers

    ck = load_checkpoint(demo.DEMO_CKPT)
    spec, _ = resolve_spec(ck)
    model = inject_activation_outliers(load_model(ck, spec), OUTLIER_BLOCKS, scale=300.0)
    ckpt = tmp_path / "outliers.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt), metadata=dict(ck.metadata))
    out = tmp_path / "dist"
    r = run_cli("export", ckpt, "--target", target, "--precision", "int8", "--no-fallback", "-o", out)
    assert r.returncode == 1 and "no-fallback" in r.stderr + r.stdout and not out.exists()
    r = run_cli("export", ckpt, "--target", target, "--precision", "int8", "-o", out,
                env={"COLUMNS": "200"})
    assert r.returncode == 0, r.stderr
    assert "block(s) in float" in r.stdout and "stages.0.blocks.0" in r.stdout
    man = json.loads((out / "manifest.json").read_text())
    fb = man["artifacts"][0]["extra"]["int8_fallback"]
    assert set(OUTLIER_BLOCKS) <= set(fb["float_blocks"]) and not fb["before"]["passed"] and fb["after"]["passed"]
