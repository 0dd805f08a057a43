"""Environment fingerprint for latency reports: what a number was measured on.

Cheap and import-free: runtime versions are read from installed package metadata (no runtime is
imported), the CPU from /proc/cpuinfo, a GPU from ``nvidia-smi`` only when it exists.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

# distributions reported besides the runtimes' own (those come from partialdeploy.backends)
BASE_DISTS = ("numpy",)


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def cpu_info() -> dict:
    info: dict = {"model": platform.processor() or platform.machine(), "logical_cores": os.cpu_count()}
    text = _read("/proc/cpuinfo")
    if text:
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M) or re.search(r"^Model\s*:\s*(.+)$", text, re.M)
        if m:
            info["model"] = m.group(1).strip()
        flags = re.search(r"^flags\s*:\s*(.+)$", text, re.M)
        if flags:
            fl = set(flags.group(1).split())
            info["isa"] = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16",
                                       "avx_vnni", "fma") if f in fl]
        phys = {(p, c) for p, c in re.findall(r"physical id\s*:\s*(\d+).*?core id\s*:\s*(\d+)", text, re.S)}
        if phys:
            info["physical_cores"] = len(phys)
    elif sys.platform == "darwin":
        try:
            info["model"] = subprocess.run(["sysctl", "-n", "machdep.cpu.brand_string"], capture_output=True,
                                           text=True, timeout=5).stdout.strip() or info["model"]
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        info["affinity_cores"] = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    mem = re.search(r"^MemTotal:\s*(\d+) kB", _read("/proc/meminfo"), re.M)
    if mem:
        info["memory_gb"] = round(int(mem.group(1)) / 2**20, 1)
    gov = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").strip()
    if gov:
        info["governor"] = gov
    return info


def gpu_info() -> list[dict]:
    """NVIDIA GPUs via nvidia-smi (if present); Jetson via /etc/nv_tegra_release. Empty when none."""
    gpus: list[dict] = []
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            r = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=10)
            for line in r.stdout.strip().splitlines():
                parts = [p.strip() for p in line.split(",")]
                if parts and parts[0]:
                    gpus.append({"name": parts[0], "driver": parts[1] if len(parts) > 1 else None,
                                 "memory": parts[2] if len(parts) > 2 else None})
        except (OSError, subprocess.SubprocessError):
            pass
    tegra = _read("/etc/nv_tegra_release").strip()
    if tegra and not gpus:
        gpus.append({"name": "NVIDIA Jetson", "l4t": tegra.splitlines()[0][:80]})
    return gpus


def runtime_versions() -> dict:
    """Installed versions of every runtime's distributions (declared by the backends) and numpy."""
    from importlib import metadata

    from partialdeploy.backends import distributions

    out: dict = {}
    for dist, key in {**distributions(), **{d: d for d in BASE_DISTS}}.items():
        try:
            out.setdefault(key, metadata.version(dist))
        except metadata.PackageNotFoundError:
            continue
    return out


@lru_cache(maxsize=1)
def _static() -> dict:
    from partialdeploy.version import __version__

    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "os_detail": platform.platform(),
        "python": platform.python_version(),
        "partialdeploy": __version__,
        "cpu": cpu_info(),
        "gpus": gpu_info(),
        "runtimes": runtime_versions(),
    }


def fingerprint(threads: int | None = None) -> dict:
    """The machine, its software, and the thread count the measurement used."""
    env = {k: (dict(v) if isinstance(v, dict) else list(v) if isinstance(v, list) else v)
           for k, v in _static().items()}
    env["threads"] = threads
    env["env_vars"] = {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
                       if k in os.environ}
    return env


def device_label(env: dict) -> str:
    """Short label for tables that merge several machines: GPU name, else CPU model, + host."""
    gpus = env.get("gpus") or []
    hw = gpus[0]["name"] if gpus else (env.get("cpu") or {}).get("model", "?")
    return f"{env.get('hostname', '?')} ({hw})"
