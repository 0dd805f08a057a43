"""The device fingerprint, read on the device (stdlib only; runs inside the zipapp).

What a number was measured on, read and never changed: board model, OS release and kernel, CPU model
and cores, memory, CPU frequency governors and current clocks, every thermal zone, GPU (nvidia-smi,
or the Jetson's devfreq GPU), and on Jetson the L4T release, the ``nvpmodel`` power mode and whether
``jetson_clocks`` pinned the clocks (inferred from min == max frequency: reading its own state needs
root). Everything is read below ``root`` so tests can lay out a Jetson's or a Pi's /sys and /proc.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from pathlib import Path

TEMP_RISE_WARN_C = 5.0  # a case that heats a zone by more than this gets a warning
GOVERNOR_OK = "performance"


def _read(root: str, rel: str, limit: int = 4096) -> str | None:
    try:
        with open(os.path.join(root, rel.lstrip("/")), "rb") as f:
            return f.read(limit).decode("utf-8", "replace").replace("\x00", "").strip()
    except OSError:
        return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def thermal_zones(root: str = "/") -> dict:
    """{zone label: °C} for every readable thermal zone (label: its type, with the zone number when
    two share a type)."""
    base = Path(root) / "sys/class/thermal"
    out: dict = {}
    try:
        zones = sorted((p for p in base.iterdir() if p.name.startswith("thermal_zone")),
                       key=lambda p: _int(p.name[12:]) or 0)
    except OSError:
        return out
    for z in zones:
        t = _int(_read(root, f"sys/class/thermal/{z.name}/temp"))
        if t is None:
            continue
        kind = _read(root, f"sys/class/thermal/{z.name}/type") or z.name
        key = kind if kind not in out else f"{kind}#{z.name[12:]}"
        out[key] = round(t / 1000.0, 1) if abs(t) > 200 else float(t)  # millidegrees (some report °C)
    return out


def cpufreq(root: str = "/") -> dict:
    """Governors (with the CPUs that use each) and current/min/max clocks in MHz per CPU."""
    base = Path(root) / "sys/devices/system/cpu"
    govs: dict = {}
    cpus: dict = {}
    try:
        names = sorted((p.name for p in base.iterdir() if re.match(r"^cpu\d+$", p.name)), key=lambda n: int(n[3:]))
    except OSError:
        names = []
    for n in names:
        d = f"sys/devices/system/cpu/{n}/cpufreq"
        g = _read(root, f"{d}/scaling_governor")
        if g:
            govs.setdefault(g, []).append(int(n[3:]))
        khz = {k: _int(_read(root, f"{d}/{f}")) for k, f in (("cur", "scaling_cur_freq"), ("min", "scaling_min_freq"),
                                                            ("max", "scaling_max_freq"))}
        if any(v is not None for v in khz.values()):
            cpus[n] = {k: (round(v / 1000) if v is not None else None) for k, v in khz.items()}
    return {"governors": govs, "clocks_mhz": cpus}


def cur_clocks_mhz(root: str = "/") -> list:
    return [c.get("cur") for c in cpufreq(root)["clocks_mhz"].values()]


def _gpu_devfreq(root: str) -> dict | None:
    """A Jetson's integrated GPU as devfreq exposes it (name and clocks)."""
    base = Path(root) / "sys/class/devfreq"
    try:
        devs = sorted(base.iterdir())
    except OSError:
        return None
    for d in devs:
        rel = f"sys/class/devfreq/{d.name}"
        name = (_read(root, f"{rel}/device/of_node/name") or _read(root, f"{rel}/name") or d.name)
        if "gpu" in name.lower() or "gv11b" in d.name or "ga10b" in d.name or "gpu" in d.name:
            f = {k: _int(_read(root, f"{rel}/{k}")) for k in ("cur_freq", "min_freq", "max_freq")}
            return {"name": name, "devfreq": d.name, **{k: (round(v / 1e6) if v else v) for k, v in f.items()}}
    return None


def jetson(root: str = "/") -> dict | None:
    """L4T release, nvpmodel mode and jetson_clocks state, where readable; None off Jetson."""
    rel = _read(root, "etc/nv_tegra_release")
    if not rel:
        return None
    out: dict = {"l4t": rel.splitlines()[0][:120]}
    m = re.search(r"R(\d+).*?REVISION:\s*([\d.]+)", rel)
    if m:
        out["l4t_version"] = f"{m.group(1)}.{m.group(2)}"
    out["nvpmodel"] = _nvpmodel(root)
    gpu = _gpu_devfreq(root)
    clocks = cpufreq(root)["clocks_mhz"].values()
    pinned = [c["min"] == c["max"] for c in clocks if c.get("min") and c.get("max")]
    if gpu and gpu.get("min_freq") and gpu.get("max_freq"):
        pinned.append(gpu["min_freq"] == gpu["max_freq"])
    out["jetson_clocks"] = (None if not pinned else "on (clocks pinned at max)" if all(pinned)
                            else "off (clocks scale)")
    out["jetson_clocks_source"] = "inferred from min == max frequencies"
    return out


def _nvpmodel(root: str) -> str | None:
    if root == "/" and shutil.which("nvpmodel"):
        try:
            r = subprocess.run(["nvpmodel", "-q"], capture_output=True, text=True, timeout=5)
            text = " ".join(ln.strip() for ln in r.stdout.splitlines() if ln.strip())
            if r.returncode == 0 and text:
                return text[:200]
        except (OSError, subprocess.SubprocessError):
            pass
    status = _read(root, "var/lib/nvpmodel/status")  # what nvpmodel keeps (readable without root)
    return status[:200] if status else None


def board_model(root: str = "/") -> str | None:
    """The board (Jetson, Raspberry Pi: device tree) or the machine (DMI), when the system says."""
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        m = _read(root, rel)
        if m:
            return m
    vendor, name = _read(root, "sys/class/dmi/id/sys_vendor"), _read(root, "sys/class/dmi/id/product_name")
    return " ".join(x for x in (vendor, name) if x) or None


def os_release(root: str = "/") -> str | None:
    text = _read(root, "etc/os-release") or ""
    m = re.search(r'^PRETTY_NAME="?([^"\n]+)"?', text, re.M)
    return m.group(1) if m else None


def details(root: str = "/") -> dict:
    """Everything above, as the ``device`` part of a remote report's environment."""
    return {"board": board_model(root), "os_release": os_release(root), "kernel": platform.release(),
            "machine": platform.machine(), "cpufreq": cpufreq(root), "thermal_c": thermal_zones(root),
            "jetson": jetson(root), "gpu_devfreq": _gpu_devfreq(root)}


def governor_warning(det: dict) -> str | None:
    govs = (det.get("cpufreq") or {}).get("governors") or {}
    other = sorted(g for g in govs if g != GOVERNOR_OK)
    if other:
        return (f"CPU frequency governor {', '.join(other)} (not {GOVERNOR_OK}): clocks may scale during the run; "
                f"numbers vary with load")
    return None


def temperature_rise(before: dict, after: dict) -> tuple[str, float] | None:
    """The zone that heated most between two readings, and by how much (°C); None without zones."""
    rises = [(k, after[k] - before[k]) for k in before if k in after]
    return max(rises, key=lambda kv: kv[1]) if rises else None
