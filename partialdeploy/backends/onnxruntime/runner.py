"""ONNX Runtime runner (CPU by default)."""

from __future__ import annotations

import time

import numpy as np

from partialdeploy.errors import RuntimeUnavailable, UserError, first_line
from partialdeploy.records import Artifact
from partialdeploy.backends.runner import BOUNDARY_TAPS, LAYER_TIMES, Runner, TensorMeta
from partialdeploy.lazy import probe_import

_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(uint8)": "uint8", "tensor(int8)": "int8"}


class OnnxRuntimeRunner(Runner):
    """Options besides the session's: ``model`` (an ``onnx.ModelProto`` or its bytes instead of a
    file), ``taps`` (every block boundary as an extra output, see ``BOUNDARY_TAPS``)."""

    name = "onnxruntime"
    requires = ("onnxruntime",)
    dist = "onnxruntime"

    @classmethod
    def probe(cls) -> dict:
        ort, err = probe_import("onnxruntime")
        if ort is None:
            return {"ok": False, "error": err}
        try:
            return {"ok": True, "version": ort.__version__, "providers": list(ort.get_available_providers())}
        except Exception as e:
            return {"ok": False, "error": f"broken: {first_line(e, 200)}"}
    layer_source = "ONNX Runtime profiler (kernel time per node)"

    @classmethod
    def artifact_options(cls, entry: Artifact, mode: str = "latency") -> dict:
        opts: dict = {}
        extra = entry.extra
        level = extra.get("graph_optimization_level")
        if level in ("disable", "basic", "extended", "all"):  # the session options the artifact records
            opts["graph_optimization"] = level
        if isinstance(extra.get("session_config"), dict):
            opts["session_config"] = dict(extra["session_config"])
        return opts
    capabilities = frozenset({LAYER_TIMES, BOUNDARY_TAPS})
    session = None
    _bounds: list = []
    _qdq = None

    def load(self) -> "OnnxRuntimeRunner":
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise RuntimeUnavailable("onnxruntime is not installed: pip install onnxruntime onnx") from e
        so = ort.SessionOptions()
        if self.threads:
            so.intra_op_num_threads = int(self.threads)
            so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # spinning worker threads steal cores from whatever runs next (docs/architecture.md, measuring)
        entries = {"session.intra_op.allow_spinning": "1" if self.options.get("spin", False) else "0",
                   **(self.options.get("session_config") or {})}  # an artifact's recorded entries win
        for k, v in entries.items():
            so.add_session_config_entry(str(k), str(v))
        if self.options.get("profile_layers"):
            so.enable_profiling = True
            import os

            so.profile_file_prefix = os.path.join(str(self.options.get("scratch_dir") or "."), "ort_profile")
        level = self.options.get("graph_optimization", "all")
        so.graph_optimization_level = {
            "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }[level]
        from partialdeploy.onnxfile import check_external_data

        if self.path is not None:
            check_external_data(self.path)  # data outside the model's folder: one clear line, exit 2
        t0 = time.perf_counter()
        source = self._source()
        try:
            self.session = ort.InferenceSession(source, so, providers=self.options.get(
                "providers", ["CPUExecutionProvider"]))
        except Exception as e:  # onnxruntime raises its own exception types
            raise UserError(f"ONNX Runtime cannot load {self.path or 'the model'}: {first_line(e, 200)}") from e
        self.load_time_s = time.perf_counter() - t0
        return self

    def _source(self):
        """What the session opens: the file, or the model in memory (with its boundaries as outputs)."""
        model = self.options.get("model")
        if model is None and not self.options.get("taps"):
            return str(self.path)
        import onnx

        if model is None:
            if self.path is None or not self.path.is_file():
                raise UserError(f"ONNX Runtime: no model file {self.path}")
            model = onnx.load(str(self.path))
        elif isinstance(model, (bytes, bytearray)):
            model = onnx.ModelProto.FromString(bytes(model))
        self._qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
        if self.options.get("taps"):
            model = onnx.ModelProto.FromString(model.SerializeToString())  # the caller's model stays as it was
            self._bounds = onnx_boundaries(model)
            have = {o.name for o in model.graph.output}
            model.graph.output.extend(onnx.helper.make_tensor_value_info(b, onnx.TensorProto.FLOAT, None)
                                      for b in self._bounds if b not in have)
        return model.SerializeToString()

    def boundaries(self) -> list[str]:
        return list(self._bounds)

    def model_metadata(self) -> dict[str, str]:
        return dict(self.session.get_modelmeta().custom_metadata_map) if self.session is not None else {}

    def quantized(self) -> bool | None:
        if self._qdq is None and self.path is not None and self.path.is_file():
            import onnx

            m = onnx.load(str(self.path), load_external_data=False)
            self._qdq = any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in m.graph.node)
        return self._qdq

    def _meta(self, items) -> list[TensorMeta]:
        return [TensorMeta(i.name, tuple(d if isinstance(d, int) else (d or None) for d in i.shape),
                           _ORT_TYPES.get(i.type, i.type)) for i in items]

    def inputs(self) -> list[TensorMeta]:
        return self._meta(self.session.get_inputs())

    def compute_precision(self) -> str | None:
        # the CPU provider computes float tensors in their own type (no implicit bf16/fp16); QDQ
        # INT8 models run their quantized nodes in integer kernels and the rest in f32
        if self.options.get("providers", ["CPUExecutionProvider"]) != ["CPUExecutionProvider"]:
            return None
        types = {i.type for i in self.session.get_inputs()}
        return "f16" if types == {"tensor(float16)"} else "f32"

    def outputs(self) -> list[TensorMeta]:
        return self._meta(self.session.get_outputs())

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feed)))

    def end_profiling(self) -> str | None:
        return self.session.end_profiling() if self.options.get("profile_layers") else None

    def layer_times(self) -> list[dict] | None:
        """Per-node kernel times from ORT's profiling JSON, [{name, op, kernel, time_ms}] per inference
        (mean over the runs since load). Ends profiling and removes the JSON file."""
        if not self.options.get("profile_layers") or self.session is None:
            return None
        import json
        import os

        path = self.end_profiling()
        try:
            with open(path) as f:
                events = json.load(f)
        finally:
            try:
                os.remove(path)
            except OSError:
                pass
        return parse_ort_profile(events)

    def close(self) -> None:
        self.session = None


