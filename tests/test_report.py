"""Reports: schema, Markdown, self-contained HTML rendered in headless Chromium, compare (regression
gate, exit 1) and merge (several devices, one table)."""

import copy
import json
import re

import pytest

from conftest import run_cli
from partialdeploy.report import regression, schema
from partialdeploy.report.html import to_html
from partialdeploy.report.markdown import to_markdown
from partialdeploy.report.merge import merge
from partialdeploy.report.text import parse_threshold
from partialdeploy.errors import UserError, VerificationError
from partialdeploy.profiling.profiler import profile
from partialdeploy.profiling.settings import Settings
from profile_fixtures import shared_export_dir


@pytest.fixture(scope="module")
def prof(tmp_path_factory):
    dist = shared_export_dir(tmp_path_factory)
    out = tmp_path_factory.mktemp("rep") / "profile.json"
    profile(dist, Settings(batches=(1, 4), threads=1, runs=20, min_time_s=None, warmup=2, blocks=2, layer_runs=3),
            out_path=out)
    return out


def _fake(p50s: dict, device=None) -> dict:
    return {"schema": schema.SCHEMA, "device": device or "box", "model": {"name": "m"}, "settings": {},
            "environment": {},
            "results": [{"target": t, "precision": p, "batch": b, "mode": "latency", "status": "ok",
                         "latency_ms": {"p50": v, "p90": v, "p99": v, "mean": v, "std": 0, "min": v, "max": v},
                         "runs": 10} for (t, p, b), v in p50s.items()]}


def test_schema_is_checked(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"schema": "partialdeploy.manifest/1"}))
    with pytest.raises(UserError, match="expected 'partialdeploy.profile/1'"):
        schema.load(p)
    p.write_text(json.dumps({"schema": "partialdeploy.profile/9", "results": []}))
    with pytest.raises(UserError, match="upgrade"):
        schema.load(p)
    p.write_text("{nope")
    with pytest.raises(UserError, match="not a readable JSON"):
        schema.load(p)
    r = run_cli("report", p)
    assert r.returncode == 2 and r.stderr.startswith("error:") and "Traceback" not in r.stderr


def test_markdown(prof):
    md = to_markdown(schema.load(prof))
    assert md.startswith("# Latency report: TinyNet-test")
    assert "| target | precision | batch | p50 ms |" in md
    assert re.search(r"\| openvino \| fp32 \[f32\] \| 4 \| [\d.]+ \|", md)  # precision run, read back
    assert "not_run" in md and "NVIDIA GPU" in md and "macOS" in md and "skipped" in md
    assert "## Per-layer: onnx/fp32" in md and "stages.0.blocks.0" in md


def test_html_is_self_contained(prof):
    page = to_html(schema.load(prof))
    assert page.startswith("<!DOCTYPE html>") and page.count("<svg") >= 4
    assert "time per block: onnx/fp32" in page  # the blocks the model's family names, whichever family
    assert "<script" not in page.lower() and "<link" not in page.lower()
    urls = set(re.findall(r"(?:src|href)\s*=\s*[\"']([^\"']+)", page)) | set(re.findall(r"url\(", page))
    assert not urls, urls
    assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", page)  # only the SVG namespace


def test_html_renders_in_headless_chromium(prof, tmp_path):
    """A real browser renders the page: the DOM has the plots and the screenshot is not blank."""
    from browser import chromium, render_page

    chromium()  # skips (fails under CI) naming the package when it is missing
    html_path = tmp_path / "report.html"
    r = run_cli("report", prof, "--html", html_path, "--md", tmp_path / "report.md")
    assert r.returncode == 0, r.stderr
    dom, colors = render_page(html_path, tmp_path)  # text + coloured bars, not a blank page
    assert dom.count("<svg") >= 4 and "Batch scaling" in dom and 'class="bar"' in dom
    # the plot palette's blue is on screen (bars / boxes drawn)
    assert any(abs(c[1][0] - 0x1F) < 12 and abs(c[1][1] - 0x77) < 12 and abs(c[1][2] - 0xB4) < 12 for c in colors)


def test_compare_gate():
    base = _fake({("onnx", "fp32", 1): 10.0, ("openvino", "int8", 1): 5.0, ("openvino", "int8", 8): 20.0})
    same = _fake({("onnx", "fp32", 1): 10.5, ("openvino", "int8", 1): 4.0, ("openvino", "int8", 8): 21.0})
    cmp = regression.compare(base, same, 0.10)
    st = {(r["target"], r["batch"]): r["status"] for r in cmp["rows"]}
    assert st == {("onnx", 1): "ok", ("openvino", 1): "improved", ("openvino", 8): "ok"}
    regression.check(cmp)
    worse = _fake({("onnx", "fp32", 1): 11.5, ("openvino", "int8", 1): 5.0, ("openvino", "int8", 8): 20.0})
    cmp = regression.compare(base, worse, parse_threshold("10%"))
    assert cmp["regressions"] == 1 and {r["status"] for r in cmp["rows"]} == {"regression", "ok"}
    with pytest.raises(VerificationError, match=r"onnx/fp32 b1 p50 10.000 -> 11.500 ms \(\+15.0%\)"):
        regression.check(cmp)
    # nothing in common: every baseline case is missing, which fails the gate (exit 1), not bad input
    with pytest.raises(VerificationError, match="3 baseline case"):
        regression.check(regression.compare(base, _fake({("coreml", "fp16", 1): 1.0}), 0.1))
    assert parse_threshold("10%") == parse_threshold("0.1") == parse_threshold(10) == pytest.approx(0.1)
    with pytest.raises(UserError):
        parse_threshold("ten")


