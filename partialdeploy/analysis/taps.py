"""Boundary taps, runtime-blind: run a model with every block's output exposed.

``open_taps(model, runtime)`` opens the model through its runtime's runner with ``taps=True`` (the
runner contract's ``BOUNDARY_TAPS``: ONNX Runtime adds the boundary tensors as graph outputs,
OpenVINO ``add_outputs``, PyTorch forward hooks on the modules the model's family names). The
result maps images to ``{block: output}`` — ``head`` is the logits — with the official block names
of the model's family, in execution order. ``partialdeploy diff`` and the INT8 fallback of every
target use this; neither knows a runtime.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from partialdeploy.analysis.blocknames import HEAD
from partialdeploy.errors import UserError

DYNAMIC_BATCH = 8  # chunk size for a model whose batch is dynamic


@dataclass
class Taps:
    runtime: str  # the backend that runs it ("onnxruntime")
    label: str  # how people write it ("ONNX Runtime")
    boundaries: list[str]  # block boundaries in execution order, HEAD last
    quantized: bool | None  # the model carries INT8 quantization (None: the runtime cannot say)
    runner: Any

    def collect(self, x: np.ndarray) -> dict:
        """Images (N, C, H, W) -> {boundary: (N, ...) float array}, in the model's static batch."""
        from partialdeploy.verification import run_padded, static_batch

        r = self.runner
        meta = r.inputs()[0]
        head = r.outputs()[0].name

        def run(chunk):
            out = r.infer({meta.name: np.ascontiguousarray(chunk, np.float32)})
            res = {b: out[b] for b in self.boundaries[:-1] if b in out}
            res[HEAD] = out[head]
            return res

        return run_padded(run, np.asarray(x, np.float32), static_batch(meta.shape) or DYNAMIC_BATCH)

    def close(self) -> None:
        self.runner.close()


def open_taps(path, runtime: str, threads: int | None = None, **options) -> Taps:
    """Open ``path`` (a model file; or None and what the runtime's runner takes in memory: ``module=`` for
    PyTorch, ``model=`` for ONNX Runtime / OpenVINO) with its boundaries exposed. UserError when
    the runtime cannot tap boundaries or is not installed."""
    from partialdeploy import backends
    from partialdeploy.backends.runner import BOUNDARY_TAPS

    b = backends.get(runtime)
    cls = b.runner_class()
    if BOUNDARY_TAPS not in cls.capabilities:
        raise UserError(f"{b.label or b.name} cannot expose block outputs (its runner has no boundary taps): "
                        "compare another artifact")
    if not cls.is_available():
        raise UserError(cls.unavailable_reason() or f"{b.name} is not installed")
    r = cls(path, threads=threads, taps=True, **options).load()
    return Taps(b.name, b.label or b.name, [*r.boundaries(), HEAD], r.quantized(), r)


def collector(path, runtime: str, threads: int | None = None, **options) -> Callable[[np.ndarray], dict]:
    """``images -> {block: output}`` of :func:`open_taps` (the INT8 fallback's view of a model)."""
    return open_taps(path, runtime, threads, **options).collect
