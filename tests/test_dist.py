"""`make dist`'s wheel installs where it runs: on a device, partialdeploy[tensorrt] or [onnxruntime]
needs no torch, and the installed wheel (not this checkout) builds/profiles bundles without it. Slow:
the wheel is built by pip in an isolated environment (setuptools + wheel from PyPI)."""

import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import BLOCK_TORCH

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    if r.returncode != 0 and "No matching distribution" in r.stderr:
        pytest.skip("pip cannot reach PyPI for the isolated build (setuptools, wheel)")
    assert r.returncode == 0, r.stderr
    (whl,) = out.glob("partialdeploy-*.whl")
    return whl


def test_wheel_extras_for_devices_need_no_torch(wheel):
    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = next(z.read(n).decode() for n in names if n.endswith(".dist-info/METADATA"))
    assert {"partialdeploy/backends/tensorrt/bundle_infer.py",
            "partialdeploy/profiles_data/tensorrt-jetson-xavier-fp16.yaml",
            "partialdeploy/profiles_data/tensorrt-jetson-orin-trt8-fp16.yaml"} <= names
    reqs = [Requirement(line.split(":", 1)[1].strip()) for line in meta.splitlines()
            if line.startswith("Requires-Dist:")]

    def needs(extra: str, machine: str) -> set[str]:
        env = {"extra": extra, "platform_machine": machine}
        return {r.name for r in reqs if r.marker is None or r.marker.evaluate(env)}

    for machine in ("x86_64", "aarch64"):
        for extra in ("tensorrt", "onnxruntime"):
            assert not {"torch", "onnxsim", "onnxscript"} & needs(extra, machine), (extra, machine)
    # TensorRT comes with JetPack on a Jetson (aarch64): pip must not try to install it there
    assert "tensorrt" in needs("tensorrt", "x86_64") and "tensorrt" not in needs("tensorrt", "aarch64")
    assert "cuda-python" in needs("tensorrt", "aarch64") and "onnxruntime" in needs("onnxruntime", "aarch64")


def test_installed_wheel_runs_the_device_commands_without_torch(wheel, tmp_path):
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "bundle.json").write_text(json.dumps({
        "schema": "partialdeploy.tensorrt-bundle/2", "onnx": "model.onnx", "precision": "fp16", "tensorrt": {},
        "dynamic_batch": False, "parity": {"tolerance": "fp16"}, "input": {"name": "input", "shape": [1, 3, 32, 32]},
        "batch": {"min": 1, "opt": 1, "max": 1}}))
    (bundle / "model.onnx").write_bytes(b"")
    code = (BLOCK_TORCH + f"sys.path.insert(0, {str(site)!r})\nimport partialdeploy\n"
            f"assert partialdeploy.__file__.startswith({str(site)!r}), partialdeploy.__file__\n"
            "from partialdeploy.cli import main\nsys.argv = ['partialdeploy'] + sys.argv[1:]\nmain()\n")
    r = subprocess.run([sys.executable, "-c", code, "--help"], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 0 and "build-engine" in r.stdout, r.stderr
    r = subprocess.run([sys.executable, "-c", code, "build-engine", str(bundle)], capture_output=True, text=True,
                       timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "TensorRT is not installed" in r.stdout + r.stderr, r.stdout + r.stderr