def onnx_boundaries(model) -> list[str]:
    """Block-output tensors of an ``onnx.ModelProto`` in execution order: the ``block_outputs`` its
    export recorded, else every produced tensor a model family names as one of its blocks."""
    import json

    from partialdeploy import families
    from partialdeploy.analysis.blocknames import HEAD

    produced = [t for n in model.graph.node for t in n.output]
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        listed = set(json.loads(meta["block_outputs"]))
    except (KeyError, ValueError, TypeError):
        listed = None
    return [t for t in produced if t != HEAD and (t in listed if listed is not None else families.is_boundary(t))]


def parse_ort_profile(events: list[dict]) -> list[dict]:
    """Aggregate ORT trace events: ``cat == "Node"`` and name ``<node>_kernel_time`` (µs in ``dur``).
    The mean per inference is total / number of ``model_run`` events (else the max count per node)."""
    runs = sum(1 for e in events if e.get("cat") == "Session" and e.get("name") == "model_run")
    acc: dict = {}
    for e in events:
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        node = e["name"][: -len("_kernel_time")]
        args = e.get("args") or {}
        cur = acc.setdefault(node, {"name": node, "op": args.get("op_name", "?"),
                                    "kernel": args.get("provider", ""), "total_us": 0.0, "count": 0})
        cur["total_us"] += float(e.get("dur", 0))
        cur["count"] += 1
    if not acc:
        return []
    n = runs or max(v["count"] for v in acc.values())
    return [{"name": v["name"], "op": v["op"], "kernel": v["kernel"].replace("ExecutionProvider", ""),
             "time_ms": v["total_us"] / 1e3 / n} for v in acc.values()]
