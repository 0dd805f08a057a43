"""`partialdeploy plan`: constraints, Pareto set, recommendation, exclusions and exit codes on synthetic
exports and reports (real files and sha256s, numbers set by the test), and the HTML page in a browser."""

import json
import math

import pytest

from conftest import run_cli
from partialdeploy.errors import UserError
from partialdeploy.planner import Constraints, make_plan
from partialdeploy.planner.candidates import Candidate
from partialdeploy.planner.constraints import parse_accuracy, parse_budget, parse_bytes, parse_memory, parse_points
from partialdeploy.planner.decide import pareto_front
from plan_fixtures import make_export, row, three_variants, write_report


def test_constraint_text():
    assert parse_budget("5ms") == parse_budget("5 ms") == parse_budget("5000us")
    assert parse_budget("0.5s").value == 500 and parse_budget("200img/s").kind == "throughput"
    assert parse_bytes("2MB", "--max-size") == 2_000_000 and parse_bytes("1MiB", "--max-size") == 1 << 20
    assert parse_accuracy("98%") == parse_accuracy("98") == parse_accuracy("0.98")
    assert parse_points("0.5pt", "--max-drop") == 0.5 and parse_memory("1.5GB") == 1536
    for bad in ("5", "fast", "-3ms", "nanms", "0img/s"):
        with pytest.raises(UserError, match="--budget"):
            parse_budget(bad)
    with pytest.raises(UserError, match="--percentile"):
        Constraints(percentile="p95")
    with pytest.raises(UserError, match="--objective"):
        Constraints(objective="cheapest")


def _c(label, lat, acc, kind="accuracy"):
    return Candidate("dev", "t", label, 1, variant="v", latency_ms={"p90": lat}, accuracy=acc,
                     accuracy_kind=kind if acc is not None else None)


def test_pareto_ties_and_missing_accuracy():
    a, b, b2, c, d, e = (_c("a", 1.0, 0.90), _c("b", 2.0, 0.95), _c("b2", 2.0, 0.95), _c("c", 2.0, 0.93),
                         _c("d", 3.0, 0.95), _c("e", 0.5, None))
    front = pareto_front([a, b, b2, c, d, e], "p90")
    assert [x.precision for x in front] == ["a", "b", "b2"]  # equal points both kept; c, d dominated; e not placed


def test_recommendation_per_device(tmp_path):
    reps = three_variants(tmp_path)
    p = make_plan(list(reps.values()), Constraints.from_flags(budget="5ms", max_drop="0.5"))
    assert p.exit_code == 0 and [d.device for d in p.devices] == ["box", "board"]
    box, board = p.devices
    assert box.recommended.label == "wide onnxruntime/fp32 b1"
    # wide int8 and base fp32 tie at 99.0 %: the faster one is the runner-up, and the reason says so
    assert box.runner_up.label == "wide openvino/int8 b1"
    assert "ahead of base onnxruntime/fp32 b1, which ties on accuracy, on latency" in box.reason
    assert [c.label for c in box.pareto] == ["narrow openvino/int8 b1", "base openvino/int8 b1",
                                             "wide openvino/int8 b1", "wide onnxruntime/fp32 b1"]
    assert board.recommended.label == "base openvino/int8 b1" and board.runner_up.label == "narrow onnxruntime/fp32 b1"
    assert "98.80%" in board.reason and "p90 4.8 ms" in board.reason
    assert "points below the most accurate" in board.reason
    miss = {c.label: c.misses for c in p.candidates if c.device == "board"}
    assert miss["wide onnxruntime/fp32 b1"] == ["p90 16.8 ms > 5 ms budget"]
    assert all(c.manifest and c.checkpoint_sha256 and c.params for c in p.candidates)
    # objective latency: the fastest that keeps the drop; size: the smallest
    fast = make_plan(list(reps.values()), Constraints.from_flags(budget="5ms", objective="latency", device="BOX"))
    assert fast.devices[0].recommended.label == "narrow openvino/int8 b1"
    small = make_plan(list(reps.values()), Constraints.from_flags(min_accuracy="99%", objective="size", device="box"))
    assert small.devices[0].recommended.label == "wide openvino/int8 b1"
    rate = make_plan(list(reps.values()), Constraints.from_flags(budget="1500img/s", device="box"))
    assert rate.devices[0].recommended.label == "narrow openvino/int8 b1" and rate.devices[0].runner_up is None
    assert {c.label: c.misses for c in rate.candidates}["base openvino/int8 b1"] == ["1000 img/s < 1500 img/s budget"]


