"""The seams a newcomer relies on: the runner contract (close, own clock, declared capabilities) and
the import graph (no cycles between modules, no module reaching into another's private names)."""

import ast
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import partialdeploy
from partialdeploy.errors import UserError
from partialdeploy.backends.runner import runner_for
from partialdeploy.backends.runner import ASYNC_QUEUE, BOUNDARY_TAPS, LAYER_TIMES, Runner, TensorMeta
from profile_fixtures import SIZE, shared_export_dir

PKG = pathlib.Path(partialdeploy.__file__).parent


def _imports(path: pathlib.Path):
    """(module imported, names imported) for every `from partialdeploy... import ...` in a file."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("partialdeploy"):
            yield node.module, [a.name for a in node.names]


def _imported_modules(path: pathlib.Path):
    """Every module of the package a file imports, at any depth (function-level imports count):
    ``from partialdeploy.pkg import mod`` is an import of the submodule ``partialdeploy.pkg.mod``."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "partialdeploy")
    for mod, names in _imports(path):
        subs = [f"{mod}.{n}" for n in names if (PKG.parent / f"{mod}.{n}".replace(".", "/")).with_suffix(".py").exists()
                or (PKG.parent / f"{mod}.{n}".replace(".", "/") / "__init__.py").exists()]
        yield from subs
        if len(subs) < len(names):
            yield mod


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


def test_no_module_reaches_into_another_modules_private_attributes():
    """``from partialdeploy.x import y`` then ``y._z`` (or ``import partialdeploy.x as m``; ``m._z``)."""
    bad = []
    for f in PKG.rglob("*.py"):
        tree = ast.parse(f.read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("partialdeploy"):
                names |= {a.asname or a.name for a in node.names}
            elif isinstance(node, ast.Import):
                names |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("partialdeploy")}
        bad += [f"{_module(f)}:{n.lineno} {n.value.id}.{n.attr}" for n in ast.walk(tree)
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in names
                and n.attr.startswith("_") and not n.attr.startswith("__")]
    assert bad == []


def test_no_import_cycles_between_modules():
    graph: dict[str, set[str]] = {}
    for f in PKG.rglob("*.py"):
        me = _module(f)
        graph.setdefault(me, set()).update(m for m in _imported_modules(f) if m != me)
    cycles = []

    def walk(node, stack, seen):
        for nxt in graph.get(node, ()):
            if nxt in stack:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in seen:
                seen.add(nxt)
                walk(nxt, stack + [nxt], seen)

    for start in graph:
        walk(start, [start], {start})
    assert not cycles, cycles[:3]


# ---- size: a module, a function and a class stay readable in one sitting

MAX_LINES = {"module": 400, "function": 80, "class": 250}


def _oversized(path: pathlib.Path) -> list[str]:
    """What in ``path`` is over MAX_LINES: the module, and each function or class (def line to last line)."""
    text = path.read_text()
    where = path.relative_to(PKG).as_posix()
    bad = [f"{where}: {len(text.splitlines())} lines"] if len(text.splitlines()) > MAX_LINES["module"] else []
    for node in ast.walk(ast.parse(text)):
        kind = ("function" if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                else "class" if isinstance(node, ast.ClassDef) else None)
        if kind and node.end_lineno - node.lineno + 1 > MAX_LINES[kind]:
            bad.append(f"{where}:{node.lineno} {kind} {node.name}: {node.end_lineno - node.lineno + 1} lines")
    return bad


def test_modules_functions_and_classes_stay_small():
    """Every module of the package, every folder and the core alike."""
    bad = [b for f in sorted(PKG.rglob("*.py")) for b in _oversized(f)]
    assert not bad, bad


def test_the_size_check_sees_an_oversized_function(tmp_path, monkeypatch):
    """The rule can fail: a generated 81-line function and a 401-line module are both named."""
    monkeypatch.setattr(sys.modules[__name__], "PKG", tmp_path)
    body = "\n".join(f"    x{i} = {i}" for i in range(80))
    (tmp_path / "big.py").write_text(f"def long():\n{body}\n" + "\n" * 320)
    assert [b.split(": ")[0] for b in _oversized(tmp_path / "big.py")] == ["big.py", "big.py:1 function long"]


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

    def infer_impl(self, feed):
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
    assert runner_for("openvino").capabilities == {ASYNC_QUEUE, LAYER_TIMES, BOUNDARY_TAPS}
    assert not runner_for("onnxruntime")("m.onnx").can(ASYNC_QUEUE)
    assert runner_for("onnxruntime").capabilities == {LAYER_TIMES, BOUNDARY_TAPS}
    assert runner_for("torch").capabilities == {LAYER_TIMES, BOUNDARY_TAPS}
    assert BOUNDARY_TAPS not in runner_for("tensorrt").capabilities | runner_for("coreml").capabilities


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


