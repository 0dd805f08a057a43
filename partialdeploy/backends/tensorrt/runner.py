"""TensorRT runner: a serialized engine run through the TensorRT Python API (the name-based tensor API of
8.5+, 10 and 11), device buffers and
CUDA-event timing through cuda-python (``cuda.bindings.runtime``, or the older ``cuda.cudart``).
No torch, no pycuda.

``path`` is an engine file (``.engine`` / ``.plan``) or a TensorRT bundle directory from
``partialdeploy export --target tensorrt`` holding ``model.engine`` (built on the device with
``build_engine.sh`` or ``partialdeploy build-engine``).

Everything that needs the GPU is imported lazily; on a machine without an NVIDIA GPU and TensorRT
``is_available()`` is False and ``load()`` raises RuntimeUnavailable with one line that says so.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from partialdeploy.backends.tensorrt.cuda import SIDECAR, check, cudart, load_sidecar_checked, why_unavailable
from partialdeploy.backends.runner import LAYER_TIMES, Runner, TensorMeta
from partialdeploy.lazy import probe_import
from partialdeploy.errors import RuntimeUnavailable, UserError, first_line

UNAVAILABLE = ("needs an NVIDIA GPU with TensorRT 8.5+, 10 or 11 and cuda-python (on a Jetson TensorRT comes "
               "with JetPack, not pip: sudo apt install nvidia-jetpack, then pip install cuda-python for its CUDA; "
               "elsewhere pip install tensorrt cuda-python); {why}")


def engine_path(path: Path) -> Path:
    path = Path(path)
    if path.is_dir():
        for name in ("model.engine", "model.plan"):
            if (path / name).exists():
                return path / name
        raise UserError(f"{path} holds no model.engine yet: build it on the GPU device with "
                        f"`sh {path / 'build_engine.sh'}` or `partialdeploy build-engine {path}`")
    return path


class TensorRTRunner(Runner):
    name = "tensorrt"
    layer_source = "TensorRT IProfiler"
    capabilities = frozenset({LAYER_TIMES})
    clock = "cuda_events"
    _profiler = None  # timed_infer reports the GPU time of the enqueue, not host wall time

    @classmethod
    def probe(cls) -> dict:
        trt, err = probe_import("tensorrt")
        if trt is None:
            return {"ok": False, "error": err}
        out = {"ok": False, "version": getattr(trt, "__version__", "?")}
        rt, err = probe_import("cuda.bindings.runtime")  # cuda-python >= 12.6
        if rt is None:
            rt, err = probe_import("cuda.cudart")
        if rt is None:
            return {**out, "error": f"cuda-python {err}"}
        try:
            e, n = rt.cudaGetDeviceCount()
            if int(e) != 0 or n < 1:
                return {**out, "error": "no CUDA device is visible"}
            e, props = rt.cudaGetDeviceProperties(0)
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return {**out, "ok": True, "gpu": name.strip("\x00 "),
                    "compute_capability": f"{props.major}.{props.minor}"}
        except Exception as e:
            return {**out, "error": f"the CUDA runtime does not load: {first_line(e, 200)}"}

    @classmethod
    def is_available(cls) -> bool:
        return why_unavailable() is None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        why = why_unavailable()
        return UNAVAILABLE.format(why=why) if why else None

    @classmethod
    def runtime_version(cls) -> str | None:
        try:
            import tensorrt as trt
            return trt.__version__
        except Exception:
            return None

    def load(self) -> "TensorRTRunner":
        why = why_unavailable()
        if why:
            raise RuntimeUnavailable(UNAVAILABLE.format(why=why))
        import tensorrt as trt

        self.cudart = cudart()
        path = engine_path(self.path)
        if not path.exists():
            raise UserError(f"no such TensorRT engine: {path}")
        if path.with_name(SIDECAR).exists():  # built by build-engine: say clearly if it was another device/version
            load_sidecar_checked(path)
        self.logger = trt.Logger(trt.Logger.WARNING)
        t0 = time.perf_counter()
        self.trt_runtime = trt.Runtime(self.logger)
        self.engine = self.trt_runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise UserError(f"TensorRT cannot deserialize {path}: engines are tied to the GPU model and TensorRT "
                            f"version that built them (this is TensorRT {trt.__version__}); rebuild it here")
        self.context = self.engine.create_execution_context()
        self.load_time_s = time.perf_counter() - t0
        self.stream = check(self.cudart.cudaStreamCreate())
        self._io = []
        for i in range(self.engine.num_io_tensors):
            name = self.engine.get_tensor_name(i)
            is_input = self.engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT
            dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
            self._io.append((name, is_input, dtype))
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device ptr, nbytes)
        self._profiler = None
        if self.options.get("profile_layers"):
            self._profiler = _make_layer_profiler(trt)
            self.context.profiler = self._profiler
        self.start_evt = check(self.cudart.cudaEventCreate())
        self.end_evt = check(self.cudart.cudaEventCreate())
        self.last_gpu_ms: float | None = None
        return self

    def _meta(self, want_input: bool) -> list[TensorMeta]:
        out = []
        for name, is_input, dtype in self._io:
            if is_input == want_input:
                shape = tuple(d if d >= 0 else None for d in self.engine.get_tensor_shape(name))
                out.append(TensorMeta(name, shape, dtype.name))
        return out

    def inputs(self) -> list[TensorMeta]:
        return self._meta(True)

    def outputs(self) -> list[TensorMeta]:
        return self._meta(False)

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                check(self.cudart.cudaFree(ptr))
            ptr = check(self.cudart.cudaMalloc(nbytes))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def infer_impl(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cr = self.cudart
        h2d, d2h = cr.cudaMemcpyKind.cudaMemcpyHostToDevice, cr.cudaMemcpyKind.cudaMemcpyDeviceToHost
        host_in = {}
        for name, is_input, dtype in self._io:
            if not is_input:
                continue
            if name not in feed:
                raise UserError(f"TensorRT engine input {name!r} missing from the feed")
            arr = np.ascontiguousarray(feed[name], dtype=dtype)
            host_in[name] = arr
            self.context.set_input_shape(name, arr.shape)
            ptr = self._device(name, arr.nbytes)
            self.context.set_tensor_address(name, ptr)
            check(cr.cudaMemcpyAsync(ptr, arr.ctypes.data, arr.nbytes, h2d, self.stream))
        host_out = {}
        for name, is_input, dtype in self._io:
            if is_input:
                continue
            shape = tuple(self.context.get_tensor_shape(name))
            arr = np.empty(shape, dtype=dtype)
            ptr = self._device(name, arr.nbytes)
            self.context.set_tensor_address(name, ptr)
            host_out[name] = arr
        check(cr.cudaEventRecord(self.start_evt, self.stream))
        if not self.context.execute_async_v3(self.stream):
            raise RuntimeError("TensorRT execute_async_v3 failed")
        check(cr.cudaEventRecord(self.end_evt, self.stream))
        for name, arr in host_out.items():
            check(cr.cudaMemcpyAsync(arr.ctypes.data, self._buffers[name][0], arr.nbytes, d2h, self.stream))
        check(cr.cudaStreamSynchronize(self.stream))
        # GPU time of the enqueue alone (no copies), from CUDA events
        self.last_gpu_ms = float(check(cr.cudaEventElapsedTime(self.start_evt, self.end_evt)))
        del host_in
        return host_out

    def device_time_s(self) -> float | None:
        ms = getattr(self, "last_gpu_ms", None)
        return None if ms is None else ms / 1e3

    def layer_times(self) -> list[dict] | None:
        if self._profiler is None or not self._profiler.runs:
            return None
        n = max(self._profiler.runs, 1)
        return [{"name": k, "op": "", "kernel": "tensorrt", "time_ms": v / n} for k, v in self._profiler.acc.items()]

    def reset_layer_times(self) -> None:
        if self._profiler is not None:
            self._profiler.reset()

    def close(self) -> None:
        cr = getattr(self, "cudart", None)
        if cr is None:
            return
        for ptr, _ in getattr(self, "_buffers", {}).values():
            cr.cudaFree(ptr)
        self._buffers = {}
        for evt in ("start_evt", "end_evt"):
            if getattr(self, evt, None) is not None:
                cr.cudaEventDestroy(getattr(self, evt))
                setattr(self, evt, None)
        if getattr(self, "stream", None) is not None:
            cr.cudaStreamDestroy(self.stream)
            self.stream = None
        self.context = None
        self.engine = None


def _make_layer_profiler(trt):
    """An IProfiler that sums per-layer times; TensorRT calls report_layer_time once per layer per
    inference (engine built with ProfilingVerbosity.DETAILED gives the ONNX node names)."""

    class LayerProfiler(trt.IProfiler):
        def __init__(self):
            trt.IProfiler.__init__(self)
            self.reset()

        def reset(self):
            self.acc: dict[str, float] = {}
            self.runs = 0
            self._first = None

        def report_layer_time(self, layer_name, ms):
            if self._first is None:
                self._first = layer_name
            if layer_name == self._first:
                self.runs += 1
            self.acc[layer_name] = self.acc.get(layer_name, 0.0) + float(ms)

    return LayerProfiler()
