"""What a profile run is asked to do: its settings (checked once, as the flags gave them), which
runner can measure which mode, and how an artifact is opened for it."""

from __future__ import annotations

import re
from dataclasses import dataclass

from partialdeploy.errors import UserError

MODES = ("latency", "throughput")


@dataclass
class Settings:
    batches: tuple[int, ...] = (1,)
    threads: int | None = None
    mode: str = "latency"  # latency: one request at a time; throughput: async requests in flight
    warmup: int = 10  # warm-up inferences per block ...
    warmup_time_s: float | None = None  # ... or warm up for this long instead
    runs: int | None = 100  # timed inferences (all blocks together) ...
    min_time_s: float | None = 1.0  # ... AND at least this much timed time (None: count only)
    max_time_s: float | None = 120.0  # safety cap per case (None: no cap)
    blocks: int = 3
    layers: bool = True
    layer_runs: int = 20
    top: int = 10
    cv_threshold: float = 0.10
    samples_cap: int = 2000  # raw samples kept in the report (for the distribution plot)
    seed: int = 0

    def validate(self) -> "Settings":
        if not self.batches or any(int(b) < 1 for b in self.batches):
            raise UserError(f"--batch must list positive integers, got {list(self.batches)}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be >= 1, got {self.threads}")
        if self.mode not in MODES:
            raise UserError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.runs is None and self.min_time_s is None:
            raise UserError("give a run count (--runs) and/or a minimum time (--min-time)")
        if self.runs is not None and self.runs < 1:
            raise UserError(f"--runs must be >= 1, got {self.runs}")
        if self.blocks < 1:
            raise UserError(f"--blocks must be >= 1, got {self.blocks}")
        if self.warmup < 0:
            raise UserError(f"--warmup must be >= 0, got {self.warmup}")
        return self


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(t) for t in re.split(r"[,\s]+", text.strip()) if t)
    except ValueError:
        raise UserError(f"--batch takes comma-separated integers like 1,8,32, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise UserError(f"--batch takes positive integers like 1,8,32, got {text!r}")
    return tuple(dict.fromkeys(vals))


def mode_refusal(runner_cls, mode: str) -> str | None:
    """Why ``runner_cls`` cannot measure ``mode`` (None: it can). Throughput keeps several requests in
    flight, which needs the runner's declared ASYNC_QUEUE; it is never silently measured as latency."""
    from partialdeploy import backends
    from partialdeploy.backends.runner import ASYNC_QUEUE

    if mode != "throughput" or ASYNC_QUEUE in runner_cls.capabilities:
        return None
    able = sorted(b.name for b in backends.all_backends() if ASYNC_QUEUE in b.runner_class().capabilities)
    return (f"--mode throughput needs several requests in flight (an async infer queue), which the "
            f"{runner_cls.name} runner does not have (it runs one request at a time; {', '.join(able) or 'none'} "
            f"can): profile it with --mode latency")


def runner_options(cls, settings: Settings, art, layers: bool = False, scratch: str | None = None) -> dict:
    """How to open ``art`` (a Artifact) for this run: as its manifest entry records, in the run's
    mode; for the per-layer pass with the runtime's profiler on (``scratch``: where it may write)."""
    opts = cls.artifact_options(art, settings.mode)
    if layers:
        opts["profile_layers"] = True
        if scratch:
            opts["scratch_dir"] = scratch
    return opts
