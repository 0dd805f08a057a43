"""Report assembly: the report's header (tool, device, settings, environment fingerprint), the
statistics of each case's timed samples with their warnings, and the status counts."""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np

from partialdeploy.profiling.settings import Settings
from partialdeploy.records import ProfileResult
from partialdeploy.report.schema import SCHEMA


def new_report(settings: Settings, source: str, model: dict, device: str | None) -> dict:
    """The report before anything is measured (``complete`` and ``interrupted`` false, no results)."""
    from partialdeploy.version import __version__
    from partialdeploy.profiling.envinfo import device_label, fingerprint

    env = fingerprint(settings.threads)
    return {
        "schema": SCHEMA,
        "tool": {"name": "partialdeploy", "version": __version__},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "device": device or device_label(env),
        "source": source,
        "model": model,
        "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(settings).items()},
        "environment": env,
        "complete": False,
        "interrupted": False,
        "results": [],
    }


def summarize(samples_s, batch: int, wall_s: float | None = None) -> dict:
    """Latency statistics (ms) of per-inference times in seconds; throughput in images/s."""
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    if a.size == 0:
        return {}
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    busy = wall_s if wall_s else float(a.sum()) / 1e3
    return {
        "latency_ms": {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
                       "p99": float(np.percentile(a, 99)), "mean": mean, "std": std,
                       "min": float(a.min()), "max": float(a.max())},
        "cv": std / mean if mean > 0 else 0.0,
        "runs": int(a.size),
        "timed_s": busy,
        "throughput_ips": batch * a.size / busy if busy > 0 else None,
    }


def fill_result(c, s: Settings, interrupted: bool) -> None:
    """The statistics of case ``c`` (a ``timed.Case``) so far into its result row: latency, block
    medians, warnings (variation, drift, interruption) and at most ``samples_cap`` raw samples."""
    r: ProfileResult = c.result
    if not c.samples:
        if interrupted and r.status == "ok":
            r.status, r.reason = "interrupted", "interrupted before any timed run"
        return
    st = summarize(c.samples, c.batch, c.wall_s if c.async_lat else None)
    r.latency_ms, r.cv, r.runs, r.timed_s, r.throughput_ips = (st["latency_ms"], st["cv"], st["runs"],
                                                               st["timed_s"], st["throughput_ips"])
    if r.status == "interrupted":
        r.status = "ok"
    bm = np.asarray(c.block_medians) * 1e3
    r.blocks = len(bm)
    r.block_p50_ms = [float(v) for v in bm]
    r.median_of_block_medians_ms = float(np.median(bm)) if len(bm) else None
    warns = []
    if st["cv"] > s.cv_threshold:
        warns.append(f"latency varies: coefficient of variation {100 * st['cv']:.1f}% > "
                     f"{100 * s.cv_threshold:.0f}% (busy or throttling machine?): treat with care")
    if len(bm) > 1 and bm.min() > 0 and (bm.max() - bm.min()) / np.median(bm) > s.cv_threshold:
        warns.append(f"block medians drift {bm.min():.3g}-{bm.max():.3g} ms between blocks")
    if interrupted:
        warns.append(f"interrupted: {len(c.samples)} timed runs kept")
    r.warnings = warns
    samples = np.asarray(c.samples) * 1e3
    if len(samples) > s.samples_cap:
        samples = samples[np.linspace(0, len(samples) - 1, s.samples_cap).astype(int)]
    r.samples_ms = [round(float(v), 4) for v in samples]


def status_counts(results: list[ProfileResult]) -> dict:
    return {k: sum(r.status == k for r in results) for k in ("ok", "skipped", "not_run", "error")}

