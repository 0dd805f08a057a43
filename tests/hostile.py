"""Builders of hostile and damaged inputs, shared by the reliability tests, the hostile corpus and the
fuzz test. Everything is made at test time from the bundled demo checkpoint (nothing binary is
committed)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER_ENV = "PARTIALDEPLOY_TEST_PWNED"


def demo_state():
    """(state_dict, metadata) of the bundled demo checkpoint."""
    from safetensors import safe_open

    from partialdeploy.demo import DEMO_CKPT

    with safe_open(str(DEMO_CKPT), framework="pt") as f:
        meta = f.metadata() or {}
        sd = {k: f.get_tensor(k) for k in f.keys()}
    return sd, meta


def conv_key(sd) -> str:
    return next(k for k, v in sd.items() if k.endswith(".weight") and v.dim() == 4 and "mlp.0" in k)


def save_st(sd, meta, path) -> Path:
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, str(path), metadata=meta)
    return Path(path)


def save_pth(obj, path) -> Path:
    import torch

    torch.save(obj, str(path))
    return Path(path)


def mutate(fn, path, fmt="st"):
    """Demo weights changed by ``fn(sd)`` (which may return a new dict), saved as safetensors (keeping
    the demo's architecture metadata) or as a plain .pth state_dict."""
    sd, meta = demo_state()
    new = fn(sd)
    sd = new if isinstance(new, dict) else sd
    return save_st(sd, meta, path) if fmt == "st" else save_pth(sd, path)


class Payload:
    """A pickle that would create ``path`` when unpickled (must never happen)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class EvalPayload:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (eval, (f"open({self.path!r}, 'w').write('x')",))


def export_demo(out: Path, *extra) -> Path:
    """A real export of the demo (ONNX target) into ``out``; returns the manifest path."""
    import subprocess

    r = subprocess.run([sys.executable, "-m", "partialdeploy", "export", "-o", str(out), *extra],
                       capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=600)
    assert r.returncode == 0, r.stderr
    return out / "manifest.json"


def read_manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def write_manifest(out: Path, m: dict) -> None:
    (out / "manifest.json").write_text(json.dumps(m))


def tree(path: Path) -> dict:
    """{relative path: (size, mtime_ns)} of everything under ``path`` (to prove nothing changed)."""
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))
            if p.is_file()}
