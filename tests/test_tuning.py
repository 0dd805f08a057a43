"""Measured selection at export (partialdeploy.exporting.tuning): every timing in the manifest, INT8 timed
against its fp32 sibling and never slower silently, the fastest form that passes the gate kept, a form
that misses it refused, and a bad budget refused before any work. Real OpenVINO / ONNX Runtime on the
demo model (small: a few seconds)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")

from partialdeploy.exporting import tuning  # noqa: E402
from partialdeploy.profiling import interleave  # noqa: E402
from partialdeploy.errors import UserError  # noqa: E402
from partialdeploy.exporting.options import ExportOptions  # noqa: E402
from partialdeploy.exporting.request import ExportRequest  # noqa: E402
from partialdeploy.exporting.run import run_export  # noqa: E402


@pytest.fixture(scope="module")
def int8_export(tmp_path_factory):
    out = tmp_path_factory.mktemp("tune") / "dist"
    res = run_export(ExportRequest(targets=("onnxruntime", "openvino"), precision="int8", out_dir=out,
                                   options=ExportOptions(tune_budget=3, threads=1)))
    assert res.exit_code == 0, res.failures
    return res, json.loads((out / "manifest.json").read_text())


def test_every_timing_is_in_the_manifest_and_int8_is_timed_against_fp32(int8_export):
    res, manifest = int8_export
    for entry in manifest["artifacts"]:
        tune = entry["extra"]["tuning"]
        assert tune["timed"] and tune["budget_s"] == 3 and tune["rounds"] >= interleave.MIN_ROUNDS
        lat = tune["latency_ms"]
        assert {"as exported", "fp32"} <= set(lat) and all(v > 0 for v in lat.values())
        assert tune["chosen"] in lat
        per_round = tune["rounds_ms"]  # the rounds that pair the forms, as timed
        assert set(per_round) == set(lat) and all(len(v) == tune["rounds"] for v in per_round.values())
        assert all(min(v) <= lat[k] <= max(v) for k, v in per_round.items())
        speed = entry["extra"]["int8_speed"]
        assert speed["int8_ms"] == pytest.approx(lat[tune["chosen"]], rel=1e-3)
        assert speed["fp32_ms"] == pytest.approx(lat["fp32"], rel=1e-3)
        assert speed["slower_than_fp32"] == (speed["ratio"] > tuning.SLOWER)
        said = [n for n in res.notes if n.startswith(f"{entry['target']} int8 is SLOWER")]
        assert bool(said) == speed["slower_than_fp32"]  # never silent, never cried wolf
        assert bool([n for n in entry["notes"] if "SLOWER" in n]) == speed["slower_than_fp32"]


def test_openvino_int8_offers_bf16_float_parts_only_with_bf16_units(int8_export):
    from partialdeploy.backends.openvino.target import bf16_error

    _, manifest = int8_export
    ov = next(e for e in manifest["artifacts"] if e["target"] == "openvino")
    tune = ov["extra"]["tuning"]
    offered = "float parts in bf16" in set(tune["latency_ms"]) | set(tune["skipped"])  # skipped: over budget
    assert offered == (bf16_error() is None)
    if tune["chosen"] == "float parts in bf16":  # kept: it passed the gate, and the runtime computes bf16
        assert tune["gated"]["float parts in bf16"] == "passed"
        assert ov["extra"]["compute_precision"] == "bf16"
        assert ov["extra"]["runtime_config"]["INFERENCE_PRECISION_HINT"] == "bf16"
        assert all(p["passed"] for p in ov["parity"])
    else:
        assert ov["extra"]["compute_precision"] == "f32"


def test_onnxruntime_int8_quantizes_the_arithmetic_and_offers_every_op_and_leaves_one_file(int8_export):
    """Q/DQ sits on the convolutions and matrix products (element-wise ops in float, GELU one op); the
    form with Q/DQ on every op ONNX Runtime knows is built and timed (or skipped over budget, said so);
    whichever is kept, the directory holds one model file, the one the manifest hashes."""
    import onnx

    from partialdeploy.backends.onnxruntime.target import PLACEMENT_DEFAULT, PLACEMENT_EVERY
    from partialdeploy.integrity import artifact_sha256

    res, manifest = int8_export
    ort = next(e for e in manifest["artifacts"] if e["target"] == "onnxruntime")
    tune = ort["extra"]["tuning"]
    assert PLACEMENT_EVERY in set(tune["latency_ms"]) | set(tune["skipped"])
    d = res.out_dir / "onnxruntime" / "int8"
    assert sorted(p.name for p in d.iterdir()) == ["model.onnx"]
    assert artifact_sha256(d / "model.onnx") == ort["sha256"]
    placement = ort["extra"]["qdq_placement"]
    assert placement == (PLACEMENT_EVERY if tune["chosen"] == PLACEMENT_EVERY else PLACEMENT_DEFAULT)
    assert ort["extra"]["deploy_form"]["gelu"] == "one Gelu op (opset 20)"  # the demo uses GELU
    m = onnx.load(str(d / "model.onnx"))
    ops = [n.op_type for n in m.graph.node]
    assert "Gelu" in ops and "Erf" not in ops
    if placement == PLACEMENT_DEFAULT:  # every Q/DQ pair is an input or the output of the arithmetic
        arith = {"Conv", "MatMul", "Gemm"}
        producer = {o: n for n in m.graph.node for o in n.output}
        users: dict = {}
        for n in m.graph.node:
            for i in n.input:
                users.setdefault(i, []).append(n)
        for q in (n for n in m.graph.node if n.op_type == "QuantizeLinear"):
            src = producer.get(q.input[0])
            feeds = {u.op_type for dq in users.get(q.output[0], []) for u in users.get(dq.output[0], [])}
            assert (src is not None and src.op_type in arith) or feeds & arith, (q.name, src and src.op_type, feeds)


def test_gelu_as_op_replaces_every_exported_gelu_exactly(tmp_path):
    """torch's five-node GELU at opset 17 becomes ONNX's Gelu (opset 20), named in its scope; ONNX
    Runtime computes the same outputs; a model without GELU is left alone (nothing written)."""
    import onnx
    import onnxruntime as ort
    import torch

    from partialdeploy.exporting.onnx_forms import gelu_as_op

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.c = (torch.nn.Conv2d(3, 4, 1), torch.nn.Conv2d(4, 4, 1),
                                      torch.nn.Conv2d(4, 2, 1))

        def forward(self, x):
            y = torch.nn.functional.gelu(self.a(x))
            y = torch.nn.functional.gelu(self.b(y)) + y.mean(dim=(2, 3), keepdim=True)  # a ReduceMean too
            return torch.relu(self.c(y))

    path = tmp_path / "g.onnx"
    torch.onnx.export(Net().eval(), (torch.zeros(1, 3, 8, 8),), str(path), dynamo=False, opset_version=17)
    assert gelu_as_op(path, tmp_path / "g20.onnx") == 2
    m = onnx.load(str(tmp_path / "g20.onnx"))
    assert m.opset_import[0].version == 20 and [n.op_type for n in m.graph.node].count("Gelu") == 2
    assert not {"Erf", "Div"} & {n.op_type for n in m.graph.node}
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    outs = []
    for p in (path, tmp_path / "g20.onnx"):
        s = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        outs.append(s.run(None, {s.get_inputs()[0].name: x})[0])
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-5, atol=1e-6)
    relu = tmp_path / "r.onnx"
    torch.onnx.export(torch.nn.Sequential(torch.nn.Conv2d(3, 2, 1), torch.nn.ReLU()), (torch.zeros(1, 3, 8, 8),),
                      str(relu), dynamo=False, opset_version=17)
    assert gelu_as_op(relu, tmp_path / "r20.onnx") == 0 and not (tmp_path / "r20.onnx").exists()


def test_a_faster_form_that_misses_the_gate_is_not_kept(int8_export):
    """A form that claims a precision the runtime does not compute in is refused by the gate; the
    artifact stays as exported (forced to be 'fastest' so it is gated)."""
    from partialdeploy.records import Artifact
    from partialdeploy.records import ParityResult
    from targets_common import make_ctx

    res, manifest = int8_export
    entry = next(e for e in manifest["artifacts"] if e["target"] == "openvino")
    art = Artifact("openvino", "int8", "model.xml", extra=dict(entry["extra"]),
                   parity=[ParityResult.from_dict(p) for p in entry["parity"]])
    before = (dict(art.extra), [p.to_dict() for p in art.parity])
    bad = tuning.Form("claims f16", {"compute_precision": "f16"})
    chosen, gated = tuning._choose(make_ctx("int8"), art, res.out_dir / "openvino" / "int8", [bad],
                                   {"as exported": 2.0, "claims f16": 1.0})
    assert chosen == "as exported" and gated["claims f16"].startswith("failed") and "f16" in gated["claims f16"]
    assert (art.extra, [p.to_dict() for p in art.parity]) == before


def test_a_lead_that_one_round_reverses_keeps_the_artifact_as_exported(int8_export):
    """Faster by the medians but not in every interleaved round: noise, not a lead — the form is not
    even gated, and the record says why."""
    from partialdeploy.records import Artifact
    from partialdeploy.records import ParityResult
    from targets_common import make_ctx

    res, manifest = int8_export
    entry = next(e for e in manifest["artifacts"] if e["target"] == "openvino")
    art = Artifact("openvino", "int8", "model.xml", extra=dict(entry["extra"]),
                   parity=[ParityResult.from_dict(p) for p in entry["parity"]])
    form = tuning.Form("claims f16", {"compute_precision": "f16"})
    per_round = {"as exported": [2.0, 2.0, 1.5], "claims f16": [1.8, 1.7, 1.9]}
    assert interleave.rounds_faster(per_round, "claims f16", "as exported") == (2, 3)
    chosen, gated = tuning._choose(make_ctx("int8"), art, res.out_dir / "openvino" / "int8", [form],
                                   {"as exported": 2.0, "claims f16": 1.8}, per_round)
    assert chosen == "as exported" and gated == {
        "claims f16": "not kept: faster in only 2 of 3 interleaved rounds (3 needed)"}


def test_a_form_must_win_the_rounds_a_coin_would_rarely_win():
    """The sign test: every round up to 5 rounds, then one loss allowed from 8 rounds on; and the
    timing stops as soon as more rounds could not change a verdict (or after 5 with nothing to decide)."""
    assert [interleave.wins_needed(n) for n in range(1, 10)] == [1, 2, 3, 4, 5, 6, 7, 7, 8]
    assert interleave.MAX_ROUNDS == 9 and interleave.wins_needed(interleave.MAX_ROUNDS) == 8
    base = [2.0] * 9
    won = {"as exported": base[:8], "fast": [1.0] * 8, "fp32": [3.0] * 8}  # 8 of 8: kept whatever comes
    assert interleave.settled(won)
    assert not interleave.settled({"as exported": base[:7], "fast": [1.0] * 7})  # 7 of 7: not yet
    lost = {"as exported": base[:3], "slow": [1.0, 3.0, 3.0]}  # 2 losses: 8 of 9 out of reach
    assert interleave.settled(lost)
    assert not interleave.settled({"as exported": base[:3], "slow": [1.0, 3.0, 1.0]})
    assert not interleave.settled({"as exported": base[:4], "fp32": base[:4]})
    assert interleave.settled({"as exported": base[:5], "fp32": base[:5]})
    calls = []
    ms, rounds, per_round = interleave.interleaved({"as exported": lambda: calls.append(1),
                                                    "fp32": lambda: None}, budget_s=60)
    assert rounds == interleave.REPORT_ROUNDS and len(per_round["fp32"]) == rounds


def test_int8_slower_than_fp32_is_said_everywhere():
    from partialdeploy.records import Artifact

    notes: list[str] = []
    art = Artifact("onnxruntime", "int8", "model.onnx")
    tuning._int8_speed(art, 6.0, 5.0, notes)
    assert art.extra["int8_speed"]["slower_than_fp32"] and art.extra["int8_speed"]["ratio"] == 1.2
    assert notes and "SLOWER" in notes[0] and "×1.20" in notes[0] and notes[0] in art.notes
    fast = Artifact("onnxruntime", "int8", "model.onnx")
    tuning._int8_speed(fast, 4.0, 5.0, notes)
    assert not fast.extra["int8_speed"]["slower_than_fp32"] and len(notes) == 1 and not fast.notes
    held = Artifact("openvino", "int8", "model.xml")  # how often fp32 won the paired rounds is said with it
    tuning._int8_speed(held, 6.0, 5.0, notes, (4, 5))
    assert held.extra["int8_speed"]["rounds_fp32_faster"] == "4/5"
    assert "slower in 4 of 5 interleaved rounds" in notes[-1]


def test_budget_zero_is_recorded_and_bad_budgets_are_refused_before_work(tmp_path):
    from partialdeploy.records import Artifact
    from targets_common import make_ctx

    ctx = make_ctx("int8")
    ctx.options = dataclasses.replace(ctx.options, tune_budget=0)
    art = Artifact("openvino", "int8", "model.xml")
    tuning.tune(ctx, art, tmp_path)
    assert art.extra["tuning"] == {"budget_s": 0, "timed": False, "why": "--tune-budget 0"}
    assert any("not measured" in n for n in art.notes)
    for bad in (-1, "soon", float("nan")):
        out = tmp_path / f"d{bad}"
        with pytest.raises(UserError, match="--tune-budget"):
            run_export(ExportRequest.from_flags(targets=("openvino",), precision="int8", out_dir=out,
                                                tune_budget=bad))
        assert not out.exists()


def test_merged_keeps_the_recorded_runtime_config():
    got = tuning.merged({"runtime_config": {"SNIPPETS_MODE": "DISABLE"}, "a": 1},
                        {"runtime_config": {"INFERENCE_PRECISION_HINT": "bf16"}, "a": 2})
    assert got == {"runtime_config": {"SNIPPETS_MODE": "DISABLE", "INFERENCE_PRECISION_HINT": "bf16"}, "a": 2}


def test_cli_refuses_a_negative_budget_in_one_line(tmp_path):
    from conftest import run_cli

    r = run_cli("export", "--target", "openvino", "--precision", "int8", "--tune-budget", "-1", "-o", tmp_path / "d")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--tune-budget" in lines[0]
    assert not (tmp_path / "d").exists()


def test_a_runtime_failing_while_timing_is_recorded_not_fatal(tmp_path, monkeypatch):
    from partialdeploy.records import Artifact
    from targets_common import make_ctx

    def boom(*a, **k):
        raise RuntimeError("device lost\nsecond line")

    monkeypatch.setattr(tuning, "tune", boom)
    art = Artifact("openvino", "int8", "model.xml")
    tuning.tune_or_record(make_ctx("int8", tune_budget=2), art, tmp_path)
    assert art.extra["tuning"] == {"budget_s": 2.0, "timed": False, "why": "RuntimeError: device lost"}
    assert any("not measured" in n and "device lost" in n for n in art.notes)


def test_int8_quantizes_one_qkv_projection_per_attention_block(int8_export):
    """Both INT8 quantizers work on the ONNX with the attention's q/k/v fused into one projection (the
    demo has attention blocks): no separate q/k/v MatMul is left in either artifact."""
    import onnx
    import openvino as ov

    res, manifest = int8_export
    for e in manifest["artifacts"]:
        assert e["extra"]["deploy_form"]["attention_projections"] == "fused qkv", e["target"]
    ir = ov.Core().read_model(str(res.out_dir / "openvino" / "int8" / "model.xml"))
    qdq = onnx.load(str(res.out_dir / "onnxruntime" / "int8" / "model.onnx"))
    for names in ([op.get_friendly_name() for op in ir.get_ops() if op.get_type_name() == "MatMul"],
                  [n.name for n in qdq.graph.node if n.op_type in ("MatMul", "Gemm")]):
        assert any("/mixing/fused_matmul_" in n for n in names)
        assert not [n for n in names if any(f"/mixing/{p}/" in n for p in "qkv")]


def test_openvino_int8_offers_the_other_nncf_preset_unless_the_user_chose_one(int8_export):
    from partialdeploy.backends.openvino.target import bf16_error, int8_forms

    _, manifest = int8_export
    tune = next(e for e in manifest["artifacts"] if e["target"] == "openvino")["extra"]["tuning"]
    assert "preset performance" in set(tune["latency_ms"]) | set(tune["skipped"])
    built = int8_forms(lambda preset: None, "mixed", cost_s=2.0)
    names = [f.name for f in built]
    assert "preset performance" in names and all(f.cost_s == 2.0 for f in built if f.build)
    assert ("preset performance, float parts in bf16" in names) == (bf16_error() is None)
    assert not [f for f in int8_forms(lambda preset: None, "mixed", user_preset=True) if f.build]


def test_a_built_form_that_does_not_fit_the_budget_is_skipped_and_said_so(tmp_path, monkeypatch):
    """The budget is checked against the form's expected build time before anything is built."""
    from partialdeploy.backends.target import Artifact
    from targets_common import make_ctx

    ctx = make_ctx("fp32", tune_budget=1)
    art = Artifact("onnxruntime", "fp32", "model.onnx", files=["model.onnx"])
    calls = []
    form = tuning.Form("slow to build", {}, build=lambda d: calls.append(d) or "x.onnx", cost_s=30.0)
    art.forms = [form]
    monkeypatch.setattr(tuning, "_choose", lambda *a: ("as exported", {}))
    monkeypatch.setattr(tuning, "_opener", lambda *a: (None, lambda extra, path=None: _Fake()))
    monkeypatch.setattr(tuning, "_feed", lambda ctx, r: {})
    tuning.tune(ctx, art, tmp_path)
    assert not calls
    assert art.extra["tuning"]["skipped"] == {"slow to build": "over budget (building it takes ≈30 s)"}


