"""Typed stage records (partialdeploy.records): one serializer each, old files still load, and a gate
that fails is reported as failed (never certified) by the one run-and-gate core."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from partialdeploy import parity
from partialdeploy.errors import UserError, VerificationError
from partialdeploy.records import Artifact, ParityResult

# an artifact entry as manifests written before per-file hashes and the command field had it
OLD_ENTRY = {"target": "onnx", "precision": "fp32", "path": "onnx/fp32/model.onnx", "sha256": "0" * 64,
             "size_bytes": 12, "inputs": [{"name": "input", "shape": [1, 3, 32, 32], "dtype": "float32"}],
             "outputs": [], "verified": "parity",
             "parity": [{"stage": "ONNX -> ONNX Runtime fp32 (4 parity images)", "n": 4, "max_abs": 1e-6,
                         "rel_max": 1e-7, "cosine_min": 1.0, "top1_agree": 1.0}]}


def test_parity_result_round_trip_plain_json():
    ref = np.random.default_rng(0).standard_normal((8, 10)).astype(np.float32)
    res = parity.gate(ref, ref + np.float32(1e-6), "stage x", "fp32")
    d = res.to_dict()
    json.dumps(d)  # plain JSON types only (no numpy scalars)
    assert all(not isinstance(v, np.generic) for v in d.values())
    back = ParityResult.from_dict(json.loads(json.dumps(d)))
    assert back == ParityResult.from_dict(d) and back.to_dict() == d and back.passed
    assert back.tolerance == {"rel_max": 1e-4, "cosine_min": 0.99999, "top1_min": 1.0}


@pytest.mark.parametrize("bad", [None, [], {"n": 1}, {"stage": "s", "n": "4", "max_abs": 0, "rel_max": 0,
                                                      "cosine_min": 1, "top1_agree": 1},
                                 {"stage": "s", "n": 4, "max_abs": "x", "rel_max": 0, "cosine_min": 1,
                                  "top1_agree": 1}])
def test_parity_result_from_damaged_dict_is_refused(bad):
    with pytest.raises(ValueError):
        ParityResult.from_dict(bad)


def test_manifest_entry_round_trip_and_old_format():
    e = Artifact.from_dict(OLD_ENTRY)
    assert isinstance(e.parity[0], ParityResult) and e.parity[0].passed and e.files_sha256 is None
    assert e.files == [] and e.command is None and e.extra == {}
    d = e.to_dict()
    assert {k: d[k] for k in OLD_ENTRY if k != "parity"} == {k: v for k, v in OLD_ENTRY.items() if k != "parity"}
    assert Artifact.from_dict(json.loads(json.dumps(d))) == e
    new = Artifact(target="openvino", precision="int8", path="openvino/int8/model.xml",
                        files=["openvino/int8/model.xml"], sha256="1" * 64, files_sha256={"a": "1" * 64},
                        parity=[ParityResult("s", 2, 0.1, 0.01, 0.99, 1.0, acc_ref=1.0, acc=1.0)],
                        extra={"runtime_config": {"SNIPPETS_MODE": "DISABLE"}}, command="partialdeploy export")
    assert Artifact.from_dict(json.loads(json.dumps(new.to_dict()))) == new


def test_manifest_entry_keeps_unknown_keys_and_integrity_fields_as_read():
    e = Artifact.from_dict({**OLD_ENTRY, "future_field": {"x": 1}, "files_sha256": "damaged"})
    assert e.to_dict()["future_field"] == {"x": 1}
    assert e.files_sha256 == "damaged"  # judged by verify, never replaced by a default here


def test_damaged_parity_in_a_manifest_is_refused(tmp_path):
    from partialdeploy.integrity import load_manifest

    m = {"schema": "partialdeploy.manifest/1", "artifacts": [{**OLD_ENTRY, "parity": [{"stage": 3}]}]}
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="damaged"):
        load_manifest(tmp_path / "manifest.json")
    m["artifacts"][0]["parity"] = OLD_ENTRY["parity"]
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    assert load_manifest(tmp_path / "manifest.json")["artifacts"][0]["parity"] == OLD_ENTRY["parity"]


def _ctx(n=16, with_eval=True):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, 3, 4, 4)).astype(np.float32)
    w = rng.standard_normal((48, 10)).astype(np.float32)

    def fn(v):
        return v.reshape(len(v), -1) @ w
    ref = fn(x)
    return SimpleNamespace(precision="int8", tolerances={}, parity_inputs=x, reference=ref,
                           eval_images=x if with_eval else None, eval_reference=ref if with_eval else None,
                           eval_labels=ref.argmax(1) if with_eval else None), fn


def test_one_gate_core_reports_and_raises_alike():
    """gate_results (never raises) and parity_gates (raises) are one function: the same numbers;
    a failing gate is reported as failed and raised, never certified."""
    from partialdeploy.verification import gate_results, parity_gates

    ctx, fn = _ctx()
    good = gate_results(ctx, fn, "s")
    assert [r.passed for r in good] == [True, True] and "held-out" in good[1].stage
    assert [r.to_dict() for r in parity_gates(ctx, fn, "s")] == [r.to_dict() for r in good]

    def broken(v):  # a damaged model: the classes permuted
        return fn(v)[:, ::-1]
    bad = gate_results(ctx, broken, "s")
    assert not any(r.passed for r in bad) and "top-1 agreement" in bad[0].reason
    with pytest.raises(VerificationError, match="parity gate 's \\(16 parity images\\)' failed"):
        parity_gates(ctx, broken, "s")


def test_int8_fallback_gates_through_the_core():
    """The INT8 fallback loop uses the same core: a damaged quantization fails with its numbers."""
    from partialdeploy.exporting.options import ExportOptions
    from partialdeploy.exporting.int8fallback import Quantizer, quantize_until_gate

    ctx, fn = _ctx()
    ctx.options = ExportOptions()
    quantizer = Quantizer(name="fake", quantize=lambda floats: "q", logits=lambda h: (lambda v: -fn(v)),
                          boundaries=lambda h: (lambda v: {}), reference=lambda v: {})
    with pytest.raises(VerificationError, match="INT8 gate"):
        quantize_until_gate(ctx, quantizer, "fake int8", enabled=False)
    ok = Quantizer(name="fake", quantize=lambda floats: "q", logits=lambda h: fn,
                   boundaries=lambda h: (lambda v: {}), reference=lambda v: {})
    res = quantize_until_gate(ctx, ok, "fake int8")
    assert isinstance(res.attempts[0].results[0], ParityResult) and res.to_dict()["after"]["passed"]


def _prep_of(path):
    """What diff reads from a model file: its metadata, through its runtime's runner."""
    from partialdeploy.analysis.sides import prep_from_metadata
    from partialdeploy.backends import get, runtime_for_path

    with get(runtime_for_path(path)).runner_class()(path) as r:
        return prep_from_metadata(r.model_metadata(), path.name)


