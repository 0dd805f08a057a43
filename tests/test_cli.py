"""CLI: exit codes (0 ok, 1 parity failure, 2 bad input), one-line errors, nothing half-written."""

import json
import subprocess
import sys

import pytest
import torch

from conftest import run_cli
from test_exit_codes import cli  # noqa: F401 (the in-process entry point fixture)
from partialdeploy.models import build_model
from partialdeploy.families import variant_spec


def test_version_and_help():
    r = run_cli("--version")
    assert r.returncode == 0 and "partialdeploy" in r.stdout
    r = run_cli("--help")
    assert r.returncode == 0 and "export" in r.stdout and "Exit codes" in r.stdout
    r = run_cli("export", "--help")
    assert r.returncode == 0 and "--target" in r.stdout and "Examples" in r.stdout


def test_help_does_not_import_heavy_runtimes():
    code = ("import sys, partialdeploy.cli; heavy = [m for m in ('torch', 'onnxruntime', 'openvino', 'onnx', "
            "'coremltools', 'tensorrt') if m in sys.modules]; print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_demo_export_onnx_and_manifest(tmp_path):
    out = tmp_path / "dist"
    r = run_cli("export", "-o", out, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["onnx"]["ops"].get("BatchNormalization", 0) == 0
    man = json.loads((out / "manifest.json").read_text())
    art = man["artifacts"][0]
    assert art["target"] == "onnx" and (out / art["path"]).exists() and len(art["sha256"]) == 64
    assert art["inputs"][0]["name"] == "input" and art["inputs"][0]["shape"] == [1, 3, 64, 64]
    assert man["preprocessing"]["mean"] == [0.25] * 3
    # ONNX metadata carries the preprocessing and the tool version
    import onnx
    meta = {p.key: p.value for p in onnx.load(str(out / art["path"])).metadata_props}
    assert meta["img_size"] == "64" and json.loads(meta["mean"]) == [0.25] * 3 and "partialdeploy.version" in meta
    stages = {s["stage"]: s for s in man["pipeline"]}
    assert stages["deploy form"]["parity"]["rel_max"] < 1e-4
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".partialdeploy-staging")]


def test_dynamic_batch_and_img_size(tmp_path):
    out = tmp_path / "d"
    r = run_cli("export", "-o", out, "--dynamic-batch", "--img-size", "96", "--json")
    assert r.returncode == 0, r.stderr
    man = json.loads((out / "manifest.json").read_text())
    assert man["artifacts"][0]["inputs"][0]["shape"] == ["batch", 3, 96, 96]


def _one_line_error(r, code, *words):
    assert r.returncode == code, (r.returncode, r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr
    text = " ".join(lines)
    assert text.startswith("error:"), r.stderr
    for w in words:
        assert w in text, (w, text)


def _bad_inputs(tmp_path):
    """(argv, word the one error line must contain) for bad inputs of every kind — a missing file, a
    pickle payload that would create ``PWNED``, a truncated checkpoint, a variant or activation that does
    not fit it, bad options, INT8 without calibration images — and the output folder none may create."""
    out = tmp_path / "out"
    evil = tmp_path / "evil.pth"
    marker = tmp_path / "PWNED"
    evil.write_bytes(
        b"\x80\x02cposix\nsystem\nq\x00X" + len(f"touch {marker}").to_bytes(4, "little") + f"touch {marker}".encode()
        + b"q\x01\x85q\x02Rq\x03.")
    trunc = tmp_path / "trunc.pth"
    sd = build_model(variant_spec("partialnet", "t0")).state_dict()
    torch.save(sd, trunc)
    trunc.write_bytes(trunc.read_bytes()[:10000])
    good = tmp_path / "t0.pth"
    torch.save(sd, good)
    cases = [
        (["export", tmp_path / "missing.pth", "-o", out], "does not exist"),
        (["export", evil, "-o", out], "refusing to load"),
        (["export", trunc, "-o", out], "corrupt"),
        (["export", good, "--variant", "partialnet-s", "-o", out], "embed_dim"),
        (["export", good, "--variant", "fasternet-t0", "-o", out], "FasterNet was requested"),
        (["export", good, "--target", "nope", "-o", out], "unknown target"),
        (["export", good, "--precision", "fp8", "-o", out], "fp8"),
        (["export", good, "--img-size", "100", "-o", out], "multiple of 32"),
        (["export", good, "--act", "swish", "-o", out], "--act"),
        (["export", good, "--target", "onnx", "--precision", "int8", "-o", out], "onnx"),
        (["export", good, "--precision", "int8", "--target", "openvino", "-o", out], "--calib"),
        (["export", good, "--calib", tmp_path / "nodir", "--precision", "int8", "--target", "openvino",
          "-o", out], "calibration folder"),
        (["export", good, "--tune-on=-oProxyCommand=touch " + str(marker), "-o", out], "--tune-on"),
        (["export", good, "--tune-on", "pi@10.0.0.7", "--tune-budget", "0", "-o", out], "--tune-budget"),
        (["export", good, "--ssh-config", tmp_path / "nope", "-o", out], "go with --tune-on"),
        (["export", good, "--tune-on", "pi@10.0.0.7", "--remote-timeout", "soon", "-o", out], "--remote-timeout"),
        (["inspect", tmp_path / "missing.pth"], "does not exist"),
    ]
    return cases, out, marker


def _nothing_written(tmp_path, out, marker, args):
    assert not out.exists(), args
    assert not marker.exists(), "code from the checkpoint was executed"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".partialdeploy-staging")]


