"""Runner interface: registry, TensorRT / CoreML messages on this machine, PyTorch eager runner,
ORT per-node profiling, OpenVINO async queue and perf counters."""

import sys

from pathlib import Path

import numpy as np
import pytest

from partialdeploy.errors import RuntimeUnavailable, UserError
from partialdeploy.backends import runtime_for_path
from partialdeploy.backends.runner import Runner, open_runner, runner_for
from profile_fixtures import SIZE, shared_export_dir, tiny_net


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    return shared_export_dir(tmp_path_factory)


def test_registry_resolves_every_target_lazily():
    for t in ("onnxruntime", "onnx", "openvino", "tensorrt", "coreml", "torch"):
        cls = runner_for(t)
        assert issubclass(cls, Runner)
    # resolving a runner class must not import its runtime (checked in a fresh interpreter: other
    # tests in this process may have imported coremltools already)
    import subprocess

    code = ("import sys; from partialdeploy.backends.runner import runner_for; "
            "[runner_for(t) for t in ('onnxruntime', 'openvino', 'tensorrt', 'coreml', 'torch')]; "
            "print([m for m in ('tensorrt', 'coremltools', 'openvino', 'onnxruntime', 'torch') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr
    with pytest.raises(UserError, match="no runner for target"):
        runner_for("tflite")


def test_runtime_for_path(dist):
    assert runtime_for_path(dist / "onnx/model.onnx") == "onnxruntime"
    assert runtime_for_path(dist / "openvino/fp32/model.xml") == "openvino"
    assert runtime_for_path(dist / "tensorrt/fp16") == "tensorrt"  # bundle directory
    assert runtime_for_path("x.engine") == "tensorrt"
    assert runtime_for_path(dist / "coreml/fp16/model.mlpackage") == "coreml"
    with pytest.raises(UserError, match="--target"):
        runtime_for_path("model.tflite")


def test_tensorrt_unavailable_here_one_clear_line(dist):
    cls = runner_for("tensorrt")
    if cls.is_available():
        pytest.skip("this machine has an NVIDIA GPU with TensorRT: the GPU test below covers it")
    assert cls.is_available() is False
    why = cls.unavailable_reason()
    assert why.startswith("needs an NVIDIA GPU with TensorRT") and "\n" not in why
    with pytest.raises(RuntimeUnavailable, match="needs an NVIDIA GPU with TensorRT"):
        open_runner(dist / "tensorrt/fp16").load()


def test_tensorrt_bundle_without_engine_says_how_to_build(dist):
    from partialdeploy.backends.tensorrt.runner import engine_path

    with pytest.raises(UserError, match="build_engine.sh"):
        engine_path(dist / "tensorrt/fp16")


@pytest.mark.skipif(not runner_for("tensorrt").is_available(),
                    reason="needs an NVIDIA GPU with TensorRT 10 + cuda-python (none on this machine)")
def test_tensorrt_runner_on_gpu(dist, tmp_path):  # pragma: no cover - GPU only
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    net = builder.create_network(0)
    parser = trt.OnnxParser(net, logger)
    assert parser.parse((dist / "onnx-static/model.onnx").read_bytes())
    cfg = builder.create_builder_config()
    cfg.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    (tmp_path / "model.engine").write_bytes(bytes(builder.build_serialized_network(net, cfg)))
    r = runner_for("tensorrt")(tmp_path / "model.engine", profile_layers=True).load()
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    y = r.run(x)
    assert y.shape == (1, 10) and r.last_gpu_ms > 0 and r.layer_times()
    r.close()


def test_coreml_needs_macos_message(dist):
    cls = runner_for("coreml")
    if sys.platform == "darwin":
        pytest.skip("on macOS CoreML runs: covered by test_coreml_predict_on_macos")
    assert not cls.is_available()
    with pytest.raises(RuntimeUnavailable, match="running a CoreML model needs macOS"):
        open_runner(dist / "coreml/fp16/model.mlpackage").load()


@pytest.mark.skipif(sys.platform != "darwin", reason="CoreML predict needs macOS (this machine is Linux)")
def test_coreml_predict_on_macos(tmp_path):  # pragma: no cover - macOS only
    import coremltools as ct
    import torch

    net = tiny_net()
    traced = torch.jit.trace(net, torch.randn(1, 3, SIZE, SIZE))
    m = ct.convert(traced, inputs=[ct.TensorType(name="input", shape=(1, 3, SIZE, SIZE))], convert_to="mlprogram")
    m.save(str(tmp_path / "m.mlpackage"))
    r = open_runner(tmp_path / "m.mlpackage").load()
    x = np.random.default_rng(0).standard_normal((1, 3, SIZE, SIZE)).astype(np.float32)
    assert next(iter(r.infer({"input": x}).values())).size == 10


def test_torch_runner_matches_module_and_times_blocks():
    import torch

    net = tiny_net()
    r = runner_for("torch")(module=net, input_shape=(None, 3, SIZE, SIZE), profile_layers=True, threads=2).load()
    x = np.random.default_rng(0).standard_normal((2, 3, SIZE, SIZE)).astype(np.float32)
    y = r.run(x)
    with torch.no_grad():
        ref = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
    assert r.inputs()[0].shape == (None, 3, SIZE, SIZE)
    names = {row["name"] for row in r.layer_times()}
    assert {"patch_embed", "stages.0.blocks.0", "stages.1", "stages.2.blocks.1", "head"} <= names
    r.close()


def test_onnxruntime_and_openvino_agree_with_torch(dist):
    import torch

    x = np.random.default_rng(1).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)
    with torch.no_grad():
        ref = tiny_net()(torch.from_numpy(x)).numpy()
    for rel in ("onnx/model.onnx", "openvino/fp32/model.xml"):
        with open_runner(dist / rel, threads=2) as r:
            assert r.load_time_s is not None and r.load_time_s > 0
            np.testing.assert_allclose(r.run(x), ref, rtol=1e-4, atol=1e-4)