def test_onnx_metadata_architecture_reads_back(tmp_path):
    """The export writes the architecture as ArchSpec.to_json(); diff reads it back with from_json
    through the runner, from the ONNX and from the OpenVINO IR converted from it (and still reads the
    separate keys of an ONNX without it)."""
    onnx = pytest.importorskip("onnx")
    ov = pytest.importorskip("openvino")
    from onnx import TensorProto, helper

    from partialdeploy.families import variant_spec
    from partialdeploy.spec import ArchSpec

    spec = variant_spec("partialnet", "t0").replace(img_size=64, mean=(0.5, 0.5, 0.5), labels=("a", "b"))
    assert ArchSpec.from_json(spec.to_json()) == spec
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])  # ONNX Runtime loads it
    helper.set_model_props(m, {"architecture": spec.to_json()})
    onnx.save(m, tmp_path / "a.onnx")
    ov.save_model(ov.convert_model(str(tmp_path / "a.onnx")), str(tmp_path / "a.xml"))
    for f in ("a.onnx", "a.xml"):
        p = _prep_of(tmp_path / f)
        assert (p.size, p.mean, p.labels, p.crop_ratio) == (64, (0.5, 0.5, 0.5), ["a", "b"], spec.crop_ratio)
        assert p.source == f"{f} metadata"
    old = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)])
    helper.set_model_props(old, {"img_size": "96", "mean": "[0.1, 0.2, 0.3]", "std": "[1, 1, 1]"})
    onnx.save(old, tmp_path / "b.onnx")
    p = _prep_of(tmp_path / "b.onnx")
    assert (p.size, p.mean, p.std) == (96, (0.1, 0.2, 0.3), (1, 1, 1))


def test_bundle_spec_writes_the_bundle(tmp_path):
    """write_bundle takes one BundleSpec (built by the TensorRT target from the export context)."""
    from partialdeploy.backends.tensorrt.bundle import BundleImages, BundleSpec, write_bundle

    (tmp_path / "src.onnx").write_bytes(b"onnx bytes")
    out = tmp_path / "b"
    out.mkdir()
    x = np.zeros((2, 3, 32, 32), np.float32)
    ctx = SimpleNamespace(parity_inputs=x, reference=np.ones((2, 10), np.float32), calib=None, calib_source=None,
                          eval_images=x, eval_labels=np.zeros(2, np.int64), eval_reference=np.ones((2, 10)))
    spec = BundleSpec(onnx_path=tmp_path / "src.onnx", precision="int8", images=BundleImages.of(ctx),
                      chw=[3, 32, 32], batch={"min": 1, "opt": 2, "max": 2}, workspace_mb=256, model_name="m",
                      generation=11, profile="p")
    b = write_bundle(out, spec)
    assert (out / "model.onnx").read_bytes() == b"onnx bytes"
    assert set(b["files"]) == {p.name for p in out.iterdir()} >= {"eval_images.npy", "eval_labels.npy"}
    assert b["input"] == {"name": "input", "shape": [2, 3, 32, 32], "dtype": "float32", "layout": "NCHW"}
    assert b["trtexec"]["10"] == b["trtexec"]["11"][:3] + ["--stronglyTyped"] + b["trtexec"]["11"][3:]
    assert "--memPoolSize=workspace:256M" in b["trtexec"]["11"] and b["tensorrt"]["expected"] == 11
    assert json.loads((out / "bundle.json").read_text())["trtexec_line"] == b["trtexec_line"]


