"""What a device has and what it can run: Python, numpy, ONNX Runtime (+ execution providers),
OpenVINO (+ devices), TensorRT (+ cuda-python + a CUDA GPU).

:func:`probe` runs on the device (stdlib only, so a bare ``python3`` answers too); :func:`missing`
and :func:`summary` read its answer on the local side as untrusted data and say in one line what is
missing and the ``pip install`` that fixes it.
"""

from __future__ import annotations

import importlib
import platform
import shutil
import sys

# what each runtime needs on the device, and how to get it
INSTALL = {
    "numpy": "pip install numpy",
    "onnxruntime": "pip install onnxruntime (Jetson: the onnxruntime-gpu wheel from the Jetson Zoo)",
    "openvino": "pip install openvino",
    "tensorrt": "comes with JetPack (apt install python3-libnvinfer), elsewhere pip install tensorrt; "
                "and pip install cuda-python",
}
RUNTIMES = ("onnxruntime", "openvino", "tensorrt")


def _first(e: BaseException) -> str:
    s = str(e).strip()
    return (s.splitlines()[0] if s else type(e).__name__)[:200]


def _import(name: str):
    try:
        return importlib.import_module(name), None
    except ModuleNotFoundError as e:
        if e.name and name.startswith(e.name):
            return None, "not installed"
        return None, f"does not import: {_first(e)}"
    except Exception as e:  # a broken install raises OSError (missing .so) & co.
        return None, f"does not import: {_first(e)}"


def _onnxruntime() -> dict:
    ort, err = _import("onnxruntime")
    if ort is None:
        return {"ok": False, "error": err}
    try:
        return {"ok": True, "version": ort.__version__, "providers": list(ort.get_available_providers())}
    except Exception as e:
        return {"ok": False, "error": f"broken: {_first(e)}"}


def _openvino() -> dict:
    ov, err = _import("openvino")
    if ov is None:
        return {"ok": False, "error": err}
    try:
        core = ov.Core()
        return {"ok": True, "version": ov.get_version() if hasattr(ov, "get_version") else ov.__version__,
                "devices": list(core.available_devices)}
    except Exception as e:
        return {"ok": False, "error": f"broken: {_first(e)}"}


def _tensorrt() -> dict:
    trt, err = _import("tensorrt")
    if trt is None:
        return {"ok": False, "error": err}
    out = {"ok": False, "version": getattr(trt, "__version__", "?")}
    rt, err = _import("cuda.bindings.runtime")
    if rt is None:
        rt, err = _import("cuda.cudart")
    if rt is None:
        return {**out, "error": f"cuda-python {err}"}
    try:
        e, n = rt.cudaGetDeviceCount()
        if int(e) != 0 or n < 1:
            return {**out, "error": "no CUDA device is visible"}
        e, props = rt.cudaGetDeviceProperties(0)
        name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
        return {**out, "ok": True, "gpu": name.strip("\x00 "), "compute_capability": f"{props.major}.{props.minor}"}
    except Exception as e:
        return {**out, "error": f"the CUDA runtime does not load: {_first(e)}"}


def probe(workdir: str = ".", runtimes=RUNTIMES) -> dict:
    """On the device: the answer to "what is here" (JSON types); only ``runtimes`` are imported
    (importing OpenVINO alone takes seconds on a small board)."""
    np_mod, np_err = _import("numpy")
    out = {"python": platform.python_version(), "executable": sys.executable,
           "numpy": getattr(np_mod, "__version__", "?") if np_mod else None, "numpy_error": np_err,
           "runtimes": {}}
    if np_mod is not None:  # the runtimes need numpy; without it they cannot be used anyway
        probes = {"onnxruntime": _onnxruntime, "openvino": _openvino, "tensorrt": _tensorrt}
        out["runtimes"] = {r: probes[r]() for r in RUNTIMES if r in runtimes}
    else:
        out["runtimes"] = {r: {"ok": False, "error": "not probed: numpy is missing"} for r in RUNTIMES}
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
    return {k for k, v in rts.items() if k in RUNTIMES and isinstance(v, dict) and v.get("ok") is True}


def missing(p: dict, host: str, python: str, needed=None) -> str | None:
    """One line: what the device lacks for ``needed`` runtimes (any one of them will do) and the pip
    install that fixes it; None when it can run at least one of them."""
    pip = f"{python} -m pip install"
    if not isinstance(p, dict) or not p.get("numpy"):
        return f"{host} has no numpy for {python}: on the device run `{pip} numpy` (or pass --remote-python)"
    want = [r for r in (needed or RUNTIMES) if r in RUNTIMES]
    if available(p) & set(want):
        return None
    fixes = "; or ".join(f"{r}: {INSTALL[r].replace('pip install', pip, 1)}" for r in want) or "none asked"
    return f"{host} cannot run {', '.join(want) or 'anything'} with {python} (no runtime installed): {fixes}"


def not_run_reason(p: dict, runtime: str, host: str) -> str:
    r = ((p.get("runtimes") or {}).get(runtime) or {}) if isinstance(p, dict) else {}
    why = str(r.get("error") or "not available")[:200]
    return f"not run on {host}: {runtime} {why} ({INSTALL.get(runtime, 'install it')})"


def summary(p: dict) -> list[str]:
    """Lines for `remote check`: Python, numpy, each runtime with its providers/devices or what is wrong."""
    lines = [f"python {p.get('python', '?')} ({p.get('executable', '?')}), numpy {p.get('numpy') or 'MISSING'}"]
    for name in RUNTIMES:
        r = (p.get("runtimes") or {}).get(name) or {}
        if r.get("ok"):
            extra = r.get("providers") or r.get("devices") or ([r.get("gpu")] if r.get("gpu") else [])
            lines.append(f"{name} {r.get('version', '?')}: ok" + (f" ({', '.join(map(str, extra))})" if extra else ""))
        else:
            lines.append(f"{name}: {r.get('error', 'not available')} — {INSTALL[name]}")
    if p.get("free_mb") is not None:
        lines.append(f"free space in the temporary folder: {p['free_mb']} MB")
    return lines
