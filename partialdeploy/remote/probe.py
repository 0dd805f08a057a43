"""What a device has and what it can run: Python, numpy, and every runtime whose backend says how to
install it on a device (``Backend.device_install``), each probed by its runner (``Runner.probe``:
ONNX Runtime's execution providers, OpenVINO's devices, TensorRT's cuda-python and GPU).

:func:`probe` runs on the device (stdlib only, so a bare ``python3`` answers too); :func:`missing`
and :func:`summary` read its answer on the local side as untrusted data and say in one line what is
missing and the ``pip install`` that fixes it.
"""

from __future__ import annotations

import platform
import shutil
import sys

NUMPY_INSTALL = "pip install numpy"


def runtimes() -> tuple[str, ...]:
    """The runtimes an edge device may run: those whose backend says how to install them there."""
    from partialdeploy import backends

    return backends.device_runtimes()


def install(runtime: str) -> str:
    """How to install ``runtime`` (or numpy) on a device."""
    from partialdeploy import backends

    if runtime == "numpy":
        return NUMPY_INSTALL
    b = backends.find(runtime)
    return (b.device_install if b else "") or "install it"


def probe(workdir: str = ".", wanted=None) -> dict:
    """On the device: the answer to "what is here" (JSON types); only the ``wanted`` runtimes (default
    all) are imported, each by its runner's ``probe`` (importing OpenVINO alone takes seconds on a
    small board)."""
    from partialdeploy import backends
    from partialdeploy.lazy import probe_import

    np_mod, np_err = probe_import("numpy")
    out = {"python": platform.python_version(), "executable": sys.executable,
           "numpy": getattr(np_mod, "__version__", "?") if np_mod else None, "numpy_error": np_err,
           "runtimes": {}}
    names = [r for r in runtimes() if wanted is None or r in wanted]
    if np_mod is not None:  # the runtimes need numpy; without it they cannot be used anyway
        out["runtimes"] = {r: backends.get(r).runner_class().probe() for r in names}
    else:
        out["runtimes"] = {r: {"ok": False, "error": "not probed: numpy is missing"} for r in runtimes()}
    try:
        out["free_mb"] = shutil.disk_usage(workdir).free // 2**20
    except OSError:
        out["free_mb"] = None
    out["identity"] = identity()
    return out


def identity() -> dict:
    """Who the device is, in short (the rest of the fingerprint comes with a profile)."""
    from partialdeploy.profiling.envinfo import cpu_info
    from partialdeploy.remote.device import board_model

    cpu = cpu_info()
    return {"hostname": platform.node(), "board": board_model(), "cpu": cpu.get("model"),
            "cores": cpu.get("logical_cores"), "memory_gb": cpu.get("memory_gb"), "machine": platform.machine()}


# ---------------------------------------------------------------- local side: reading the answer

def available(p: dict) -> set:
    """The runtimes the device can run (from an untrusted probe answer)."""
    rts = p.get("runtimes") if isinstance(p, dict) else None
    if not isinstance(rts, dict) or not p.get("numpy"):
        return set()
    return {k for k, v in rts.items() if k in runtimes() and isinstance(v, dict) and v.get("ok") is True}


def missing(p: dict, host: str, python: str, needed=None) -> str | None:
    """One line: what the device lacks for ``needed`` runtimes (any one of them will do) and the pip
    install that fixes it; None when it can run at least one of them."""
    pip = f"{python} -m pip install"
    if not isinstance(p, dict) or not p.get("numpy"):
        return f"{host} has no numpy for {python}: on the device run `{pip} numpy` (or pass --remote-python)"
    want = [r for r in (needed or runtimes()) if r in runtimes()]
    if available(p) & set(want):
        return None
    fixes = "; or ".join(f"{r}: {install(r).replace('pip install', pip, 1)}" for r in want) or "none asked"
    return f"{host} cannot run {', '.join(want) or 'anything'} with {python} (no runtime installed): {fixes}"


def not_run_reason(p: dict, runtime: str, host: str) -> str:
    r = ((p.get("runtimes") or {}).get(runtime) or {}) if isinstance(p, dict) else {}
    why = str(r.get("error") or "not available")[:200]
    return f"not run on {host}: {runtime} {why} ({install(runtime)})"


def summary(p: dict) -> list[str]:
    """Lines for `remote check`: Python, numpy, each runtime with its providers/devices or what is wrong."""
    lines = [f"python {p.get('python', '?')} ({p.get('executable', '?')}), numpy {p.get('numpy') or 'MISSING'}"]
    for name in runtimes():
        r = (p.get("runtimes") or {}).get(name) or {}
        if r.get("ok"):
            extra = r.get("providers") or r.get("devices") or ([r.get("gpu")] if r.get("gpu") else [])
            lines.append(f"{name} {r.get('version', '?')}: ok" + (f" ({', '.join(map(str, extra))})" if extra else ""))
        else:
            lines.append(f"{name}: {r.get('error', 'not available')} — {install(name)}")
    if p.get("free_mb") is not None:
        lines.append(f"free space in the temporary folder: {p['free_mb']} MB")
    return lines
