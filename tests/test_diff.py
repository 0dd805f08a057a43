"""`partialdeploy diff` and official block names in exported graphs (issue #10)."""

import json

import numpy as np
import pytest

from conftest import run_cli
from test_exit_codes import cli  # noqa: F401 (the in-process entry point fixture)

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

DEMO_BOUNDARIES = ["patch_embed", "stages.0.blocks.0", "stages.1", "stages.2.blocks.0", "stages.3",
                   "stages.4.blocks.0", "stages.4.blocks.1", "stages.5", "stages.6.blocks.0", "head"]


@pytest.fixture(scope="module")
def demo_onnx(tmp_path_factory):
    from partialdeploy import demo
    from partialdeploy.checkpoint import load_checkpoint, load_model, resolve_spec
    from partialdeploy.exporting.onnx import export_onnx
    from partialdeploy.reparam import reparameterize

    ck = load_checkpoint(demo.DEMO_CKPT)
    spec, _ = resolve_spec(ck)
    d = reparameterize(load_model(ck, spec), spec.img_size)
    path = tmp_path_factory.mktemp("diff") / "model.onnx"
    meta = {"img_size": str(spec.img_size), "mean": json.dumps(list(spec.mean)), "std": json.dumps(list(spec.std)),
            "crop_ratio": str(spec.crop_ratio), "checkpoint_sha256": ck.sha256}
    export_onnx(d, path, spec.img_size, metadata=meta)
    return path


def test_onnx_nodes_and_block_outputs_carry_official_names(demo_onnx):
    m = onnx.load(str(demo_onnx))
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["block_outputs"]) == DEMO_BOUNDARIES
    computing = [n for n in m.graph.node if n.op_type != "Constant"]
    assert not [n.name for n in computing if "body" in n.name or n.name.startswith("/")]
    assert {n.name.split("/")[0] for n in computing} == set(DEMO_BOUNDARIES)
    produced = {t for n in m.graph.node for t in n.output}
    assert set(DEMO_BOUNDARIES[:-1]) <= produced  # each block's output tensor is named after the block
    blk = next(n for n in m.graph.node if n.output[0] == "stages.4.blocks.1")
    assert blk.op_type == "Add" and blk.name == "stages.4.blocks.1/Add"  # the residual add closes the block
    from partialdeploy.profiling.layers import block_of

    assert block_of("stages.4.blocks.1/fc1/Conv") == "stages.4.blocks.1"
    assert block_of("patch_embed/Conv") == "patch_embed" and block_of("stages.3/Conv") == "stages.3"


def _perturb(src, dst, block, scale=1.3):
    """Copy of the ONNX with the first weight initializer of ``block`` scaled: only that block changes."""
    from onnx import numpy_helper

    m = onnx.load(str(src))
    inits = {i.name: i for i in m.graph.initializer}
    node = next(n for n in m.graph.node if n.name.startswith(block + "/") and n.op_type == "Conv"
                and len(n.input) > 1 and n.input[1] in inits)
    w = inits[node.input[1]]
    w.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(w) * np.float32(scale), w.name))
    onnx.save(m, str(dst))
    return dst