# ---- the runtime registry: adding a runtime is one module

FAKE_BACKEND = '''
"""A runtime that exists only in this test: runner, converter and declaration in one module."""
from pathlib import Path

import numpy as np

from partialdeploy.backends import Backend
from partialdeploy.backends.target import Target
from partialdeploy.records import Artifact
from partialdeploy.backends.runner import Runner, TensorMeta


class FakeRunner(Runner):
    name = "fakert"
    clock = "fake_device"

    def load(self):
        self.load_time_s = 0.0
        return self

    def inputs(self):
        return [TensorMeta("x", (None, 3, None, None), "float32")]

    def outputs(self):
        return [TensorMeta("y", (None, 10), "float32")]

    def infer_impl(self, feed):
        return {"y": np.zeros((len(feed["x"]), 10), np.float32)}

    def device_time_s(self):
        return 0.005  # the runtime's own clock says 5 ms, whatever the host measured


class FakeTarget(Target):
    name = "fakert"
    precisions = ("fp32",)

    def export(self, ctx, out_dir):
        (Path(out_dir) / "model.fake").write_bytes(b"fake")
        return Artifact(self.name, ctx.precision, "model.fake", files=["model.fake"])


BACKEND = Backend(name="fakert", runner=f"{__name__}:FakeRunner", targets={"fakert": f"{__name__}:FakeTarget"},
                  aliases=("fk",), suffixes=(".fake",), options={"fake_knob": ((str,), "a knob", ("a", "b"))})
'''


@pytest.fixture
def fake_backend(tmp_path, monkeypatch):
    from partialdeploy import backends

    (tmp_path / "fakert_backend.py").write_text(FAKE_BACKEND)
    monkeypatch.syspath_prepend(str(tmp_path))
    import fakert_backend

    backends.register(fakert_backend.BACKEND)
    yield tmp_path
    backends.unregister("fakert")


def test_a_registered_backend_appears_everywhere(fake_backend):
    from partialdeploy.backends import get_target
    from partialdeploy.exporting.request import expand_targets
    from partialdeploy.profiles import validate
    from partialdeploy.backends import canonical, runtime_for_path

    assert "fakert" in expand_targets(["all"]) and expand_targets(["fakert"]) == ("fakert",)
    assert get_target("fakert").name == "fakert" and get_target("fakert").version() is None
    assert runtime_for_path(fake_backend / "m.fake") == "fakert" and canonical("fk") == "fakert"
    assert runner_for("fk").clock == "fake_device"
    assert validate({"target": "fakert", "fake_knob": "B"})["fake_knob"] == "b"
    with pytest.raises(UserError, match="fake_knob"):
        validate({"fake_knob": "c"})


def test_profile_uses_the_runners_own_clock(fake_backend):
    """The profiler reports what the runner's clock says (TensorRT: CUDA events), not host wall time."""
    from partialdeploy.profiling.profiler import profile
    from partialdeploy.profiling.settings import Settings

    (fake_backend / "m.fake").write_bytes(b"fake")
    rep = profile(fake_backend / "m.fake", Settings(runs=20, min_time_s=None, warmup=1, blocks=2, layers=False))
    r = rep["results"][0]
    assert r["status"] == "ok" and r["clock"] == "fake_device" and r["runtime"] == "fakert"
    assert r["latency_ms"]["p50"] == pytest.approx(5.0) and r["latency_ms"]["max"] == pytest.approx(5.0)


def test_cli_help_lists_registered_backends(fake_backend):
    code = ("import sys; import fakert_backend; from partialdeploy import backends; "
            "backends.register(fakert_backend.BACKEND); from partialdeploy.cli import app; "
            "sys.argv = ['partialdeploy', 'export', '--help']; app()")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={
        **os.environ, "PYTHONPATH": os.pathsep.join([str(fake_backend), os.environ.get("PYTHONPATH", "")]),
        "COLUMNS": "200"})
    assert "fakert" in r.stdout and "onnxruntime" in r.stdout, r.stdout + r.stderr


