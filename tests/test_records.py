"""Typed stage records (partialdeploy.records): one serializer each, old files still load, and a gate
that fails is reported as failed (never certified) by the one run-and-gate core."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from partialdeploy import parity
from partialdeploy.errors import UserError, VerificationError
from partialdeploy.records import ManifestEntry, ParityResult

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
    e = ManifestEntry.from_dict(OLD_ENTRY)
    assert isinstance(e.parity[0], ParityResult) and e.parity[0].passed and e.files_sha256 is None
    assert e.files == [] and e.command is None and e.extra == {}
    d = e.to_dict()
    assert {k: d[k] for k in OLD_ENTRY if k != "parity"} == {k: v for k, v in OLD_ENTRY.items() if k != "parity"}
    assert ManifestEntry.from_dict(json.loads(json.dumps(d))) == e
    new = ManifestEntry(target="openvino", precision="int8", path="openvino/int8/model.xml",
                        files=["openvino/int8/model.xml"], sha256="1" * 64, files_sha256={"a": "1" * 64},
                        parity=[ParityResult("s", 2, 0.1, 0.01, 0.99, 1.0, acc_ref=1.0, acc=1.0)],
                        extra={"runtime_config": {"SNIPPETS_MODE": "DISABLE"}}, command="partialdeploy export")
    assert ManifestEntry.from_dict(json.loads(json.dumps(new.to_dict()))) == new


def test_manifest_entry_keeps_unknown_keys_and_integrity_fields_as_read():
    e = ManifestEntry.from_dict({**OLD_ENTRY, "future_field": {"x": 1}, "files_sha256": "damaged"})
    assert e.to_dict()["future_field"] == {"x": 1}
    assert e.files_sha256 == "damaged"  # judged by verify, never replaced by a default here


def test_damaged_parity_in_a_manifest_is_refused(tmp_path):
    from partialdeploy.verify import load_manifest

    m = {"schema": "partialdeploy.manifest/1", "artifacts": [{**OLD_ENTRY, "parity": [{"stage": 3}]}]}
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="damaged"):
        load_manifest(tmp_path / "manifest.json")
    m["artifacts"][0]["parity"] = OLD_ENTRY["parity"]
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    assert load_manifest(tmp_path / "manifest.json")["artifacts"][0]["parity"] == OLD_ENTRY["parity"]


def _ctx(n=8, with_eval=True):
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
    with pytest.raises(VerificationError, match="parity gate 's \\(8 parity images\\)' failed"):
        parity_gates(ctx, broken, "s")


def test_int8_fallback_gates_through_the_core():
    """The INT8 fallback loop uses the same core: a damaged quantization fails with its numbers."""
    from partialdeploy.int8fallback import Backend, quantize_until_gate

    ctx, fn = _ctx()
    ctx.options = {}
    backend = Backend(name="fake", quantize=lambda floats: "q", logits=lambda h: (lambda v: -fn(v)),
                      boundaries=lambda h: (lambda v: {}), reference=lambda v: {})
    with pytest.raises(VerificationError, match="INT8 gate"):
        quantize_until_gate(ctx, backend, "fake int8", enabled=False)
    ok = Backend(name="fake", quantize=lambda floats: "q", logits=lambda h: fn,
                 boundaries=lambda h: (lambda v: {}), reference=lambda v: {})
    res = quantize_until_gate(ctx, ok, "fake int8")
    assert isinstance(res.attempts[0].results[0], ParityResult) and res.to_dict()["after"]["passed"]


def test_onnx_metadata_architecture_reads_back(tmp_path):
    """The export writes the architecture as ArchSpec.to_json(); diff reads it back with from_json
    (and still reads the separate keys of an ONNX without it)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from partialdeploy.diff import _prep_from_onnx
    from partialdeploy.spec import ArchSpec, variant_spec

    spec = variant_spec("partialnet", "t0").replace(img_size=64, mean=(0.5, 0.5, 0.5), labels=("a", "b"))
    assert ArchSpec.from_json(spec.to_json()) == spec
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(graph)
    helper.set_model_props(m, {"architecture": spec.to_json()})
    onnx.save(m, tmp_path / "a.onnx")
    p = _prep_from_onnx(tmp_path / "a.onnx")
    assert (p.size, p.mean, p.labels, p.crop_ratio) == (64, (0.5, 0.5, 0.5), ["a", "b"], spec.crop_ratio)
    old = helper.make_model(graph)
    helper.set_model_props(old, {"img_size": "96", "mean": "[0.1, 0.2, 0.3]", "std": "[1, 1, 1]"})
    onnx.save(old, tmp_path / "b.onnx")
    p = _prep_from_onnx(tmp_path / "b.onnx")
    assert (p.size, p.mean, p.std) == (96, (0.1, 0.2, 0.3), (1, 1, 1))
