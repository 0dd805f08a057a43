"""OpenVINO runner (CPU by default). fp32 parity needs INFERENCE_PRECISION_HINT=f32: some CPUs
otherwise pick bf16.

Options: ``device`` (CPU), ``inference_precision`` (f32), ``performance_hint`` (LATENCY or
THROUGHPUT), ``nireq`` (async requests for throughput mode; default: what the plugin says is
optimal), ``profile_layers`` (PERF_COUNT on: ``layer_times()`` averages the per-node counters),
``config`` (compile properties that win, e.g. an artifact's recorded ``runtime_config``), ``model``
(an ``openvino.Model`` in memory instead of a file), ``taps`` (every block boundary as an extra
output, see ``BOUNDARY_TAPS``)."""

from __future__ import annotations

import time

import numpy as np

from partialdeploy.errors import RuntimeUnavailable, UserError, first_line
from partialdeploy.records import Artifact
from partialdeploy.backends.runner import ASYNC_QUEUE, BOUNDARY_TAPS, LAYER_TIMES, Runner, TensorMeta
from partialdeploy.lazy import probe_import


def hint_name(value) -> str:
    """Normalize a read-back INFERENCE_PRECISION_HINT (an ov.Type or a string) to f32/bf16/f16."""
    s = str(value).lower()
    for name, keys in (("bf16", ("bf16", "bfloat16")), ("f16", ("f16", "float16")), ("f32", ("f32", "float32"))):
        if any(k in s for k in keys):
            return name
    return s


def ov_boundaries(model) -> list[str]:
    """Block-output tensors of an ``openvino.Model`` in execution order: the ``block_outputs`` the
    ONNX export recorded (kept in ``rt_info["framework"]``), else every tensor a model family names
    as one of its blocks."""
    import json

    from partialdeploy import families
    from partialdeploy.analysis.blocknames import HEAD

    listed = None
    try:
        if model.has_rt_info(["framework", "block_outputs"]):
            listed = set(json.loads(model.get_rt_info(["framework", "block_outputs"]).astype(str)))
    except Exception:  # an IR without (readable) framework metadata: names decide
        listed = None
    head = set(model.outputs[0].get_names())
    order: list[str] = []
    for op in model.get_ordered_ops():
        for o in op.outputs():
            names = o.get_names()
            if names & head:
                continue
            order += [n for n in names
                      if n != HEAD and (n in listed if listed is not None else families.is_boundary(n))]
    return list(dict.fromkeys(order))


def _framework_metadata(model) -> dict[str, str]:
    """The ONNX metadata the conversion kept in the IR's ``rt_info["framework"]``."""
    try:
        return {str(k): v.astype(str) for k, v in model.get_rt_info()["framework"].items()}
    except Exception:  # an IR without (readable) framework metadata
        return {}


