"""The timed runs: one case is an opened artifact at one batch size; a block is a warm-up followed by
timed inferences until the block's share of the run count AND of the minimum time are reached (or
the cap). Each inference is timed by the runner itself (``timed_infer``: TensorRT uses CUDA events);
in throughput mode the runner keeps several requests in flight (``run_async``)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from partialdeploy.profiling.settings import Settings
from partialdeploy.records import ProfileResult

_FEED_DTYPES = ("float32", "float16", "float64", "int64", "int32", "uint8")


@dataclass
class Case:
    key: int  # artifact index
    batch: int
    result: ProfileResult
    feed: dict | None = None
    samples: list = field(default_factory=list)
    block_medians: list = field(default_factory=list)
    wall_s: float = 0.0
    async_lat: list = field(default_factory=list)


@dataclass(frozen=True)
class Share:
    """What one block of a case must reach: runs and time (None: no such condition), and its cap."""
    runs: int | None
    min_time_s: float | None
    cap_s: float | None

    @classmethod
    def of(cls, s: Settings) -> "Share":
        return cls(runs=None if s.runs is None else max(1, -(-s.runs // s.blocks)),
                   min_time_s=None if s.min_time_s is None else s.min_time_s / s.blocks,
                   cap_s=None if s.max_time_s is None else s.max_time_s / s.blocks)


def make_feed(metas, batch: int, size, rng) -> dict:
    """Random inputs for the runner's input metadata at ``batch`` (dynamic spatial dimensions take the
    manifest's preprocessing ``size``, NCHW)."""
    feed = {}
    for m in metas:
        shape = list(m.shape)
        if shape:
            shape[0] = batch
        for i in range(1, len(shape)):
            if not isinstance(shape[i], int):
                hw = list(size or (224, 224))
                shape[i] = 3 if i == 1 else hw[0] if i == 2 else hw[-1]
        dt = np.dtype(m.dtype if m.dtype in _FEED_DTYPES else "float32")
        feed[m.name] = rng.standard_normal(shape).astype(dt) if dt.kind == "f" else np.zeros(shape, dt)
    return feed


def first_inference_s(runner, feed) -> float:
    t0 = time.perf_counter()
    runner.infer(feed)
    return time.perf_counter() - t0


def warmup(runner, feed, s: Settings, should_stop: Callable[[], bool]) -> None:
    if s.warmup_time_s:
        t_end = time.perf_counter() + s.warmup_time_s
        while time.perf_counter() < t_end and not should_stop():
            runner.infer(feed)
    else:
        for _ in range(s.warmup):
            runner.infer(feed)


def run_block(runner, c: Case, s: Settings, share: Share, should_stop: Callable[[], bool]) -> None:
    """One block of case ``c``: its own warm-up, then timed inferences into ``c.samples``."""
    from partialdeploy.backends.runner import ASYNC_QUEUE

    warmup(runner, c.feed, s, should_stop)
    if s.mode == "throughput" and runner.can(ASYNC_QUEUE):
        _block_async(runner, c, share, should_stop)
    else:
        _block_sync(runner, c, share, should_stop)


def _block_sync(runner, c: Case, share: Share, should_stop) -> None:
    n, t_min, cap = share.runs, share.min_time_s, share.cap_s
    out: list[float] = []
    infer, feed, clock = runner.timed_infer, c.feed, time.perf_counter
    t_start = clock()
    try:
        while True:
            out.append(infer(feed)[1])  # the runner's own time (TensorRT: CUDA events)
            el = clock() - t_start
            if (n is None or len(out) >= n) and (t_min is None or el >= t_min):
                break
            if (cap is not None and el >= cap) or should_stop():
                break
    finally:
        c.samples.extend(out)
        if out:
            c.block_medians.append(float(np.median(out)))
            c.wall_s += float(sum(out))


def _block_async(runner, c: Case, share: Share, should_stop) -> None:
    t_min = share.min_time_s
    if share.cap_s is not None and t_min is not None:
        t_min = min(t_min, share.cap_s)
    wall, lat = runner.run_async(c.feed, count=share.runs, min_time_s=t_min, should_stop=should_stop)
    c.samples.extend(lat)
    c.wall_s += wall
    c.async_lat.append(len(lat))
    if lat:
        c.block_medians.append(float(np.median(lat)))
    c.result.requests_in_flight = runner.requests_in_flight()