def test_runtime_versions_come_from_the_backends():
    """The environment fingerprint lists each backend's declared distributions (no separate list)."""
    from partialdeploy import backends
    from partialdeploy.profiling.envinfo import runtime_versions

    dists = backends.distributions()
    assert dists["onnxruntime-gpu"] == "onnxruntime" and dists["cuda-python"] == "cuda-python"
    for b in backends.all_backends():
        dist = getattr(b.runner_class(), "dist", None)
        assert dist is None or dist in b.dists, b.name  # the runner's version source is declared
    got = runtime_versions()
    assert {"onnxruntime", "openvino", "numpy"} <= set(got)
    backends.register(backends.Backend(name="fakedist", runner="x:Y", dists=("pytest",)))
    try:
        assert "pytest" in runtime_versions()
    finally:
        backends.unregister("fakedist")


OLD_ROW = {"target": "onnx", "runtime": "onnxruntime", "precision": "fp32", "artifact": "onnx/fp32/model.onnx",
           "mode": "latency", "threads": None, "sha256": "0" * 64, "runtime_version": "1.20", "batch": 1,
           "status": "ok", "load_time_s": 0.1, "first_inference_ms": 3.0, "input_shapes": {"input": [1, 3, 32, 32]},
           "memory": {"peak_rss_mb": 300.0, "rss_before_load_mb": 200.0, "scope": "artifact"},
           "latency_ms": {"p50": 1.0, "p90": 1.2, "p99": 1.5, "mean": 1.05, "std": 0.1, "min": 0.9, "max": 1.6},
           "cv": 0.1, "runs": 100, "timed_s": 0.1, "throughput_ips": 950.0, "blocks": 3,
           "block_p50_ms": [1.0, 1.0, 1.0], "median_of_block_medians_ms": 1.0, "warnings": [],
           "samples_ms": [1.0, 1.1]}


def test_profile_result_round_trip_and_old_rows():
    from partialdeploy.records import ProfileResult

    r = ProfileResult.from_dict(OLD_ROW)
    assert r.measured and r.label() == "onnx/fp32" and r.latency_ms["p50"] == 1.0
    assert r.to_dict() == OLD_ROW and ProfileResult.from_dict(json.loads(json.dumps(r.to_dict()))) == r
    skipped = {"target": "tensorrt", "runtime": "tensorrt", "precision": "fp16", "artifact": "t", "mode": "latency",
               "threads": 2, "batch": 8, "status": "not_run", "reason": "no GPU", "future": [1]}
    s = ProfileResult.from_dict(skipped)
    assert not s.measured and s.to_dict() == skipped  # absent stays absent, unknown keys kept
    for bad in ({**OLD_ROW, "batch": "1; rm"}, {**OLD_ROW, "latency_ms": {"p50": "fast"}}, [],
                {**OLD_ROW, "samples_ms": [float("nan")]}):
        with pytest.raises(ValueError):
            ProfileResult.from_dict(bad)


def test_report_reads_results_through_profile_result():
    """compare and the renderers take their numbers from ProfileResult rows."""
    from partialdeploy.report import regression, schema
    from partialdeploy.report.html import to_html
    from partialdeploy.report.markdown import to_markdown
    from partialdeploy.report.merge import merge

    base = {"schema": schema.SCHEMA, "results": [OLD_ROW, {**OLD_ROW, "batch": 8, "status": "skipped",
                                                        "latency_ms": None, "reason": "static batch"}]}
    new = json.loads(json.dumps(base))
    new["results"][0]["latency_ms"]["p50"] = 1.5
    schema.validate(new)
    cmp = regression.compare(base, new, 0.1)
    assert cmp["regressions"] == 1 and cmp["rows"][0]["change"] == pytest.approx(0.5)
    md = to_markdown(base)
    assert "| onnx | fp32 | 1 | 1.00 |" in md and "batch 8: **skipped** — static batch" in md
    merged = merge([("a", base), ("b", new)], ["A", "B"])
    assert [r["device"] for r in merged["results"]] == ["A", "A", "B", "B"]
    assert "<svg" in to_html(merged)
