"""The NVIDIA side of this machine, shared by the TensorRT runner and ``build-engine``: cuda-python's
runtime bindings, whether TensorRT + a CUDA device are here, the device's identity, and the engine
sidecar check (engines are tied to the TensorRT version and the GPU's compute capability).

Nothing here imports TensorRT or cuda-python at module import time. Both ``runner.py`` and
``build.py`` (TensorRT's) import from this module; neither imports the other's internals.
"""

from __future__ import annotations

import json
from pathlib import Path

from partialdeploy.errors import RuntimeUnavailable, UserError, first_line

SIDECAR = "model.engine.json"
NOT_HERE = "TensorRT is not installed / no NVIDIA GPU: run this on the device (see build_engine.sh)"


def cudart():
    """The CUDA runtime bindings of cuda-python (module layout changed in 12.6)."""
    try:
        from cuda.bindings import runtime as rt  # cuda-python >= 12.6
    except ImportError:
        from cuda import cudart as rt  # cuda-python < 12.6
    return rt


def why_unavailable() -> str | None:
    """None when TensorRT, cuda-python and a CUDA device are all present; else the reason."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return "the tensorrt module is not installed here"
    except Exception as e:  # a broken install (missing libnvinfer) raises OSError & co.
        return f"tensorrt does not import: {first_line(e, 120)}"
    try:
        rt = cudart()
    except ImportError:
        return "cuda-python is not installed here"
    try:
        err, n = rt.cudaGetDeviceCount()
    except Exception as e:
        return f"the CUDA runtime does not load: {first_line(e, 120)}"
    if int(err) != 0 or n < 1:
        return "no CUDA device is visible"
    return None


def check(ret):
    """cuda-python returns (err, *values); raise on error, return the value(s)."""
    err, *vals = ret if isinstance(ret, tuple) else (ret,)
    if int(err) != 0:
        raise RuntimeError(f"CUDA error {err}")
    return vals[0] if len(vals) == 1 else (tuple(vals) if vals else None)


def device_info() -> dict:
    """TensorRT version and GPU 0's name and compute capability. RuntimeUnavailable when absent."""
    if why_unavailable():
        raise RuntimeUnavailable(NOT_HERE)
    import tensorrt as trt

    props = check(cudart().cudaGetDeviceProperties(0))
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return {"tensorrt_version": trt.__version__, "compute_capability": f"{props.major}.{props.minor}",
            "gpu": name.strip("\x00 ")}


def check_engine_compat(sidecar: dict, trt_version: str, compute_capability: str) -> None:
    """Raise UserError (one line) when an engine was built for another TensorRT or GPU."""
    built_v, built_cc = str(sidecar.get("tensorrt_version")), str(sidecar.get("compute_capability"))
    problems = []
    if built_v != str(trt_version):
        problems.append(f"TensorRT {built_v} (this device has {trt_version})")
    if built_cc != str(compute_capability):
        problems.append(f"compute capability {built_cc} (this GPU is {compute_capability})")
    if problems:
        raise UserError(f"the engine was built with {' and '.join(problems)}: engines are not portable; "
                        f"rebuild it here with `partialdeploy build-engine DIR`")


def load_sidecar_checked(engine_path: Path) -> dict:
    """Read an engine's sidecar and check it against this device (UserError, one line, on mismatch)."""
    side = Path(engine_path).with_name(SIDECAR) if Path(engine_path).is_file() else Path(engine_path) / SIDECAR
    if not side.exists():
        raise UserError(f"no {SIDECAR} next to the engine: rebuild it with `partialdeploy build-engine DIR`")
    meta = json.loads(side.read_text())
    dev = device_info()
    check_engine_compat(meta, dev["tensorrt_version"], dev["compute_capability"])
    return meta
