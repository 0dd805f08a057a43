"""``--sustained DURATION``: a long run per case, reported per window (p50/p90, temperature, CPU
clocks), and a throttling verdict — the last window's p50 against the first's. Thermal throttling
changes rankings between minute 1 and minute 30; a short run cannot see it.

:func:`parse_duration` runs on the local side; :func:`run_windows` on the device (inside the zipapp).
"""

from __future__ import annotations

import re
import time

THROTTLE_THRESHOLD = 0.10  # last window's p50 more than 10 % above the first's: throttling
WINDOW_S = 30.0  # target window length of a long run
MIN_WINDOWS, MAX_WINDOWS = 3, 20
MAX_DURATION_S = 24 * 3600.0

_UNITS = {"": 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text) -> float:
    """'5m' -> 300, '90s' / '90' -> 90, '1.5h' -> 5400. ValueError with the accepted forms."""
    m = re.match(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$", str(text).lower())
    if not m or m.group(2) not in _UNITS:
        raise ValueError(f"{text!r} is not a duration; write e.g. 90s, 5m or 1h")
    v = float(m.group(1)) * _UNITS[m.group(2)]
    if not 0 < v <= MAX_DURATION_S:
        raise ValueError(f"{text!r}: a duration between 1 s and 24 h, please")
    return v


def window_plan(duration_s: float) -> tuple[int, float]:
    """(number of windows, seconds per window): ~30 s windows, at least 3, at most 20."""
    n = int(min(MAX_WINDOWS, max(MIN_WINDOWS, round(duration_s / WINDOW_S))))
    return n, duration_s / n


def verdict(windows: list, threshold: float = THROTTLE_THRESHOLD) -> dict:
    """Compare the last window's p50 with the first's."""
    good = [w for w in windows if w.get("p50_ms")]
    if len(good) < 2:
        return {"verdict": "unknown", "reason": "fewer than two windows measured"}
    first, last = good[0]["p50_ms"], good[-1]["p50_ms"]
    change = last / first - 1.0
    out = {"p50_first_ms": first, "p50_last_ms": last, "p50_change": change, "threshold": threshold}
    if change > threshold:
        return {**out, "verdict": "throttling",
                "reason": f"p50 rose {100 * change:.1f}% from the first to the last window (> {100 * threshold:.0f}%)"}
    return {**out, "verdict": "steady", "reason": f"p50 changed {100 * change:+.1f}% from the first to the last window"}


def run_windows(infer, duration_s: float, thermal=None, clocks=None, should_stop=None) -> dict:
    """Run ``infer()`` (returns seconds) back to back for ``duration_s``, cut into windows."""
    import numpy as np

    n, win = window_plan(duration_s)
    should_stop = should_stop or (lambda: False)
    windows = []
    t0 = time.perf_counter()
    for w in range(n):
        end = t0 + (w + 1) * win
        samples = []
        while time.perf_counter() < end and not should_stop():
            samples.append(infer())
        row = {"window": w + 1, "end_s": round(time.perf_counter() - t0, 3), "runs": len(samples)}
        if samples:
            a = np.asarray(samples) * 1e3
            row.update(p50_ms=float(np.percentile(a, 50)), p90_ms=float(np.percentile(a, 90)))
        temps = thermal() if thermal else {}
        if temps:
            row["temp_max_c"] = max(temps.values())
            row["thermal_c"] = temps
        mhz = [c for c in (clocks() if clocks else []) if c]
        if mhz:
            row["cpu_mhz_mean"] = round(sum(mhz) / len(mhz))
        windows.append(row)
        if should_stop():
            break
    v = verdict(windows)
    temps = [w["temp_max_c"] for w in windows if "temp_max_c" in w]
    if v["verdict"] == "throttling":  # what else could explain it
        v["reason"] += (f"; hottest zone {temps[0]:.0f} → {temps[-1]:.0f} °C" if temps else
                        "; no thermal zone is readable: other load on the device would look the same")
    return {"duration_s": duration_s, "window_s": win, "windows": windows, **v}