class OpenVINORunner(Runner):
    name = "openvino"
    capabilities = frozenset({ASYNC_QUEUE, LAYER_TIMES, BOUNDARY_TAPS})
    _bounds: list = []
    _quantized = None
    requires = ("openvino",)
    dist = "openvino"

    @classmethod
    def probe(cls) -> dict:
        ov, err = probe_import("openvino")
        if ov is None:
            return {"ok": False, "error": err}
        try:
            return {"ok": True, "version": ov.get_version() if hasattr(ov, "get_version") else ov.__version__,
                    "devices": list(ov.Core().available_devices)}
        except Exception as e:
            return {"ok": False, "error": f"broken: {first_line(e, 200)}"}
    layer_source = "OpenVINO PERF_COUNT (real time per node)"

    @classmethod
    def artifact_options(cls, entry: Artifact, mode: str = "latency") -> dict:
        opts: dict = {"performance_hint": "THROUGHPUT" if mode == "throughput" else "LATENCY"}
        rc = entry.extra.get("runtime_config")
        if rc:  # compile exactly as the export's parity gate did
            opts["config"] = dict(rc)
        return opts

    def load(self) -> "OpenVINORunner":
        try:
            import openvino as ov
        except ImportError as e:
            raise RuntimeUnavailable("openvino is not installed: pip install openvino nncf") from e
        self.core = ov.Core()
        device = self.options.get("device", "CPU")
        config = {"INFERENCE_PRECISION_HINT": self.options.get("inference_precision", "f32"),
                  "PERFORMANCE_HINT": self.options.get("performance_hint", "LATENCY")}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.threads)
        if self.options.get("profile_layers"):
            config["PERF_COUNT"] = True
        config.update(self.options.get("config") or {})  # e.g. an artifact's recorded runtime_config
        t0 = time.perf_counter()
        try:
            model = self.options.get("model")
            model = self.core.read_model(str(self.path)) if model is None else model.clone()
            self._quantized = any(op.get_type_name() == "FakeQuantize" for op in model.get_ops())
            self._metadata = _framework_metadata(model)
            if self.options.get("taps"):
                self._bounds = ov_boundaries(model)
                if self._bounds:
                    model.add_outputs(self._bounds)
            self.compiled = self.core.compile_model(model, device, config)
        except Exception as e:
            raise UserError(f"OpenVINO cannot load {self.path or 'the model'}: {first_line(e, 200)}") from e
        self.load_time_s = time.perf_counter() - t0
        bset = set(self._bounds)
        # output name per port: a boundary port by its block name (a tensor may carry several names)
        self._names = [next((n for n in p.get_names() if n in bset), p.get_any_name()) for p in self.compiled.outputs]
        self.request = self.compiled.create_infer_request()
        self._layer_acc: dict = {}
        self._layer_runs = 0
        return self

    def boundaries(self) -> list[str]:
        return list(self._bounds)

    def model_metadata(self) -> dict[str, str]:
        return dict(getattr(self, "_metadata", {}))

    def quantized(self) -> bool | None:
        return self._quantized

    def requests_in_flight(self) -> int:
        return int(self.options.get("nireq") or self.optimal_requests())

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

    def compute_precision(self) -> str | None:
        try:
            return hint_name(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        except Exception:  # a device without the property
            return None

    def outputs(self) -> list[TensorMeta]:
        return self._meta(self.compiled.outputs)

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = self.request.infer(feed, share_inputs=True)  # no input copy (synchronous call)
        if self.options.get("profile_layers"):
            self._accumulate(self.request)
        return {n: np.array(res[p]) for n, p in zip(self._names, self.compiled.outputs)}

    # ---- throughput mode: an AsyncInferQueue keeps several requests in flight

    def optimal_requests(self) -> int:
        try:
            return max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        except Exception:
            return 1

    def run_async(self, feed: dict[str, np.ndarray], count: int | None = None, min_time_s: float | None = None,
                  should_stop=None, on_done=None) -> tuple[float, list[float]]:
        """Run ``feed`` through an AsyncInferQueue until ``count`` inferences completed and
        ``min_time_s`` elapsed. Returns (wall seconds, per-request latencies in seconds)."""
        import openvino as ov

        nireq = self.requests_in_flight()
        queue = ov.AsyncInferQueue(self.compiled, nireq)
        lat: list[float] = []

        def done(request, t_start):
            lat.append(time.perf_counter() - t_start)
            if on_done is not None:
                on_done()

        queue.set_callback(done)
        submitted = 0
        t0 = time.perf_counter()
        while True:
            elapsed = time.perf_counter() - t0
            enough_n = count is None or submitted >= count
            enough_t = min_time_s is None or elapsed >= min_time_s
            if (enough_n and enough_t) or (should_stop is not None and should_stop()):
                break
            queue.start_async(feed, time.perf_counter())
            submitted += 1
        queue.wait_all()
        return time.perf_counter() - t0, lat

    # ---- per-layer: PERF_COUNT counters, averaged over the runs since load
    def _accumulate(self, request) -> None:
        self._layer_runs += 1
        for pi in request.get_profiling_info():
            if str(pi.status).endswith("NOT_RUN") or str(pi.status).endswith("OPTIMIZED_OUT"):
                continue
            key = pi.node_name
            ms = pi.real_time.total_seconds() * 1e3
            prev = self._layer_acc.get(key)
            self._layer_acc[key] = (pi.node_type, pi.exec_type, (prev[2] if prev else 0.0) + ms)

    def layer_times(self) -> list[dict] | None:
        """[{name, op, kernel, time_ms}] per inference (mean over the profiled runs), or None."""
        if not self.options.get("profile_layers") or not self._layer_runs:
            return None
        n = self._layer_runs
        return [{"name": k, "op": v[0], "kernel": v[1], "time_ms": v[2] / n} for k, v in self._layer_acc.items()]

    def reset_layer_times(self) -> None:
        self._layer_acc, self._layer_runs = {}, 0

    def close(self) -> None:
        self.request = None
        self.compiled = None