class _Fake:
    def infer(self, feed):
        return None

    def close(self):
        pass


def test_a_kept_form_brings_its_companion_files_and_a_shared_build_runs_once(tmp_path):
    from partialdeploy.backends.target import Artifact

    art = Artifact("openvino", "int8", "model.xml", files=["model.xml", "model.bin"])
    pairs = tuning.form_files(art, tmp_path, "model.performance.part.xml")
    assert [(a.name, b.name) for a, b in pairs] == [("model.performance.part.xml", "model.xml"),
                                                    ("model.performance.part.bin", "model.bin")]
    calls = []
    once = tuning.built_once(lambda d: calls.append(d) or "m.part.xml")
    assert not once.built
    assert once(tmp_path) == once(tmp_path) == "m.part.xml" and len(calls) == 1 and once.built


def test_a_second_form_of_a_build_already_made_is_not_skipped_for_its_cost(tmp_path, monkeypatch):
    from partialdeploy.backends.target import Artifact
    from targets_common import make_ctx

    art = Artifact("onnxruntime", "fp32", "model.onnx", files=["model.onnx"])
    once = tuning.built_once(lambda d: "x.onnx")
    once(tmp_path)
    art.forms = [tuning.Form("same files, other options", {}, build=once, cost_s=30.0)]
    monkeypatch.setattr(tuning, "_choose", lambda *a: ("as exported", {}))
    monkeypatch.setattr(tuning, "_opener", lambda *a: (None, lambda extra, path=None: _Fake()))
    monkeypatch.setattr(tuning, "_feed", lambda ctx, r: {})
    tuning.tune(make_ctx("fp32", tune_budget=1), art, tmp_path)
    assert art.extra["tuning"]["skipped"] == {} and "same files, other options" in art.extra["tuning"]["latency_ms"]