# A runtime that exists only in this test, as a package laid out like backends/<runtime>/: its
# declaration, its runner and its converter. It computes for real (it hands the ONNX to ONNX Runtime
# under its own name) and has boundary taps; export, verify, profile and diff reach it through the
# registry, and nothing else in partialdeploy knows it.
TAPPING_RUNTIME = {
    "__init__.py": '''
from partialdeploy.backends import Backend

BACKEND = Backend(name="taprt", label="TapRT", runner=f"{__name__}.runner:TapRunner",
                  targets={"taprt": f"{__name__}.target:TapTarget"}, suffixes=(".tap",))
''',
    "runner.py": '''
from partialdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner
from partialdeploy.backends.runner import BOUNDARY_TAPS, Runner


class TapRunner(Runner):
    name = "taprt"
    capabilities = frozenset({BOUNDARY_TAPS})

    def load(self):
        self.inner = OnnxRuntimeRunner(self.path, threads=self.threads, **self.options).load()
        self.load_time_s = self.inner.load_time_s
        return self

    def inputs(self):
        return self.inner.inputs()

    def outputs(self):
        return self.inner.outputs()

    def infer_impl(self, feed):
        return self.inner.infer_impl(feed)

    def boundaries(self):
        return self.inner.boundaries()

    def quantized(self):
        return self.inner.quantized()
''',
    "target.py": '''
import shutil
from pathlib import Path

from partialdeploy.backends.target import Target
from partialdeploy.records import Artifact


class TapTarget(Target):
    name = "taprt"
    precisions = ("fp32",)

    def export(self, ctx, out_dir):
        shutil.copyfile(ctx.onnx_path, Path(out_dir) / "model.tap")
        return Artifact(self.name, ctx.precision, "model.tap", files=["model.tap"])
''',
}