@pytest.mark.slow  # one interpreter per case (~25 s): `make test-slow`; the default run has the test below
def test_bad_inputs_exit_2_one_line_nothing_written(tmp_path):
    cases, out, marker = _bad_inputs(tmp_path)
    for args, word in cases:
        r = run_cli(*args)
        _one_line_error(r, 2, word)
        _nothing_written(tmp_path, out, marker, args)


def test_bad_inputs_exit_2_one_line_in_process(cli, tmp_path):  # noqa: F811
    """Every bad input of the slow test above, through the real entry point (``cli.main``) in this
    process; the pickle payload also through a real ``partialdeploy`` process (its exit code and stderr)."""
    cases, out, marker = _bad_inputs(tmp_path)
    for args, word in cases:
        code, stdout, err = cli(*args)
        _one_line_error(subprocess.CompletedProcess(args, code, stdout, err), 2, word)
        _nothing_written(tmp_path, out, marker, args)
    args, word = cases[1]
    assert word == "refusing to load"
    _one_line_error(run_cli(*args), 2, word)
    _nothing_written(tmp_path, out, marker, args)


def test_parity_breach_exits_1_with_numbers(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from partialdeploy import parity
    from partialdeploy.cli import app

    monkeypatch.setitem(parity.DEFAULT_TOLERANCES, "fp32", parity.Tolerance(rel_max=1e-12))
    out = tmp_path / "o"
    r = CliRunner().invoke(app, ["export", "-o", str(out)])
    assert r.exit_code == 1
    assert "parity gate" in r.output and "rel" in r.output
    assert not out.exists()


def test_inspect_reports_folds_params_flops(tmp_path):
    p = tmp_path / "t0.pth"
    torch.save(build_model(variant_spec("partialnet", "t0")).state_dict(), p)
    r = run_cli("inspect", p, "--json")
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["architecture"]["variant"] == "t0"
    assert res["batchnorm"] == {"before": 39, "after": 0}  # stem 1 + merging 3 + MLP 13 + PAT_ch 2×11
    kinds = {b["kind"]: b for b in res["blocks"]}
    assert kinds["PAT_ch"]["count"] == 11 and kinds["PAT_sf"]["count"] == 2
    assert "iRPE" in kinds["PAT_sf"]["folds"] and "depend on the input" in kinds["PAT_ch"]["stays"]
    assert abs(res["flops"]["before"] / 1e9 - 0.47) < 0.01  # the paper's T0: 0.47 GFLOPs
    # BN statistics go away, but the baked iRPE bias (H, L, L) is larger than its (H, 81) table
    assert abs(res["params"]["after"] - res["params"]["before"]) < 0.02 * res["params"]["before"]
    r2 = run_cli("inspect", p)
    assert r2.returncode == 0 and "PAT_sf" in r2.stdout and "BatchNorm 39 → 0" in r2.stdout
