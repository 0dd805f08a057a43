"""OpenVINO runner (CPU by default). fp32 parity needs INFERENCE_PRECISION_HINT=f32: some CPUs
otherwise pick bf16."""

from __future__ import annotations

import time

import numpy as np

from partialdeploy.errors import RuntimeUnavailable, UserError
from partialdeploy.runners.base import Runner, TensorMeta


class OpenVINORunner(Runner):
    name = "openvino"

    @classmethod
    def is_available(cls) -> bool:
        try:
            import openvino  # noqa: F401
            return True
        except ImportError:
            return False

    @classmethod
    def runtime_version(cls) -> str | None:
        try:
            import openvino
            return openvino.get_version()
        except ImportError:
            return None

    def load(self) -> "OpenVINORunner":
        try:
            import openvino as ov
        except ImportError as e:
            raise RuntimeUnavailable("openvino is not installed: pip install 'partialdeploy[openvino]'") from e
        self.core = ov.Core()
        device = self.options.get("device", "CPU")
        config = {"INFERENCE_PRECISION_HINT": self.options.get("inference_precision", "f32"),
                  "PERFORMANCE_HINT": self.options.get("performance_hint", "LATENCY")}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.options.get("profile_layers"):
            config["PERF_COUNT"] = True
        t0 = time.perf_counter()
        try:
            model = self.core.read_model(str(self.path))
            self.compiled = self.core.compile_model(model, device, config)
        except Exception as e:
            raise UserError(f"OpenVINO cannot load {self.path}: {str(e).splitlines()[0][:200]}") from e
        self.load_time_s = time.perf_counter() - t0
        self.request = self.compiled.create_infer_request()
        return self

    @staticmethod
    def _meta(ports) -> list[TensorMeta]:
        out = []
        for p in ports:
            ps = p.get_partial_shape()
            shape = tuple(d.get_length() if d.is_static else None for d in ps)
            out.append(TensorMeta(p.get_any_name(), shape, p.get_element_type().to_dtype().name))
        return out

    def inputs(self) -> list[TensorMeta]:
        return self._meta(self.compiled.inputs)

    def outputs(self) -> list[TensorMeta]:
        return self._meta(self.compiled.outputs)

    def infer(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = self.request.infer(feed)
        return {p.get_any_name(): np.array(res[p]) for p in self.compiled.outputs}

    def close(self) -> None:
        self.request = None
        self.compiled = None
