"""The export flow as a whole: --target all past an unavailable runtime, a failed target claims
nothing while the others land, manifests merge across runs, staging never leaks."""

import json

import pytest
from typer.testing import CliRunner

from partialdeploy.cli import app


def _manifest(out):
    return json.loads((out / "manifest.json").read_text())


def test_all_goes_on_past_an_unavailable_runtime(tmp_path, monkeypatch):
    from partialdeploy.backends.openvino.target import OpenVINOTarget

    monkeypatch.setattr(OpenVINOTarget, "requires", ("openvino_not_installed_here",))
    out = tmp_path / "d"
    r = CliRunner().invoke(app, ["export", "--target", "all", "-o", str(out)])
    assert r.exit_code == 0, r.output
    m = _manifest(out)
    assert {a["target"] for a in m["artifacts"]} == {"onnx", "onnxruntime", "coreml", "tensorrt"}
    assert [s["target"] for s in m["skipped"]] == ["openvino"]
    assert "skipped" in r.output and "openvino" in r.output
    assert not (out / "openvino").exists()
    # asked for explicitly, the same missing runtime is an error (exit 2), not a skip
    r2 = CliRunner().invoke(app, ["export", "--target", "openvino", "-o", str(tmp_path / "e")])
    assert r2.exit_code == 2 and "unavailable" in r2.output and not (tmp_path / "e").exists()


def test_failed_target_claims_nothing_others_land_exit_1(tmp_path, monkeypatch):
    from partialdeploy.errors import VerificationError
    from partialdeploy.backends.openvino.target import OpenVINOTarget

    def broken(self, ctx, out_dir):
        (out_dir / "model.xml").write_text("half-written")
        raise VerificationError("parity gate 'ONNX -> OpenVINO fp32' failed: cosine 0.9 < 0.99999")

    monkeypatch.setattr(OpenVINOTarget, "export", broken)
    out = tmp_path / "d"
    r = CliRunner().invoke(app, ["export", "--target", "onnx,onnxruntime,openvino", "-o", str(out)])
    assert r.exit_code == 1, r.output
    m = _manifest(out)
    assert {a["target"] for a in m["artifacts"]} == {"onnx", "onnxruntime"}
    assert m["failures"][0]["target"] == "openvino" and m["failures"][0]["kind"] == "verification"
    assert not (out / "openvino").exists()
    assert not [p for p in tmp_path.rglob(".partialdeploy-staging*")]


def test_manifest_merges_precisions_and_checksums_match(tmp_path):
    import hashlib

    out = tmp_path / "d"
    runner = CliRunner()
    assert runner.invoke(app, ["export", "--target", "onnxruntime", "-o", str(out)]).exit_code == 0
    r8 = runner.invoke(app, ["export", "--target", "onnxruntime", "--precision", "int8", "-o", str(out)])
    assert r8.exit_code == 0
    m = _manifest(out)
    got = {(a["target"], a["precision"]) for a in m["artifacts"]}
    assert got == {("onnxruntime", "fp32"), ("onnxruntime", "int8")}
    for a in m["artifacts"]:
        p = out / a["path"]
        assert hashlib.sha256(p.read_bytes()).hexdigest() == a["sha256"] and p.stat().st_size == a["size_bytes"]
        assert a["command"].startswith("partialdeploy export") or a["command"]
    int8 = next(a for a in m["artifacts"] if a["precision"] == "int8")
    acc = [p for p in int8["parity"] if p.get("acc") is not None]
    assert acc and 100 * (acc[0]["acc_ref"] - acc[0]["acc"]) <= 0.5  # the goal on the held-out digits


@pytest.mark.slow
def test_partialnet_s_at_224_int8_openvino_and_onnxruntime(tmp_path, real_images):
    """Full-size S (5.4 GFLOPs) through both INT8 paths with real photographs as calibration."""
    import torch
    from PIL import Image

    from partialdeploy.images import natural_images
    from partialdeploy.models import build_model
    from partialdeploy.families import variant_spec

    torch.manual_seed(0)
    ck = tmp_path / "s.pth"
    torch.save(build_model(variant_spec("partialnet", "s")).state_dict(), ck)
    calib = tmp_path / "calib"
    calib.mkdir()
    for i, im in enumerate(natural_images()):
        Image.fromarray(im).save(calib / f"{i}.png")
    out = tmp_path / "d"
    r = CliRunner().invoke(app, ["export", str(ck), "--target", "onnxruntime,openvino", "--precision", "int8",
                                 "--calib", str(calib), "-o", str(out)])
    assert r.exit_code == 0, r.output
    assert len(_manifest(out)["artifacts"]) == 2


def test_runtime_errors_with_empty_messages_still_give_one_line(tmp_path):
    """Runtimes raise exceptions with multi-line or empty messages; quoting them must never crash."""
    from partialdeploy.errors import UserError, first_line
    from partialdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner

    assert first_line(RuntimeError("")) == "RuntimeError"
    assert first_line(RuntimeError("a\nb"), 1) == "a"
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00not onnx")
    with pytest.raises(UserError) as e:
        OnnxRuntimeRunner(bad).load()
    assert "\n" not in str(e.value) and "cannot load" in str(e.value)
