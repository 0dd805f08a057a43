"""Target profiles: shipped YAMLs load, lookup by name/path/env, strict validation naming the field."""

from pathlib import Path

import pytest

from partialdeploy.errors import UserError
from partialdeploy.parity import DEFAULT_TOLERANCES
from partialdeploy.profiles import PACKAGE_DIR, apply_overrides, available_profiles, load_profile

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ["onnxruntime-cpu", "onnxruntime-cpu-int8", "openvino-cpu", "openvino-cpu-int8",
           "tensorrt-jetson-orin-fp16", "tensorrt-server-int8", "coreml-ios17-fp16"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_load(name):
    p = load_profile(name)
    assert p["profile"] == name and p["target"] in name and p["precision"] in ("fp32", "fp16", "int8")
    if p.get("dynamic_batch"):
        r = p["batch_range"]
        assert 1 <= r["min"] <= r["opt"] <= r["max"] and p["batch"] == r["opt"]


def test_repo_profiles_dir_is_the_packaged_one():
    assert (ROOT / "profiles").resolve() == PACKAGE_DIR.resolve()
    assert set(SHIPPED) <= set(available_profiles())


def test_tolerance_overrides_merge_defaults():
    p = load_profile("tensorrt-jetson-orin-fp16")
    t = p["tolerances_obj"]["fp16"]
    assert t.cosine_min == 0.999 and t.rel_max == DEFAULT_TOLERANCES["fp16"].rel_max
    assert load_profile("tensorrt-server-int8")["workspace_mb"] == 4096
    assert load_profile("coreml-ios17-fp16")["minimum_deployment_target"] == "iOS17"


def test_by_path_and_env(tmp_path, monkeypatch):
    f = tmp_path / "mine.yaml"
    f.write_text("target: openvino\nprecision: FP16\nthreads: 2\n")
    p = load_profile(str(f))
    assert p["precision"] == "fp16" and p["threads"] == 2
    monkeypatch.setenv("PARTIALDEPLOY_PROFILES", str(tmp_path))
    assert load_profile("mine")["target"] == "openvino"
    (tmp_path / "openvino-cpu.yaml").write_text("target: openvino\nprecision: int8\n")
    assert load_profile("openvino-cpu")["precision"] == "int8"  # the user's directory wins


@pytest.mark.parametrize("text,msg", [
    ("target: openvino\nprecison: fp16\n", "unknown field 'precison'"),
    ("target: tensorflow\n", "field 'target' is 'tensorflow'"),
    ("precision: fp8\n", "field 'precision' is 'fp8'"),
    ("threads: two\n", "field 'threads' must be integer"),
    ("dynamic_batch: 1\n", "field 'dynamic_batch' must be boolean"),
    ("workspace_mb: true\n", "field 'workspace_mb' must be integer"),
    ("img_size: 100\n", "multiple of 32"),
    ("batch: {min: 8, opt: 1, max: 4}\n", "min <= opt <= max"),
    ("batch: {min: 1, opt: 2, max: 4, best: 3}\n", "unknown keys"),
    ("dynamic_batch: false\nbatch: {min: 1, opt: 2, max: 4}\n", "dynamic_batch is false"),
    ("tolerances: {int4: {top1_min: 0.9}}\n", "tolerances.int4"),
    ("tolerances: {int8: {top5_min: 0.9}}\n", "tolerances.int8.top5_min"),
    ("minimum_deployment_target: Android14\n", "minimum_deployment_target"),
    ("- a\n- b\n", "YAML mapping"),
    ("target: [openvino\n", "cannot read profile"),
])
def test_invalid_profiles_name_the_field(tmp_path, text, msg):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(UserError, match=msg):
        load_profile(f)


def test_unknown_name_lists_choices():
    with pytest.raises(UserError, match="onnxruntime-cpu"):
        load_profile("no-such-profile")
    with pytest.raises(UserError, match="does not exist"):
        load_profile("missing/dir/x.yaml")


def test_flags_override_profile():
    p = load_profile("openvino-cpu-int8")
    m = apply_overrides(p, precision="fp32", threads=None, img_size=128)
    assert m["precision"] == "fp32" and m["img_size"] == 128 and m["target"] == "openvino"


def test_export_request_from_profile_and_flags():
    """The CLI's request: profile values, explicit flags over them, the rest of the profile as target options."""
    from partialdeploy.exporting.request import ExportRequest

    r = ExportRequest.from_flags(profile="tensorrt-jetson-orin-fp16", precision=None, batch=None, img_size=None)
    assert r.targets == ("tensorrt",) and r.precision == "fp16" and r.dynamic_batch
    assert r.batch == r.options.batch_range["opt"] and r.options.runtime_option("workspace_mb") >= 1
    assert "target" not in r.options.runtime and "precision" not in r.options.runtime
    r = ExportRequest.from_flags(profile="tensorrt-jetson-orin-fp16", targets=("onnx",), precision="FP32", batch=3,
                                 fallback=False)
    assert r.targets == ("onnx",) and r.precision == "fp32" and r.batch == 3 and r.options.int8_fallback is False
    r = ExportRequest.from_flags(targets=(), precision=None, calib_count=None)
    assert r.targets == ("onnx",) and r.precision == "fp32" and r.batch == 1 and r.calib_count == 100
    with pytest.raises(UserError, match="outside 13-20"):
        ExportRequest.from_flags(opset=21)


def test_every_export_option_is_typed_and_settable_by_flag_or_profile(tmp_path):
    """Target options are one typed record (ExportOptions): the profile's fields under the flags; a
    runtime's own fields are kept as its backend declared them; bad values are one line."""
    from partialdeploy.exporting.options import ExportOptions
    from partialdeploy.exporting.request import ExportRequest

    prof = tmp_path / "p.yaml"
    prof.write_text("target: onnxruntime\nprecision: int8\nthreads: 2\nint8_exclude: [stages.0.blocks.0, head]\n"
                    "int8_max_float_blocks: 2\nort_calibration: entropy\ntune_budget: 0\n")
    o = ExportRequest.from_flags(profile=str(prof)).options
    assert (o.threads, o.int8_exclude, o.int8_max_float_blocks, o.tune_budget) == (2, ("stages.0.blocks.0", "head"),
                                                                                    2, 0.0)
    assert o.runtime_option("ort_calibration") == "entropy" and o.profile == "p" and o.int8_fallback
    o = ExportRequest.from_flags(profile=str(prof), int8_exclude="stages.1.blocks.0, head,", fallback=False,
                                 tune_budget=1.5).options
    assert o.int8_exclude == ("stages.1.blocks.0", "head") and not o.int8_fallback and o.tune_budget == 1.5
    for bad, words in (({"tune_budget": -1}, "--tune-budget"), ({"int8_max_float_blocks": -1}, "int8_max_float_blocks"),
                       ({"int8_exclude": [3]}, "block names"), ({"warp_drive": 1}, "unknown export option")):
        with pytest.raises(UserError, match=words):
            ExportOptions.from_fields(bad)
    prof.write_text("int8_exclude: 3\n")
    with pytest.raises(UserError, match="int8_exclude.*string or list"):
        ExportRequest.from_flags(profile=str(prof))
