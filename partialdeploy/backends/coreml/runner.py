"""CoreML runner: ``coremltools`` ``MLModel.predict`` — which only runs on macOS. Elsewhere
coremltools can convert and inspect a model but not execute it, so ``load()`` raises
RuntimeUnavailable with one line that says so.

Options: ``compute_units`` (ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE; default ALL).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from partialdeploy.errors import RuntimeUnavailable, UserError, first_line
from partialdeploy.records import Artifact
from partialdeploy.backends.runner import Runner, TensorMeta

NOT_MACOS = "running a CoreML model needs macOS (coremltools on {os} can convert and inspect, not predict)"

_ARRAY_DTYPES = {65568: "float32", 65552: "float16", 65600: "float64", 131104: "int32"}


def _why_unavailable() -> str | None:
    if sys.platform != "darwin":
        return NOT_MACOS.format(os=sys.platform)
    try:
        import coremltools  # noqa: F401
    except ImportError:
        return "coremltools is not installed: pip install coremltools"
    return None


class CoreMLRunner(Runner):
    name = "coreml"
    dist = "coremltools"

    @classmethod
    def artifact_options(cls, entry: Artifact, mode: str = "latency") -> dict:
        units = entry.extra.get("compute_units")
        return {"compute_units": units} if units else {}

    @classmethod
    def is_available(cls) -> bool:
        return _why_unavailable() is None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        return _why_unavailable()

    def load(self) -> "CoreMLRunner":
        why = _why_unavailable()
        if why:
            raise RuntimeUnavailable(why)
        import coremltools as ct

        if self.path is None or not self.path.exists():
            raise UserError(f"no such CoreML model: {self.path}")
        units = str(self.options.get("compute_units", "ALL")).upper()
        if units not in ct.ComputeUnit.__members__:
            raise UserError(f"unknown CoreML compute units {units!r}: {', '.join(ct.ComputeUnit.__members__)}")
        t0 = time.perf_counter()
        try:
            self.model = ct.models.MLModel(str(self.path), compute_units=ct.ComputeUnit[units])
        except Exception as e:
            raise UserError(f"CoreML cannot load {self.path}: {first_line(e, 200)}") from e
        self.load_time_s = time.perf_counter() - t0
        self._spec = self.model.get_spec()
        return self

    def _meta(self, features) -> list[TensorMeta]:
        out = []
        for f in features:
            kind = f.type.WhichOneof("Type")
            if kind == "multiArrayType":
                shape = tuple(int(d) for d in f.type.multiArrayType.shape) or (None,)
                dtype = _ARRAY_DTYPES.get(int(f.type.multiArrayType.dataType), "float32")
            else:
                shape, dtype = (None,), kind or "?"
            out.append(TensorMeta(f.name, shape, dtype))
        return out

    def inputs(self) -> list[TensorMeta]:
        return self._meta(self._spec.description.input)

    def outputs(self) -> list[TensorMeta]:
        return self._meta(self._spec.description.output)

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = self.model.predict({k: np.asarray(v) for k, v in feed.items()})
        return {k: np.asarray(v) for k, v in res.items()}

    def close(self) -> None:
        self.model = None
