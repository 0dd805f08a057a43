"""`partialdeploy profile` runs where torch is not installed, and the CLI imports no runtime."""

import json
import subprocess
import sys
import time

import pytest

from profile_fixtures import shared_export_dir
from conftest import BLOCK_TORCH


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    return shared_export_dir(tmp_path_factory)


def _run(code: str, *args, timeout=300):
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + code, *map(str, args)], capture_output=True,
                          text=True, timeout=timeout)


def test_blocker_really_blocks_torch():
    r = _run("import torch")
    assert r.returncode != 0 and "blocked by test" in r.stderr


def test_profile_without_torch(dist, tmp_path):
    out = tmp_path / "p.json"
    code = ("from partialdeploy.cli import main\n"
            "try:\n    main()\n"
            "except SystemExit as e:\n"
            "    assert 'torch' not in sys.modules, 'torch got imported'\n"
            "    raise\n")
    r = _run("import sys; sys.argv = ['partialdeploy'] + sys.argv[1:]\n" + code, "profile", dist, "--batch", "1",
             "--runs", "10", "--min-time", "0", "--warmup", "1", "--blocks", "1", "-o", out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rep = json.loads(out.read_text())
    ok = {r["target"] for r in rep["results"] if r["status"] == "ok"}
    assert {"onnx", "openvino", "onnxruntime"} <= ok
    # reports render without torch too
    r = _run("import sys; sys.argv = ['partialdeploy'] + sys.argv[1:]\nfrom partialdeploy.cli import main; main()",
             "report", out, "--html", tmp_path / "r.html")
    assert r.returncode == 0, r.stderr[-2000:]


def test_cli_import_is_light():
    code = ("import partialdeploy.cli, sys\n"
            "heavy = [m for m in ('torch', 'onnxruntime', 'openvino', 'onnx', 'coremltools', 'tensorrt')\n"
            "         if m in sys.modules]\n"
            "print(heavy)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_help_is_fast():
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "partialdeploy", "--help"], capture_output=True, text=True, timeout=60)
    dt = time.perf_counter() - t0
    assert r.returncode == 0 and "profile" in r.stdout and "report" in r.stdout
    assert dt < 5.0, f"--help took {dt:.2f}s"
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", "import partialdeploy.cli"], capture_output=True,
                       text=True, timeout=60)
    mods = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if "|" in line}
    assert not {m for m in mods if m.split(".")[0] in ("torch", "onnxruntime", "openvino")}