def test_diff_checkpoint_vs_onnx_agree(demo_onnx):
    from partialdeploy import demo

    r = run_cli("diff", demo.DEMO_CKPT, demo_onnx, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["first_divergent"] is None and res["agree"] and res["top1_agreement"] == 1.0
    assert [b["block"] for b in res["blocks"]] == DEMO_BOUNDARIES
    assert all(b["rel_max"] < 1e-5 and b["cosine_min"] > 0.99999 for b in res["blocks"])


@pytest.mark.parametrize("block", ["stages.2.blocks.0", "stages.4.blocks.1"])
def test_diff_names_the_perturbed_block(demo_onnx, tmp_path, block):
    from partialdeploy.analysis.blockdiff import run_diff

    bad = _perturb(demo_onnx, tmp_path / "bad.onnx", block)
    res = run_diff(demo_onnx, bad)
    assert res.first_divergent == block and res.exit_code == 1
    names = [b.block for b in res.blocks]
    before = res.blocks[: names.index(block)]
    assert before and all(b.within and b.rel_max < 1e-6 for b in before)  # bit-identical before the block


def test_diff_train_form_vs_openvino_perturbed(demo_onnx, tmp_path):
    ov = pytest.importorskip("openvino")
    from partialdeploy import demo

    bad = _perturb(demo_onnx, tmp_path / "bad.onnx", "stages.1", scale=1.1)
    ov.save_model(ov.convert_model(str(bad)), str(tmp_path / "bad.xml"))
    r = run_cli("diff", demo.DEMO_CKPT, tmp_path / "bad.xml", "--json")
    assert r.returncode == 1, r.stderr
    res = json.loads(r.stdout)
    assert res["first_divergent"] == "stages.1"
    assert res["blocks"][0]["block"] == "patch_embed" and res["blocks"][0]["within"]


def test_diff_error_paths(demo_onnx, tmp_path):
    from partialdeploy import demo

    r = run_cli("diff", tmp_path / "missing.onnx", demo_onnx)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "emptydir").mkdir()
    r = run_cli("diff", demo.DEMO_CKPT, tmp_path / "emptydir")
    assert r.returncode == 2 and "manifest.json" in r.stderr
    (tmp_path / "x.txt").write_text("hello")
    r = run_cli("diff", demo.DEMO_CKPT, tmp_path / "x.txt")
    assert r.returncode == 2 and "cannot tell" in r.stderr
    r = run_cli("diff", demo.DEMO_CKPT, demo_onnx, "--images", tmp_path / "nope")
    assert r.returncode == 2 and "--images" in r.stderr


