import os
import sys
from pathlib import Path

import numpy as np
import pytest

# Prepended to a `python -c` program: torch cannot be imported in it (what a device without torch sees).
BLOCK_TORCH = r"""
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("No module named 'torch' (blocked by test)")
        return None
sys.meta_path.insert(0, _NoTorch())
"""

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OMP_NUM_THREADS", "2")

# What `make test` installs (pyproject's [all] and [dev] extras, by import name): a test that asks
# for one of these with pytest.importorskip FAILS when it is missing — a broken install must not
# vanish as skips. Only what cannot be here (TensorRT, CUDA, a GPU, macOS) may skip, naming it.
REQUIRED_MODULES = {"torch", "onnx", "onnxscript", "onnxsim", "safetensors", "onnxruntime", "openvino", "nncf",
                    "coremltools", "onnxconverter_common", "sklearn", "skimage", "pytest", "xmlschema",
                    "hypothesis", "numpy", "typer", "rich", "yaml", "PIL"}
_importorskip = pytest.importorskip


def _import_required_or_skip(modname: str, *args, **kwargs):
    if modname.split(".")[0] in REQUIRED_MODULES:
        import importlib

        return importlib.import_module(modname)  # ImportError: the test errors instead of skipping
    return _importorskip(modname, *args, **kwargs)


pytest.importorskip = _import_required_or_skip


def randomize(model, seed: int = 0):
    """Non-trivial weights *and* BatchNorm statistics, so every fold is exercised (fresh BNs are
    identities and would hide a wrong fold)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            fan_in = p[0].numel() if p.dim() > 1 else 25
            p.copy_(torch.randn(p.shape, generator=g) * (1.0 / fan_in ** 0.5))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
    return model.eval()


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def real_images():
    """Real photographs that ship inside scikit-learn / scikit-image, preprocessed, by size."""
    from partialdeploy.images import natural_batch
    from partialdeploy.spec import IMAGENET_MEAN, IMAGENET_STD

    cache = {}

    def get(size, n=8):
        if (size, n) not in cache:
            cache[(size, n)] = natural_batch(size, IMAGENET_MEAN, IMAGENET_STD, n=n)
        return cache[(size, n)]

    return get


def run_cli(*args, env=None, cwd=None, timeout=600):
    import subprocess

    return subprocess.run([sys.executable, "-m", "partialdeploy", *map(str, args)], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout)


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory):
    """The demo exported once per session by the CLI (onnx fp32), with its JUnit file and Markdown
    summary beside it (``export.xml``, ``export.md``); tests copy it before changing anything."""
    from typer.testing import CliRunner

    from partialdeploy.cli import app

    d = tmp_path_factory.mktemp("demo-export") / "demo"
    r = CliRunner().invoke(app, ["export", "-o", str(d), "--junit", str(d.parent / "export.xml"),
                                 "--md", str(d.parent / "export.md")])
    assert r.exit_code == 0, r.output
    return d
