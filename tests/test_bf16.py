"""bf16 for the OpenVINO target: refused on a CPU without bf16 units (capability list faked, and the
real one when this CPU lacks them), and never certified unless the compiled model reads back bf16.
Where this CPU has bf16 units the real bf16 path is exercised: runtime config recorded, parity gate,
and ``profile`` reports the precision the runtime computed in."""

import pytest

pytest.importorskip("openvino")

from targets_common import export, make_ctx  # noqa: E402

from partialdeploy.errors import UserError  # noqa: E402
from partialdeploy.backends.openvino import runner as ovr  # noqa: E402
from partialdeploy.backends.openvino import target as ovt  # noqa: E402
from partialdeploy.backends import get_target  # noqa: E402

REAL_CAPS = ovt.cpu_capabilities()
HAS_BF16 = "BF16" in REAL_CAPS


def test_hint_name_normalizes_read_back_values():
    import openvino as ov

    assert ovr.hint_name(ov.Type.bf16) == "bf16" and ovr.hint_name(ov.Type.f32) == "f32"
    assert ovr.hint_name("bf16") == "bf16" and ovr.hint_name(ov.Type.f16) == "f16"


def test_refused_without_bf16_units(tmp_path, monkeypatch):
    monkeypatch.setattr(ovt, "cpu_capabilities", lambda: ["FP32", "INT8", "EXPORT_IMPORT"])
    assert get_target("openvino").check_precision("bf16") is not None
    assert get_target("openvino").check_precision("fp32") is None
    assert "no bf16 units" in get_target("openvino").refusal("bf16")  # the one check, at the request

    from partialdeploy.exporting.request import ExportRequest
    from partialdeploy.exporting.run import run_export

    out = tmp_path / "dist"
    with pytest.raises(UserError, match="no bf16 units"):  # before any work (no model built)
        run_export(ExportRequest(targets=("openvino",), precision="bf16", out_dir=out))
    assert not out.exists()


@pytest.mark.skipif(HAS_BF16, reason="this CPU has bf16 units: the CLI refusal needs one without")
def test_cli_refusal_on_this_cpu(tmp_path):
    from conftest import run_cli

    r = run_cli("export", "--target", "openvino", "--precision", "bf16", "-o", tmp_path / "d")
    assert r.returncode == 2
    assert "no bf16 units" in r.stderr and "Traceback" not in r.stderr
    assert len([ln for ln in r.stderr.splitlines() if ln.strip()]) == 1
    assert not (tmp_path / "d").exists()


@pytest.mark.skipif(HAS_BF16, reason="this CPU has bf16 units: OpenVINO would really compile in bf16")
def test_not_certified_when_runtime_computes_f32(tmp_path, monkeypatch):
    """Capability faked as present on a CPU without bf16: OpenVINO silently compiles in f32, the
    read-back catches it and the target refuses to call that artifact bf16."""
    monkeypatch.setattr(ovt, "cpu_capabilities", lambda: ["FP32", "INT8", "BF16"])
    with pytest.raises(UserError, match="in f32, not bf16: cannot certify bf16"):
        export("openvino", make_ctx("bf16"), tmp_path)


def test_not_certified_when_the_read_back_is_not_bf16(tmp_path, monkeypatch):
    """On every CPU (bf16 units or not): when the compiled model reports f32, the artifact is refused."""
    from partialdeploy.backends.openvino.runner import OpenVINORunner

    monkeypatch.setattr(ovt, "cpu_capabilities", lambda: ["FP32", "INT8", "BF16"])
    monkeypatch.setattr(OpenVINORunner, "compute_precision", lambda self: "f32")
    with pytest.raises(UserError, match="in f32, not bf16: cannot certify bf16"):
        export("openvino", make_ctx("bf16"), tmp_path)


@pytest.mark.skipif(not HAS_BF16, reason="this CPU has no bf16 units (no avx512_bf16/AMX): bf16 cannot run here")
def test_bf16_artifact_and_profile(tmp_path):
    from partialdeploy.exporting.request import ExportRequest
    from partialdeploy.exporting.run import run_export
    from partialdeploy.profiling.profiler import profile
    from partialdeploy.profiling.settings import Settings

    art = export("openvino", make_ctx("bf16", dynamic=False), tmp_path / "t")
    assert art.precision == "bf16" and art.extra["compute_precision"] == "bf16"
    assert art.extra["runtime_config"]["INFERENCE_PRECISION_HINT"] == "bf16"
    assert all(p.passed and p.cosine_min >= 0.998 and p.top1_agree >= 0.9 for p in art.parity)
    out = tmp_path / "dist"
    assert run_export(ExportRequest(targets=("openvino",), precision="bf16", out_dir=out)).exit_code == 0
    rep = profile(out, Settings(batches=(1,), threads=1, runs=5, min_time_s=None, warmup=1, blocks=1,
                                layer_runs=0))
    r = rep["results"][0]
    assert r["precision"] == "bf16" and r["compute_precision"] == "bf16"  # read back, compiled as recorded


def test_fp32_records_compute_precision(tmp_path):
    art = export("openvino", make_ctx("fp32"), tmp_path)
    assert art.extra["compute_precision"] == "f32" and art.extra["inference_precision_hint"] == "f32"


def test_bf16_tolerance_and_profile_precision():
    from partialdeploy import parity
    from partialdeploy.profiles import PRECISIONS

    t = parity.DEFAULT_TOLERANCES["bf16"]
    assert t.cosine_min and t.top1_min and "bf16" in PRECISIONS