@pytest.mark.slow  # a real two-target export and four diffs, each its own interpreter: `make test-slow`
def test_diff_export_dir_checks_sha256_and_choice(tmp_path):
    from partialdeploy import demo

    out = tmp_path / "dist"
    r = run_cli("export", "--target", "onnx,onnxruntime", "-o", out)
    assert r.returncode == 0, r.stderr
    r = run_cli("diff", demo.DEMO_CKPT, out)
    assert r.returncode == 2 and "several artifacts" in r.stderr
    r = run_cli("diff", demo.DEMO_CKPT, out, "--target", "openvino")
    assert r.returncode == 2 and "no artifact" in r.stderr
    r = run_cli("diff", demo.DEMO_CKPT, out, "--target", "onnxruntime", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["cand"]["input"].endswith("(onnxruntime/fp32)")
    art = out / "onnxruntime" / "fp32" / "model.onnx"
    data = bytearray(art.read_bytes())
    data[-10] ^= 0xFF  # damage the artifact: diff must refuse it, not compare it
    art.write_bytes(bytes(data))
    r = run_cli("diff", demo.DEMO_CKPT, out, "--target", "onnxruntime")
    assert r.returncode == 2 and "changed after export" in r.stderr and "Traceback" not in r.stderr


def test_diff_export_dir_choice_and_sha256_in_process(cli, demo_dir, tmp_path):  # noqa: F811
    """The slow test above without its export: the session's demo export with a second artifact entered
    in its manifest (the same ONNX as onnxruntime/fp32, its sha256 recorded), diffed through the real
    entry point in this process: several artifacts -> pick one; none matching -> say what there is;
    the picked one diffed; a byte changed after export -> refused, not compared."""
    import shutil

    from partialdeploy import demo
    from partialdeploy.integrity import files_sha256
    from partialdeploy.records import Artifact

    d = tmp_path / "dist"
    shutil.copytree(demo_dir, d)
    rel = "onnxruntime/fp32/model.onnx"
    (d / rel).parent.mkdir(parents=True)
    shutil.copyfile(d / "onnx/fp32/model.onnx", d / rel)
    sha = files_sha256(d, [rel])
    m = json.loads((d / "manifest.json").read_text())
    m["artifacts"].append(Artifact(target="onnxruntime", precision="fp32", path=rel, files=[rel], sha256=sha[rel],
                                   files_sha256=sha, size_bytes=(d / rel).stat().st_size,
                                   verified="parity").to_dict())
    (d / "manifest.json").write_text(json.dumps(m))
    code, _, err = cli("diff", demo.DEMO_CKPT, d)
    assert code == 2 and "several artifacts (onnx/fp32, onnxruntime/fp32)" in err
    code, _, err = cli("diff", demo.DEMO_CKPT, d, "--target", "openvino")
    assert code == 2 and "no artifact" in err and "it has: onnx/fp32, onnxruntime/fp32" in err
    code, out, err = cli("diff", demo.DEMO_CKPT, d, "--target", "onnxruntime", "--json")
    assert code == 0, err
    res = json.loads(out)
    assert res["cand"]["input"].endswith("(onnxruntime/fp32)") and res["first_divergent"] is None
    data = bytearray((d / rel).read_bytes())
    data[-10] ^= 0xFF  # damage the artifact: diff must refuse it, not compare it
    (d / rel).write_bytes(bytes(data))
    code, _, err = cli("diff", demo.DEMO_CKPT, d, "--target", "onnxruntime")
    assert code == 2 and "changed after export" in err and "Traceback" not in err


def test_diff_onnxruntime_vs_openvino_both_ways(demo_onnx, tmp_path):
    """ONNX Runtime against OpenVINO, each as REF and as CAND: the same graph agrees, a perturbed block is
    named whichever side carries it."""
    ov = pytest.importorskip("openvino")
    from partialdeploy.analysis.blockdiff import run_diff

    ov.save_model(ov.convert_model(str(demo_onnx)), str(tmp_path / "same.xml"))
    bad = _perturb(demo_onnx, tmp_path / "bad.onnx", "stages.4.blocks.0")
    ov.save_model(ov.convert_model(str(bad)), str(tmp_path / "bad.xml"))
    same = run_diff(demo_onnx, tmp_path / "same.xml")
    assert same.exit_code == 0 and same.first_divergent is None and [b.block for b in same.blocks] == DEMO_BOUNDARIES
    for ref, cand in ((demo_onnx, tmp_path / "bad.xml"), (tmp_path / "bad.xml", demo_onnx)):
        res = run_diff(ref, cand)
        assert res.exit_code == 1 and res.first_divergent == "stages.4.blocks.0", (ref, cand)
        assert {"ONNX Runtime", "OpenVINO"} == {res.ref["runtime"], res.cand["runtime"]}
    r = run_cli("diff", tmp_path / "bad.xml", demo_onnx, "--json")  # CAND's precision sets the tolerance
    assert r.returncode == 1 and json.loads(r.stdout)["first_divergent"] == "stages.4.blocks.0"


def test_diff_train_form_vs_tensorrt_int8_bundle(tmp_path):
    """An export directory holding a TensorRT bundle: its Q/DQ ONNX runs in ONNX Runtime here, at the
    INT8 tolerance, every block boundary exposed."""
    from partialdeploy import demo

    out = tmp_path / "dist"
    r = run_cli("export", "--target", "tensorrt", "--precision", "int8", "-o", out)
    assert r.returncode == 0, r.stderr
    r = run_cli("diff", demo.DEMO_CKPT, out, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["cand"]["input"].endswith("(tensorrt/int8)") and res["tolerance"]["cosine_min"] == 0.98
    assert [b["block"] for b in res["blocks"]] == DEMO_BOUNDARIES and res["first_divergent"] is None
    assert res["top1_agreement"] >= 0.9 and res["blocks"][0]["cosine_min"] < 1.0  # quantized, not fp32
