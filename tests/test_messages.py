"""Wrong input gets the right diagnosis: one line, exit 2, saying what is actually wrong (a FIFO is
not "empty", a checkpoint is not a "corrupt TorchScript", an ONNX is not a "corrupt checkpoint", a
file is not a "missing folder", data outside a model's folder is not an internal error)."""

import os
import shutil

import pytest

from conftest import run_cli


def one_line_2(r, *needles):
    err = r.stderr.strip()
    assert r.returncode == 2, r.stdout + r.stderr
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


@pytest.fixture(scope="module")
def demo_pth(tmp_path_factory):
    """The demo's weights as a plain torch.save state_dict (no metadata: not recognised as the demo)."""
    import torch
    from safetensors.torch import load_file

    from partialdeploy.demo import DEMO_CKPT

    p = tmp_path_factory.mktemp("pth") / "t0.pth"
    torch.save(load_file(DEMO_CKPT), p)
    return p


def test_fifo_and_device_are_not_empty_files(tmp_path):
    fifo = tmp_path / "ckpt.pth"
    os.mkfifo(fifo)
    one_line_2(run_cli("inspect", fifo, timeout=60), "not a regular file (a pipe, device or socket)")
    one_line_2(run_cli("export", "/dev/zero", "-o", tmp_path / "o", timeout=60), "not a regular file")
    assert not (tmp_path / "o").exists()


def test_exported_model_is_not_a_corrupt_checkpoint(demo_dir):
    err = one_line_2(run_cli("inspect", demo_dir / "onnx/fp32/model.onnx"), "is an exported model (.onnx")
    assert "corrupt" not in err and "partialdeploy diff CHECKPOINT" in err


def test_calib_file_is_not_a_missing_folder(tmp_path):
    from partialdeploy.demo import DEMO_CALIB

    png = next(DEMO_CALIB.iterdir())
    err = one_line_2(run_cli("export", "--target", "onnxruntime", "--precision", "int8", "--calib", png,
                             "-o", tmp_path / "o"), "--calib takes a folder of images", "is a file")
    assert "does not exist" not in err


def test_profile_checkpoint_as_torchscript(demo_pth):
    err = one_line_2(run_cli("profile", demo_pth, "--target", "torch"), "is a training checkpoint (weights)",
                     "partialdeploy export")
    assert "corrupted" not in err


def test_external_data_outside_the_folder(demo_dir, tmp_path):
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    m = onnx.load(demo_dir / "onnx/fp32/model.onnx")
    convert_model_to_external_data(m, location="w.bin", size_threshold=0)
    (tmp_path / "m").mkdir()
    onnx.save(m, tmp_path / "m" / "model.onnx")
    m = onnx.load(tmp_path / "m" / "model.onnx", load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../outside.bin"
    onnx.save(m, tmp_path / "m" / "model.onnx")
    shutil.move(tmp_path / "m" / "w.bin", tmp_path / "outside.bin")
    evil = tmp_path / "m" / "model.onnx"
    one_line_2(run_cli("diff", demo_dir / "onnx/fp32/model.onnx", evil), "outside the model's folder")
    one_line_2(run_cli("profile", evil, "--target", "onnxruntime", "--runs", "2", "--min-time", "0"),
               "outside the model's folder")


def test_a_package_never_run_has_no_gate():
    from partialdeploy.records import Artifact
    from partialdeploy.backends.coreml.target import SPEC_CHECKED, CoreMLTarget
    from partialdeploy.backends.onnxruntime.target import OnnxRuntimeTarget
    from partialdeploy.records import ParityResult

    trace = ParityResult("train form -> traced deploy model (CoreML converter input)", 16, 0, 0, 1.0, 1.0)
    assert Artifact("coreml", "int8", "m.mlpackage", parity=[trace], verified=SPEC_CHECKED).gate is None
    assert Artifact("onnxruntime", "int8", "m.onnx", parity=[trace], verified="parity").gate is trace
    assert not CoreMLTarget.int8_calibrates and OnnxRuntimeTarget.int8_calibrates


@pytest.mark.slow
def test_coreml_int8_needs_no_images_and_shows_no_trace_numbers(demo_pth, tmp_path):
    """Weight-only INT8 runs without --calib; its row shows no parity (the package is not run off
    macOS; the numbers it holds are of the fp32 trace it was converted from)."""
    from typer.testing import CliRunner

    from partialdeploy.cli import app

    r = CliRunner().invoke(app, ["export", str(demo_pth), "--act", "gelu", "--target", "coreml", "--precision",
                                 "int8", "-o", str(tmp_path / "cm")])
    assert r.exit_code == 0, r.output
    assert "calibration" not in r.output and "(not run here)" in r.output and "cos 1.000000" not in r.output
