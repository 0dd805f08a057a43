"""Resident memory of this process, as the profiler records it around loading an artifact (Linux
``/proc``; elsewhere ``getrusage``)."""

from __future__ import annotations

import resource
import sys


def _status_kb(field_name: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return r / (2**20 if sys.platform == "darwin" else 1024)


def rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else None