def test_a_runtime_package_with_boundary_taps_works_through_export_verify_profile_and_diff(tmp_path, monkeypatch):
    """One package registers a runtime; nothing else knows it: the export gates its artifact, verify
    checks it, profile times it, and diff compares its block outputs with the train form's."""
    import sys

    from partialdeploy import backends, demo
    from partialdeploy.analysis.blockdiff import run_diff
    from partialdeploy.exporting.request import ExportRequest
    from partialdeploy.exporting.run import run_export
    from partialdeploy.profiling.profiler import profile
    from partialdeploy.profiling.settings import Settings
    from partialdeploy.integrity import verified_export

    pkg = tmp_path / "taprt_runtime"
    pkg.mkdir()
    for name, text in TAPPING_RUNTIME.items():
        (pkg / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    import taprt_runtime

    backends.register(taprt_runtime.BACKEND)
    try:
        assert "taprt_runtime.runner" not in sys.modules and "taprt_runtime.target" not in sys.modules  # lazy
        dist = tmp_path / "dist"
        res = run_export(ExportRequest(targets=("taprt",), out_dir=dist, parity_images=4))
        assert res.exit_code == 0 and res.artifacts[0].verified == "parity", res.failures
        _, _, arts = verified_export(dist)
        assert [a.target for a in arts] == ["taprt"]
        rep = profile(dist, Settings(runs=3, min_time_s=None, warmup=1, blocks=1, layers=False))
        assert rep["results"][0]["status"] == "ok" and rep["results"][0]["runtime"] == "taprt"
        d = run_diff(demo.DEMO_CKPT, dist, target="taprt", count=4)
        assert d.cand["runtime"] == "TapRT" and d.agree
        assert [b.block for b in d.blocks][:2] == ["patch_embed", "stages.0.blocks.0"] and len(d.blocks) > 5
    finally:
        backends.unregister("taprt")


# ---- verification in one place: targets convert, the pipeline opens and gates

def test_pipeline_gates_what_a_target_converted(fake_backend, tmp_path, monkeypatch):
    """The fake target only writes a file; its runner answers zeros: the pipeline's one verification
    path (open through the runner, gate) catches it, exit 1, nothing claimed. Each artifact is gated
    once: the demo's `onnx` artifact (q/k/v fused, so not the deploy ONNX) by its own run in ONNX Runtime,
    which is its certificate (the pipeline does not run it again)."""
    from partialdeploy import verification
    from partialdeploy.exporting.request import ExportRequest
    from partialdeploy.exporting.run import run_export

    opened = []
    real = verification.verify_file
    monkeypatch.setattr(verification, "verify_file",
                        lambda ctx, cls, path, *a, **k: opened.append(cls.name) or real(ctx, cls, path, *a, **k))
    res = run_export(ExportRequest(targets=("onnx", "fakert"), out_dir=tmp_path / "dist", parity_images=4))
    assert res.exit_code == 1 and [a.target for a in res.artifacts] == ["onnx"]
    assert res.failures[0].target == "fakert" and res.failures[0].kind == "verification"
    assert "ONNX -> fakert fp32" in res.failures[0].error
    onnx = res.artifacts[0]  # the interchange ONNX, gated once by its target in ONNX Runtime
    assert onnx.extra["deploy_form"] == {"attention_projections": "fused qkv"}
    assert onnx.verified == "parity" and onnx.parity[-1].stage == "ONNX -> ONNX Runtime fp32 (4 parity images)"
    assert onnx.parity[-1].passed and opened == ["onnxruntime", "fakert"]
    assert not (tmp_path / "dist" / "fakert").exists()


def test_verification_never_certifies_another_precision(tmp_path):
    """An artifact that claims a compute precision its runtime does not compute in is refused."""
    pytest.importorskip("openvino")
    from targets_common import make_ctx

    from partialdeploy.backends import get_target
    from partialdeploy.verification import verify_artifact

    ctx = make_ctx("fp32", with_eval=False)
    art = get_target("openvino").export(ctx, tmp_path)  # converts only
    assert art.verified == "converted" and art.parity == []
    assert verify_artifact(ctx, art, tmp_path) and art.verified == "parity" and art.parity[0].passed
    art.extra["compute_precision"] = "bf16"
    with pytest.raises(UserError, match="cannot certify fp32"):
        verify_artifact(ctx, art, tmp_path)


def test_the_base_class_checks_every_feed(tmp_path_factory):
    """Names, rank, static dims and dtype are checked before any runtime sees the feed (one line)."""
    dist = shared_export_dir(tmp_path_factory)
    with runner_for("onnxruntime")(dist / "onnx/model.onnx") as r:
        name = r.inputs()[0].name
        good = np.zeros((1, 3, SIZE, SIZE), np.float32)
        assert r.infer({name: good}) and r.timed_infer({name: good})[1] > 0
        with pytest.raises(UserError, match="inputs are"):
            r.infer({"nope": good})
        with pytest.raises(UserError, match="expects shape"):
            r.infer({name: np.zeros((1, 3, SIZE), np.float32)})
        with pytest.raises(UserError, match="expects float32"):
            r.infer({name: good.astype(np.float64)})


def test_architecture_doc_names_files_and_functions_that_exist():
    """docs/architecture.md stays true: every file it names exists (or is written by the code), and
    every `module.name` it names for a module of the package is defined there (top level, read with
    ast: nothing imported)."""
    import re

    doc = (PKG.parent / "docs" / "architecture.md").read_text()
    files = {f for f in re.findall(r"`([\w/]+\.py)`", doc)}
    sources = "".join(p.read_text() for p in PKG.rglob("*.py"))
    # a file of the package or the repository, or one the code writes (a bundle's "infer.py")
    assert files and not [f for f in files if not (PKG / f).exists() and not (PKG.parent / f).exists()
                          and f'"{f}"' not in sources]
    missing = []
    for dotted in set(re.findall(r"`((?:\w+\.)+\w+)[`(]", doc)):
        *parts, name = dotted.split(".")
        while parts and not (PKG.joinpath(*parts).with_suffix(".py").exists()
                             or (PKG.joinpath(*parts) / "__init__.py").exists()):
            parts = parts[1:]  # `a.b.c`: the module is the longest dotted tail that names one
        if not parts:
            continue  # a class attribute (Family.boundaries), a file suffix
        mod_path = PKG.joinpath(*parts)
        path = mod_path.with_suffix(".py") if mod_path.with_suffix(".py").exists() else mod_path / "__init__.py"
        if name == "py" or (mod_path / f"{name}.py").exists() or (mod_path / name / "__init__.py").exists():
            continue  # a file suffix, a submodule (remote.agent)
        tree = ast.parse(path.read_text())
        defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
        defined |= {a.asname or a.name for n in tree.body if isinstance(n, ast.ImportFrom) for a in n.names}
        if name not in defined:
            missing.append(dotted)
    assert not missing, missing
