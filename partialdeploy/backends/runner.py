"""The runner contract every runtime implements (Polygraphy-style): open an artifact, report its
inputs/outputs, infer, time itself, release it. Shared by verification (parity), profiling, ``diff``
and the INT8 fallback; each runtime's runner is ``backends/<runtime>/runner.py``. numpy only."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from partialdeploy.errors import UserError
from partialdeploy.records import Artifact


@dataclass
class TensorMeta:
    name: str
    shape: tuple  # ints, or str / None for dynamic dims
    dtype: str  # numpy dtype name, e.g. "float32"


# capabilities a runner declares (the profiler asks ``runner.can(...)``, never probes attributes)
ASYNC_QUEUE = "async_queue"  # run_async(feed, count, min_time_s, should_stop, on_done) -> (wall_s, latencies_s)
LAYER_TIMES = "layer_times"  # layer_times() / reset_layer_times() with profile_layers=True (and
# scratch_dir=DIR: where the runtime's profiler may write its files, removed by the caller)
# created with ``taps=True`` the runner exposes every block boundary of the model as an output:
# ``boundaries()`` names them (official block names, execution order) and ``infer`` returns them,
# keyed by those names, after the model's own outputs (what ``diff`` and the INT8 fallback use)
BOUNDARY_TAPS = "boundary_taps"


class Runner(ABC):
    """load() -> inputs()/outputs() metadata -> infer(feed) -> close().

    ``infer`` takes and returns dicts of numpy arrays keyed by tensor name. ``load_time_s`` is set
    by ``load`` (model read + compile). ``timed_infer`` is how a caller measures one inference: it
    returns the outputs and the seconds the runner itself reports (its own clock: wall time by
    default, CUDA events for TensorRT; named by ``clock``)."""

    name: str = "runner"  # the runtime: onnxruntime, openvino, tensorrt, coreml, torch
    load_time_s: float | None = None

    def __init__(self, path: str | Path | None = None, threads: int | None = None, **options):
        self.path = Path(path) if path is not None else None
        self.threads = threads
        self.options = options

    requires: tuple[str, ...] = ()  # modules the runtime needs
    dist: str | None = None  # distribution whose version is reported

    @classmethod
    def is_available(cls) -> bool:
        from partialdeploy.lazy import installed

        return installed(*cls.requires)

    @classmethod
    def runtime_version(cls) -> str | None:
        from partialdeploy.lazy import dist_version

        return dist_version(cls.dist)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """One line saying why this runtime cannot run here (None when it can)."""
        if cls.is_available():
            return None
        fix = f": pip install {cls.dist}" if getattr(cls, "dist", None) else ""
        return f"the {cls.name} runtime is not installed here{fix}"

    @classmethod
    def probe(cls) -> dict:
        """On an edge device (``remote check``, ``profile --remote``): can this runtime run here? JSON
        types, never raises: ``{"ok", "version", "error" (when not ok)}`` plus what the runtime lists
        (execution providers, devices, the GPU). This default imports the first of ``requires``."""
        from partialdeploy.lazy import probe_import

        mod, err = probe_import(cls.requires[0]) if cls.requires else (None, "nothing to import")
        if mod is None:
            return {"ok": False, "error": err}
        return {"ok": True, "version": getattr(mod, "__version__", "?")}

    capabilities: frozenset[str] = frozenset()  # of ASYNC_QUEUE, LAYER_TIMES, BOUNDARY_TAPS
    clock: str = "perf_counter"  # what timed_infer measures with

    layer_source: str = ""  # where per-layer times come from, for reports (e.g. "OpenVINO PERF_COUNT")

    @classmethod
    def artifact_options(cls, entry: Artifact, mode: str = "latency") -> dict:
        """Runner options that open a manifest artifact entry exactly as its export gate did (the
        session/compile settings it records), for ``mode`` "latency" or "throughput"."""
        return {}

    def can(self, capability: str) -> bool:
        return capability in self.capabilities

    @property
    def supports_async(self) -> bool:
        return self.can(ASYNC_QUEUE)

    def layer_times(self) -> list[dict] | None:
        """Per-layer times [{name, op, kernel, time_ms}] averaged per inference, when the runner was
        created with ``profile_layers=True`` and supports it; else None."""
        return None

    def reset_layer_times(self) -> None:
        """Forget the per-layer counters gathered so far (e.g. those of warm-up runs)."""

    def boundaries(self) -> list[str]:
        """The block boundaries exposed as outputs (loaded with ``taps=True``), execution order."""
        return []

    def model_metadata(self) -> dict[str, str]:
        """The metadata the exporter wrote into the loaded model (the ONNX ``metadata_props``: the
        architecture and its preprocessing; OpenVINO keeps them in ``rt_info["framework"]``); {} when
        the runtime cannot say."""
        return {}

    def quantized(self) -> bool | None:
        """Does the loaded model carry INT8 quantization (Q/DQ, FakeQuantize)? None: cannot tell."""
        return None

    def requests_in_flight(self) -> int:
        """How many requests throughput mode keeps in flight (``nireq`` or the runtime's optimum);
        1 for runners without ASYNC_QUEUE."""
        return 1

    def device_time_s(self) -> float | None:
        """The runner's own time of the last ``infer`` when it has a better clock than the host's
        wall time (TensorRT: CUDA events around the enqueue); None otherwise."""
        return None

    def timed_infer(self, feed: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], float]:
        """(outputs, seconds) of one inference, timed by the runner's own clock (the input check is
        done before the clock starts)."""
        self.check_feed(feed)
        t0 = time.perf_counter()
        out = self.infer_impl(feed)
        wall = time.perf_counter() - t0
        dev = self.device_time_s()
        return out, (dev if dev is not None else wall)

    def compute_precision(self) -> str | None:
        """The floating-point precision the loaded runtime actually computes in (read back from the
        runtime, e.g. OpenVINO's compiled INFERENCE_PRECISION_HINT): "f32", "bf16", "f16", or None
        when the runtime cannot say."""
        return None

    @abstractmethod
    def load(self) -> "Runner": ...

    @abstractmethod
    def inputs(self) -> list[TensorMeta]: ...

    @abstractmethod
    def outputs(self) -> list[TensorMeta]: ...

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name for a feed of inputs by name; the feed is checked first (``check_feed``)."""
        self.check_feed(feed)
        return self.infer_impl(feed)

    @abstractmethod
    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The runtime's inference on a checked feed (what each runner implements)."""

    def check_feed(self, feed: dict[str, np.ndarray]) -> None:
        """UserError (one line) when the feed does not match ``inputs()``: names, rank, static dims,
        dtype. The metadata is read once per ``load``."""
        cached = self.__dict__.get("_feed_metas")
        if cached is None or cached[0] is not self.load_time_s:
            cached = self._feed_metas = (self.load_time_s, self.inputs())
        metas = cached[1]
        want = {m.name for m in metas}
        if set(feed) != want:
            raise UserError(f"{self.name}: the model's inputs are {sorted(want)}, got {sorted(feed)}")
        for m in metas:
            a = feed[m.name]
            shape = getattr(a, "shape", None)
            known = any(isinstance(d, int) for d in m.shape)  # a runtime that knows nothing: no shape check
            if shape is None or (known and (len(shape) != len(m.shape) or any(
                    isinstance(d, int) and d != s for d, s in zip(m.shape, shape)))):
                raise UserError(f"{self.name}: input {m.name!r} expects shape {tuple(m.shape)}, got {shape}")
            if _is_dtype(m.dtype) and np.dtype(a.dtype).name != np.dtype(m.dtype).name:
                raise UserError(f"{self.name}: input {m.name!r} expects {m.dtype}, got {np.dtype(a.dtype).name}")

    def close(self) -> None:
        """Release the runtime's session / engine; safe to call twice and before ``load``."""

    def __enter__(self):
        self.load()
        return self

    def __exit__(self, *exc):
        self.close()

    # convenience for single-input/single-output classifiers
    def run(self, x: np.ndarray) -> np.ndarray:
        name = self.inputs()[0].name
        return next(iter(self.infer({name: x}).values()))

    def run_batched(self, x: np.ndarray, batch: int = 1) -> np.ndarray:
        return np.concatenate([self.run(x[i:i + batch]) for i in range(0, len(x), batch)], 0)


_DTYPES = {"float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool"}


def _is_dtype(name) -> bool:
    return name in _DTYPES


# which runner opens what is declared once, by the backends (partialdeploy/backends/<runtime>/__init__.py)

def runner_for(target: str) -> type[Runner]:
    """The Runner class of a runtime or target name (imports the runner module, not the runtime)."""
    from partialdeploy import backends

    b = backends.find(target)
    if b is None:
        raise UserError(f"no runner for target {target!r}; choose one of {', '.join(backends.runtime_names())}")
    return b.runner_class()


def open_runner(path: str | Path, target: str | None = None, **options) -> Runner:
    """Construct (not load) the runner for ``path``."""
    from partialdeploy import backends

    return runner_for(target or backends.runtime_for_path(path))(path, **options)
