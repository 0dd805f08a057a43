"""The seams a newcomer relies on: the runner contract (close, own clock, declared capabilities) and
the import graph (no cycles between modules, no module reaching into another's private names)."""

import ast
import pathlib

import numpy as np

import partialdeploy
from partialdeploy.runners import runner_for
from partialdeploy.runners.base import ASYNC_QUEUE, LAYER_TIMES, Runner, TensorMeta
from profile_fixtures import SIZE, shared_export_dir

PKG = pathlib.Path(partialdeploy.__file__).parent


def _imports(path: pathlib.Path):
    """(module imported, names imported) for every `from partialdeploy... import ...` in a file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("partialdeploy"):
            yield node.module, [a.name for a in node.names]


def _module(path: pathlib.Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_no_module_imports_another_modules_private_names():
    bad = []
    for f in PKG.rglob("*.py"):
        me = _module(f)
        for mod, names in _imports(f):
            bad += [f"{me} imports {mod}.{n}" for n in names
                    if n.startswith("_") and not n.startswith("__") and mod != me]
    assert bad == []


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    for f in PKG.rglob("*.py"):
        me = _module(f)
        graph.setdefault(me, set()).update(m for m, _ in _imports(f) if m != me)
    cycles = []

    def walk(node, stack, seen):
        for nxt in graph.get(node, ()):
            if nxt in stack:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in seen:
                seen.add(nxt)
                walk(nxt, stack + [nxt], seen)

    # the package __init__ files re-export their modules; a cycle through them is not a real one
    for start in graph:
        walk(start, [start], {start})
    real = [c for c in cycles if not any(m.count(".") == 0 or m.endswith(("runners", "exporters", "families",
                                                                           "models")) for m in c)]
    assert not real, real[:3]


class _Clocked(Runner):
    """A runner with its own clock (like TensorRT's CUDA events) that reports 5 ms per inference."""
    name = "fake"
    clock = "device"

    def load(self):
        return self

    def inputs(self):
        return [TensorMeta("x", (1,), "float32")]

    def outputs(self):
        return [TensorMeta("y", (1,), "float32")]

    def infer(self, feed):
        return {"y": feed["x"] * 2}

    def device_time_s(self):
        return 0.005


def test_timed_infer_reports_the_runners_own_clock():
    r = _Clocked().load()
    out, t = r.timed_infer({"x": np.ones(1, np.float32)})
    assert out["y"][0] == 2 and t == 0.005
    assert not r.can(ASYNC_QUEUE) and not r.supports_async


def test_tensorrt_runner_times_with_cuda_events():
    cls = runner_for("tensorrt")
    assert cls.clock == "cuda_events"
    r = cls("model.engine")
    r.last_gpu_ms = 2.5  # what infer() sets from cudaEventElapsedTime
    assert r.device_time_s() == 0.0025
    r.close()  # before load: nothing to release, no error


def test_declared_capabilities():
    assert runner_for("openvino").capabilities == {ASYNC_QUEUE, LAYER_TIMES}
    assert not runner_for("onnxruntime")("m.onnx").can(ASYNC_QUEUE)
    assert runner_for("onnxruntime").capabilities == {LAYER_TIMES}


def test_onnxruntime_close_releases_the_session(tmp_path_factory):
    dist = shared_export_dir(tmp_path_factory)
    r = runner_for("onnxruntime")(dist / "onnx/model.onnx").load()
    assert r.run(np.zeros((1, 3, SIZE, SIZE), np.float32)).shape == (1, 10)
    r.close()
    assert r.session is None
    r.close()  # twice is fine


def test_openvino_reset_layer_times_forgets_warmup(tmp_path_factory):
    dist = shared_export_dir(tmp_path_factory)
    r = runner_for("openvino")(dist / "openvino/fp32/model.xml", profile_layers=True).load()
    x = {r.inputs()[0].name: np.zeros((1, 3, SIZE, SIZE), np.float32)}
    r.infer(x)
    assert r.layer_times()
    r.reset_layer_times()
    assert r.layer_times() is None
    r.close()