def test_ort_profile_parser_averages_per_run():
    from partialdeploy.backends.onnxruntime.runner import parse_ort_profile

    ev = [{"cat": "Session", "name": "model_run", "dur": 100}, {"cat": "Session", "name": "model_run", "dur": 100},
          {"cat": "Node", "name": "/stages/stages.0/blocks/blocks.0/mlp/mlp.0/Conv_kernel_time", "dur": 30,
           "args": {"op_name": "Conv", "provider": "CPUExecutionProvider"}},
          {"cat": "Node", "name": "/stages/stages.0/blocks/blocks.0/mlp/mlp.0/Conv_kernel_time", "dur": 50,
           "args": {"op_name": "Conv", "provider": "CPUExecutionProvider"}},
          {"cat": "Node", "name": "/stages/stages.0/blocks/blocks.0/mlp/mlp.0/Conv_fence_before", "dur": 5}]
    rows = parse_ort_profile(ev)
    assert len(rows) == 1 and rows[0]["op"] == "Conv" and rows[0]["time_ms"] == pytest.approx(0.04)


def test_ort_layer_times_real(dist, tmp_path):
    r = runner_for("onnx")(dist / "onnx/model.onnx", threads=1, profile_layers=True,
                           scratch_dir=str(tmp_path)).load()
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    for _ in range(3):
        r.run(x)
    rows = r.layer_times()
    assert rows and all(row["time_ms"] >= 0 for row in rows)
    assert any("stages.0" in row["name"] for row in rows)
    assert not list(tmp_path.glob("*.json"))  # the profiler's file is cleaned up
    assert not list(Path.cwd().glob("ort_profile*.json"))  # and it was written in scratch_dir, not here


def test_openvino_async_queue_and_perf_counters(dist):
    r = runner_for("openvino")(dist / "openvino/fp32/model.xml", performance_hint="THROUGHPUT",
                               profile_layers=True).load()
    x = np.zeros((1, 3, SIZE, SIZE), np.float32)
    wall, lat = r.run_async({"input": x}, count=20)
    assert len(lat) >= 20 and wall > 0 and all(v > 0 for v in lat)
    r.infer({"input": x})
    rows = r.layer_times()
    assert rows and any("stages" in row["name"] for row in rows)
    r.close()