def test_exclusions_non_finite_changed_and_reexported(tmp_path):
    m = make_export(tmp_path / "e", "net", [{"target": "onnxruntime", "precision": "fp32", "acc": 0.99},
                                            {"target": "openvino", "precision": "fp32", "acc": 0.99},
                                            {"target": "tensorrt", "precision": "fp16", "agree": 0.98}])
    ort, ov, trt = m["artifacts"]
    stale = dict(ov, sha256="ab" * 32)
    rows = [row(ort, 1, 1.0), row(ort, 4, float("nan")), row(stale, 1, 2.0), row(trt, 1, 0, status="not_run"),
            row(ort, 8, 2.0, ips=float("inf"))]
    rep = write_report(tmp_path / "e" / "profile.json", "box", rows)
    (tmp_path / "e" / ov["path"]).write_bytes(b"changed")  # not measured by any row: must not matter
    cands = make_plan([rep], Constraints()).candidates
    why = {(c.target, c.batch): c.reason or "" for c in cands}
    assert "not finite" in why[("onnxruntime", 4)] and "not finite" in why[("onnxruntime", 8)]
    assert "re-profile" in why[("openvino", 1)] and "not measured: not_run" in why[("tensorrt", 1)]
    assert why[("onnxruntime", 1)] == ""
    (tmp_path / "e" / ort["path"]).write_bytes(b"tampered")
    p = make_plan([rep], Constraints())
    assert "changed after export" in p.candidates[0].reason and p.exit_code == 1
    assert "all 5 row(s) were excluded" in p.devices[0].reason


def test_agreement_when_accuracy_not_measured(tmp_path):
    m = make_export(tmp_path / "e", "net", [{"target": "onnxruntime", "precision": "fp16", "agree": 0.995}])
    rep = write_report(tmp_path / "e" / "profile.json", "box", [row(m["artifacts"][0], 1, 1.0)])
    c = make_plan([rep], Constraints.from_flags(max_drop="1")).candidates[0]
    assert c.accuracy_kind == "agreement" and math.isclose(c.drop_points, 0.5) and c.status == "fits"
    c = make_plan([rep], Constraints.from_flags(min_accuracy="90")).candidates[0]
    assert c.misses == ["accuracy not measured on a labelled set"]


def test_cli_exit_codes_and_outputs(tmp_path):
    reps = three_variants(tmp_path)
    args = [*reps.values()]
    r = run_cli("plan", *args, "--budget", "5ms", "--max-drop", "0.5", "--json", "--md", tmp_path / "p.md")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["exit_code"] == 0 and len(data["candidates"]) == 12
    rec = next(c for c in data["candidates"] if c["role"] == "recommended" and c["device"] == "board")
    assert rec["lineage"]["manifest"].endswith("base/manifest.json") and rec["lineage"]["profile"].endswith(
        "base-board/profile.json") and rec["lineage"]["checkpoint_sha256"] and rec["accuracy_kind"] == "accuracy"
    md = (tmp_path / "p.md").read_text()
    assert "| board | base | openvino | int8 | 1 |" in md and "★ recommended ◆" in md
    r = run_cli("plan", *args, "--budget", "1ms", "--device", "board")
    assert r.returncode == 1 and "nothing meets p90 ≤ 1 ms on board" in r.stderr
    assert "closest is narrow openvino/int8 b1" in r.stderr and "p90 2.4 ms > 1 ms budget" in r.stderr
    for bad, msg in ((["--device", "orin"], "the reports have device(s) board, box"), (["--device", "b"], "several"),
                     (["--batch", "4"], "batch(es) 1"),
                     (["--budget", "5"], "--budget takes"), (["--max-size", "big"], "--max-size")):
        r = run_cli("plan", *args, *bad)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr, (bad, r.stderr)
    (tmp_path / "junk.json").write_text("{nope")
    for bad in (tmp_path / "missing.json", tmp_path / "junk.json", tmp_path / "narrow" / "manifest.json"):
        r = run_cli("plan", bad)
        assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1


