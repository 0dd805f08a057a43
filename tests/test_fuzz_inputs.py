"""Fuzz the inputs tests/test_fuzz.py does not reach, through the real entry point: TensorRT bundles
(bundle.json) for build-engine, profile reports for plan, manifests for profile, ONNX files for profile
and diff, OpenVINO IR for profile. Every outcome is exit 0, 1 or 2 with one error line — never a
traceback or exit 3. Structured inputs come from hypothesis (derandomized: a failure reproduces);
files are byte-mutated with a fixed seed."""

import json
import random
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from test_exit_codes import cli  # noqa: F401 (the in-process entry point fixture)

SETTINGS = settings(max_examples=15, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats() | st.text(max_size=12),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                    max_leaves=12)


def _mutate(template: dict, data) -> dict:
    """The template with some of its values replaced by arbitrary JSON (keys kept, so the parser gets
    past the schema check and meets wrong types and values deeper in)."""
    d = json.loads(json.dumps(template))
    for k in data.draw(st.lists(st.sampled_from(sorted(d)), max_size=4, unique=True)):
        d[k] = data.draw(JSON)
    return d


def _ok(code, err):
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code in (0, 1, 2), (code, err[-2000:])
    assert "internal error" not in err and "Traceback" not in err, err[-2000:]
    errors = sum(ln.startswith("error:") for ln in lines)
    assert errors == 1 if code == 2 else errors <= 1, err[-2000:]  # a diff that parts says so on stdout


BUNDLE = {"schema": "partialdeploy.tensorrt_bundle/1", "onnx": "model.onnx", "precision": "fp16",
          "tensorrt": {"expected": 11, "int8_quantization": "explicit"}, "workspace_mb": 1024,
          "input": {"name": "input", "shape": [1, 3, 64, 64]}, "batch": {"min": 1, "opt": 1, "max": 1},
          "dynamic_batch": False, "parity": {"tolerance": {"cosine_min": 0.999}}, "timing_cache": "timing.cache"}


@SETTINGS
@given(data=st.data())
def test_fuzz_bundles(cli, demo_dir, tmp_path_factory, data):  # noqa: F811
    from partialdeploy.backends.tensorrt.build import BUNDLE_SCHEMA

    d = tmp_path_factory.mktemp("bundle")
    shutil.copy(demo_dir / "onnx/fp32/model.onnx", d / "model.onnx")
    (d / "bundle.json").write_text(json.dumps(_mutate({**BUNDLE, "schema": BUNDLE_SCHEMA}, data)))
    _ok(*cli("build-engine", d)[::2])


@SETTINGS
@given(data=st.data())
def test_fuzz_reports_for_plan(cli, demo_dir, tmp_path_factory, data):  # noqa: F811
    t = tmp_path_factory.mktemp("plan")
    rep = json.loads((demo_dir.parent / "fuzz-base-report.json").read_text()) if (
        demo_dir.parent / "fuzz-base-report.json").exists() else None
    if rep is None:
        code, _, err = cli("profile", demo_dir, "--runs", "3", "--min-time", "0", "--no-layers", "--blocks", "1",
                           "-o", demo_dir.parent / "fuzz-base-report.json")
        assert code == 0, err
        rep = json.loads((demo_dir.parent / "fuzz-base-report.json").read_text())
    if data.draw(st.booleans()):
        rep = _mutate(rep, data)
    else:
        rep["results"] = [_mutate(r, data) for r in rep["results"]]
    (t / "profile.json").write_text(json.dumps(rep))
    _ok(*cli("plan", t / "profile.json")[::2])
    _ok(*cli("report", "compare", t / "profile.json", t / "profile.json")[::2])


@SETTINGS
@given(data=st.data())
def test_fuzz_manifests_for_profile(cli, demo_dir, tmp_path_factory, data):  # noqa: F811
    d = tmp_path_factory.mktemp("man") / "d"
    shutil.copytree(demo_dir, d)
    m = json.loads((d / "manifest.json").read_text())
    if data.draw(st.booleans()):
        m = _mutate(m, data)
    else:
        m["artifacts"] = [_mutate(a, data) for a in m["artifacts"]]
    (d / "manifest.json").write_text(json.dumps(m))
    _ok(*cli("profile", d, "--runs", "2", "--min-time", "0", "--no-layers", "--blocks", "1")[::2])


def _flips(blob: bytes, rng: random.Random) -> bytes:
    b = bytearray(blob)
    kind = rng.choice(["flip", "truncate", "splice"])
    if kind == "truncate":
        return bytes(b[: rng.randrange(len(b))])
    if kind == "splice":
        i = rng.randrange(len(b))
        return bytes(b[:i] + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) + b[i:])
    for _ in range(rng.randrange(1, 16)):
        b[rng.randrange(len(b))] = rng.randrange(256)
    return bytes(b)


@pytest.mark.parametrize("i", range(10))
def test_fuzz_onnx_files(cli, demo_dir, tmp_path, i):  # noqa: F811
    rng = random.Random(1000 + i)
    f = tmp_path / "model.onnx"
    f.write_bytes(_flips((demo_dir / "onnx/fp32/model.onnx").read_bytes(), rng))
    _ok(*cli("profile", f, "--target", "onnxruntime", "--runs", "2", "--min-time", "0", "--no-layers",
             "--blocks", "1", "-o", tmp_path / "p.json")[::2])
    _ok(*cli("diff", demo_dir / "onnx/fp32/model.onnx", f)[::2])


@pytest.fixture(scope="module")
def demo_ir(demo_dir, tmp_path_factory):
    import openvino as ov

    d = tmp_path_factory.mktemp("ir")
    ov.save_model(ov.convert_model(str(demo_dir / "onnx/fp32/model.onnx")), str(d / "model.xml"))
    return d


@pytest.mark.parametrize("i", range(8))
def test_fuzz_openvino_ir(cli, demo_ir, tmp_path, i):  # noqa: F811
    rng = random.Random(2000 + i)
    shutil.copy(demo_ir / "model.bin", tmp_path / "model.bin")
    src = demo_ir / ("model.xml" if i % 3 else "model.bin")
    (tmp_path / src.name).write_bytes(_flips(src.read_bytes(), rng))
    if src.name == "model.bin":
        shutil.copy(demo_ir / "model.xml", tmp_path / "model.xml")
    _ok(*cli("profile", tmp_path / "model.xml", "--target", "openvino", "--runs", "2", "--min-time", "0",
             "--no-layers", "--blocks", "1", "-o", tmp_path / "p.json")[::2])