def test_cli_compare_exit_codes(tmp_path, prof):
    base = json.loads(prof.read_text())
    slow = copy.deepcopy(base)
    for r in slow["results"]:
        if r.get("latency_ms"):
            r["latency_ms"]["p50"] *= 1.5
    (tmp_path / "base.json").write_text(json.dumps(base))
    (tmp_path / "slow.json").write_text(json.dumps(slow))
    r = run_cli("report", "compare", tmp_path / "base.json", prof, "--max-regression", "10%")
    assert r.returncode == 0, r.stdout + r.stderr
    r = run_cli("report", "compare", tmp_path / "base.json", tmp_path / "slow.json", "--max-regression", "10%",
                "--md", tmp_path / "cmp.md")
    assert r.returncode == 1 and "regression" in r.stdout
    assert r.stderr.strip().startswith("error:") and "+50.0%" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert "| regression |" in (tmp_path / "cmp.md").read_text()
    r = run_cli("report", "compare", tmp_path / "base.json", tmp_path / "slow.json", "--max-regression", "60%")
    assert r.returncode == 0
    r = run_cli("report", "compare", tmp_path / "base.json", tmp_path / "slow.json", "--max-regression", "lots")
    assert r.returncode == 2


def test_merge_devices(tmp_path, prof):
    a = _fake({("tensorrt", "fp16", 1): 1.2}, device="orin")
    b = json.loads(prof.read_text())
    (tmp_path / "a.json").write_text(json.dumps(a))
    merged = merge([("a.json", a), ("b.json", b)])
    assert {r["device"] for r in merged["results"]} == {"orin", b["device"]}
    assert set(merged["environments"]) == {"orin", b["device"]} and merged["schema"] == schema.SCHEMA
    md = to_markdown(merged)
    assert "| device | target |" in md and "| orin | tensorrt | fp16 | 1 |" in md
    out = tmp_path / "merged.json"
    r = run_cli("report", "merge", tmp_path / "a.json", prof, "-o", out, "--name", "jetson", "--name", "nuc",
                "--html", tmp_path / "m.html")
    assert r.returncode == 0, r.stderr
    m = schema.load(out)
    assert {r["device"] for r in m["results"]} == {"jetson", "nuc"}
    assert "jetson" in (tmp_path / "m.html").read_text()
    # a merged report compares against itself per device
    regression.check(regression.compare(m, m, 0.1))


def test_github_actions_example_uses_real_commands():
    import yaml

    from conftest import ROOT

    wf = yaml.safe_load((ROOT / "examples/github-actions.yml").read_text())
    script = "\n".join(s.get("run", "") for s in wf["jobs"]["export-and-profile"]["steps"])
    for cmd in ("partialdeploy export", "partialdeploy profile dist/", "partialdeploy report dist/profile.json --html",
                "partialdeploy report compare", "--max-regression 10%"):
        assert cmd in script
    for sub in (["export", "--help"], ["profile", "--help"], ["report", "compare", "--help"],
                ["report", "merge", "--help"]):
        r = run_cli(*sub)
        assert r.returncode == 0, sub
    assert any("upload-artifact" in s.get("uses", "") for s in wf["jobs"]["export-and-profile"]["steps"])


def test_profile_table_prints_a_row_marked_ok_without_numbers():
    """A row that says ok but carries no latency (a partial remote report) is listed as a note, not a
    rich-markup crash, and its status text is shown as written."""
    from rich.console import Console

    from partialdeploy.cli.render import profile_table

    report = {"model": {"name": "m"}, "device": "d", "results": [
        {"target": "onnxruntime", "precision": "fp32", "batch": 1, "status": "ok", "reason": "cut short"},
        {"target": "openvino", "precision": "fp32", "batch": 1, "status": "[bold]odd", "reason": "x"}]}
    t, notes = profile_table(report)
    con = Console(record=True, width=200)
    con.print(t)
    for n in notes:
        con.print(n)
    text = con.export_text()
    assert "ok onnxruntime" in text and "cut short" in text
    assert "[bold]odd openvino" in text


def test_a_bad_cv_threshold_names_its_own_flag(tmp_path):
    """`profile --cv-threshold ten` blames --cv-threshold, not --max-regression (one line, exit 2)."""
    from conftest import run_cli

    r = run_cli("profile", tmp_path, "--cv-threshold", "ten")
    assert r.returncode == 2, r.stderr
    assert "--cv-threshold takes a percentage" in r.stderr and "--max-regression" not in r.stderr, r.stderr