def test_html_is_self_contained_and_renders(tmp_path):
    import re

    from browser import render_page
    from partialdeploy.planner import write_outputs

    reps = three_variants(tmp_path)
    p = make_plan(list(reps.values()), Constraints.from_flags(budget="5ms", max_drop="0.5"))
    page_path = write_outputs(p, html_path=tmp_path / "plan.html")[0]
    page = page_path.read_text()
    assert page.count("<svg") == 2 and "<script" not in page.lower() and "<link" not in page.lower()
    assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", page)
    assert page.count('class="budget"') == 2 and page.count('class="front"') == 2
    dom, colors = render_page(page_path, tmp_path)
    assert dom.count('class="point recommended"') == 2 and dom.count("<circle") == 10
    # the budget line's red and the recommendation's blue are on screen
    def near(c, rgb):
        return all(abs(c[1][i] - rgb[i]) < 16 for i in range(3))
    assert any(near(c, (0xD6, 0x27, 0x28)) for c in colors) and any(near(c, (0x1F, 0x77, 0xB4)) for c in colors)


def test_merged_report_and_hostile_names(tmp_path):
    """A `report merge` of two devices, saved away from the exports: the manifests are found through the
    reports it was merged from; device and model names from the files are escaped in every output."""
    from partialdeploy.report import schema
    from partialdeploy.report.merge import merge, save
    from partialdeploy.planner import render, write_outputs

    evil = "<img src=x onerror=alert(1)>|`"
    m = make_export(tmp_path / "e", "net", [{"target": "onnxruntime", "precision": "fp32", "acc": 0.99},
                                            {"target": "openvino", "precision": "int8", "acc": 0.985,
                                             "acc_ref": 0.99}])
    a = write_report(tmp_path / "e" / "profile.json", evil, [row(e, 1, 1.0) for e in m["artifacts"]])
    b = write_report(tmp_path / "board" / "profile.json", "board", [row(e, 1, 3.0) for e in m["artifacts"]],
                     source=str(tmp_path / "e"))
    merged = save(merge([(str(a), schema.load(a)), (str(b), schema.load(b))]), tmp_path / "elsewhere" / "all.json")
    p = make_plan([merged], Constraints.from_flags(budget="2ms"))
    assert [d.device for d in p.devices] == [evil, "board"] and p.exit_code == 1
    assert all(c.status != "excluded" for c in p.candidates)
    assert "closest is net onnxruntime/fp32 b1" in p.verdict()  # misses as much as int8, more accurate
    out = write_outputs(p, md_path=tmp_path / "p.md", html_path=tmp_path / "p.html")
    for f in out:
        assert "<img" not in f.read_text()
    assert "&lt;img" in render.to_markdown(p) and "\\|" in render.to_markdown(p)


def test_planning_from_reports_imports_no_heavy_runtime(tmp_path):
    """Planning reads what was measured: no torch, no runtime, not even numpy (a device-side Python
    with the reports can plan)."""
    import subprocess
    import sys

    reps = three_variants(tmp_path)
    code = ("import sys; from partialdeploy.planner import Constraints, make_plan, write_outputs; "
            f"p = make_plan({[str(r) for r in reps.values()]!r}, Constraints.from_flags(budget='5ms')); "
            f"write_outputs(p, md_path={str(tmp_path / 'p.md')!r}, html_path={str(tmp_path / 'p.html')!r}); "
            "print([m for m in ('torch', 'onnxruntime', 'openvino', 'onnx', 'numpy') if m in sys.modules])")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stderr[-500:]
