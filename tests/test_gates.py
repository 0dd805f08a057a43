"""Gates fail closed: `report compare` on missing cases, empty reports, bad numbers, other models or
shapes; `profile` that measured nothing keeps the existing report and is not a success; two profile
runs on one report are refused; an export never takes over a folder that is not its own."""

import copy
import json
import shutil

import pytest
from typer.testing import CliRunner

from partialdeploy.report import regression
from partialdeploy.report import schema
from partialdeploy.errors import UserError, VerificationError

ARCH = {"family": "partialnet", "embed_dim": 16, "depths": [1, 1, 2, 1], "num_classes": 10, "img_size": 64,
        "name": "demo"}


def _rep(p50s: dict, device="box", model=ARCH, cv=0.01, shape=None) -> dict:
    return {"schema": schema.SCHEMA, "device": device, "model": dict(model), "settings": {"cv_threshold": 0.10},
            "environment": {},
            "results": [{"target": t, "precision": p, "batch": b, "mode": "latency", "status": "ok", "cv": cv,
                         "input_shapes": {"input": shape or [b, 3, 64, 64]},
                         "latency_ms": {"p50": v, "p90": v, "p99": v, "mean": v, "std": 0, "min": v, "max": v},
                         "runs": 10} for (t, p, b), v in p50s.items()]}


BASE = {("onnx", "fp32", 1): 1.0, ("openvino", "int8", 1): 0.5, ("openvino", "fp32", 1): 0.8}


def _fails(base, new, match, **kw):
    cmp = regression.compare(base, new, 0.10, **kw)
    assert not cmp["passed"]
    with pytest.raises(VerificationError, match=match):
        regression.check(cmp)
    return cmp


def test_missing_baseline_cases_fail_unless_allowed():
    new = _rep({("onnx", "fp32", 1): 1.0})
    cmp = _fails(_rep(BASE), new, r"2 baseline case\(s\) not measured.*openvino/int8 b1.*--allow-missing")
    assert sorted(r["status"] for r in cmp["rows"]) == ["missing", "missing", "ok"]
    ok = regression.compare(_rep(BASE), new, 0.10, allow_missing=True)
    assert ok["passed"] and {r["status"] for r in ok["rows"]} == {"ok", "missing (allowed)"}
    regression.check(ok)


def test_empty_reports_fail_even_with_allow_missing():
    empty = _rep({})
    _fails(_rep(BASE), empty, "new report has no measured results", allow_missing=True)
    _fails(empty, _rep(BASE), "baseline has no measured results")
    skipped = _rep(BASE)
    for r in skipped["results"]:
        r.update(status="skipped", latency_ms=None)
    _fails(_rep(BASE), skipped, "no measured results", allow_missing=True)


def test_bad_numbers():
    neg = _rep({**BASE, ("onnx", "fp32", 1): -1.0})
    schema.validate(neg)  # finite: it loads, and the gate refuses to judge it
    cmp = _fails(_rep(BASE), neg, r"cannot be compared \(invalid\).*onnx/fp32 b1.*not a positive latency")
    assert [r["status"] for r in cmp["rows"] if r["target"] == "onnx"] == ["invalid"]
    _fails(_rep({**BASE, ("onnx", "fp32", 1): 0.0}), _rep(BASE), "invalid")
    nan = json.loads(json.dumps(_rep(BASE)).replace('"p50": 1.0', '"p50": NaN'))
    with pytest.raises(UserError, match="latency_ms is not a set of numbers"):  # malformed: exit 2 at load
        schema.validate(nan)


def test_other_model_and_other_shapes_fail():
    t0 = {**ARCH, "embed_dim": 64, "depths": [1, 2, 8, 2], "img_size": 224, "name": "PartialNet-T0"}
    _fails(_rep(BASE), _rep({k: v * 9 for k, v in BASE.items()}, model=t0),
           r"different models \('demo' vs 'PartialNet-T0': depths, embed_dim, img_size differ\)")
    retrained = {**ARCH, "checkpoint_sha256": "ff" * 32}  # same architecture, other weights: comparable
    assert regression.compare(_rep(BASE), _rep(BASE, model=retrained), 0.1)["passed"]
    big = _rep(BASE, shape=[1, 3, 96, 96])
    _fails(_rep(BASE), big, r"shape differs.*\[1, 3, 64, 64\]\} -> \{'input': \[1, 3, 96, 96\]")


def test_devices_and_noise_warn_and_fail_with_strict():
    other = regression.compare(_rep(BASE), _rep(BASE, device="jetson"), 0.1)
    assert other["passed"] and "different devices (box vs jetson)" in other["warnings"][0]
    _fails(_rep(BASE), _rep(BASE, device="jetson"), "--strict: the reports come from different devices",
           strict=True)
    noisy = regression.compare(_rep(BASE, cv=0.77), _rep(BASE), 0.1)
    assert noisy["passed"] and "3 baseline case(s) are noisy" in noisy["warnings"][0] and "77%" in noisy["warnings"][0]
    _fails(_rep(BASE, cv=0.77), _rep(BASE), "--strict: 3 baseline case", strict=True)
    assert regression.compare(_rep(BASE), _rep(BASE), 0.1, strict=True)["passed"]


def test_regression_markdown_says_the_verdict():
    cmp = regression.compare(_rep(BASE), _rep({("onnx", "fp32", 1): 2.0}), 0.1)
    md = regression.to_markdown(cmp)
    assert md.startswith("**Latency gate: FAILED**") and "| openvino | int8 | 1 | 0.500 | – | – | missing |" in md
    assert "- failure: 1 latency regression(s)" in md


# ---------------------------------------------------------------- profile

def test_profile_that_measured_nothing_keeps_the_report_and_fails(demo_dir, tmp_path):
    from partialdeploy.profiling.profiler import exit_code, profile
    from partialdeploy.profiling.settings import Settings

    d = tmp_path / "d"
    shutil.copytree(demo_dir, d)
    fast = dict(runs=3, min_time_s=None, warmup=1, blocks=1, layers=False)
    rep = profile(d, Settings(batches=(1,), **fast), out_path=d / "profile.json")
    assert exit_code(rep) == 0
    before = (d / "profile.json").read_bytes()
    empty = profile(d, Settings(batches=(1000000,), **fast), out_path=d / "profile.json")
    assert [r["status"] for r in empty["results"]] == ["skipped"] and exit_code(empty) == 2
    assert (d / "profile.json").read_bytes() == before  # the real report is kept
    fresh = tmp_path / "fresh.json"  # nowhere to keep from: the empty report is written (it says why)
    profile(d, Settings(batches=(1000000,), **fast), out_path=fresh)
    assert json.loads(fresh.read_text())["results"][0]["status"] == "skipped"


def test_second_profile_on_one_report_is_refused(demo_dir, tmp_path):
    from partialdeploy.profiling.profiler import profile
    from partialdeploy.profiling.settings import Settings
    from partialdeploy.report.file import ReportLock

    out = tmp_path / "profile.json"
    with ReportLock(out):
        with pytest.raises(UserError, match="another partialdeploy profile run is writing"):
            profile(demo_dir, Settings(batches=(1,), runs=2, min_time_s=None, layers=False), out_path=out)
        assert not out.exists()
    profile(demo_dir, Settings(batches=(1,), runs=2, min_time_s=None, warmup=1, blocks=1, layers=False), out_path=out)
    assert out.exists()  # released: the next run goes


def test_profile_and_diff_refuse_a_folder_an_export_is_writing(demo_dir, tmp_path):
    """An export holds its folder's lock from start to commit (manifest and artifacts are being
    replaced): profile and diff of that folder refuse it in one line (exit 2) instead of reading a
    half-replaced export; once the export ends they go."""
    import shutil

    from conftest import run_cli
    from partialdeploy import demo
    from partialdeploy.safety import Guard

    d = tmp_path / "dist"
    shutil.copytree(demo_dir, d)
    g = Guard(d)
    g.acquire()  # what a running `export -o dist` holds
    try:
        for args in (("profile", d, "--runs", "2", "--min-time", "0", "--no-layers", "-o", tmp_path / "p.json"),
                     ("diff", demo.DEMO_CKPT, d, "--count", "2")):
            r = run_cli(*args)
            assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
            assert f"an export into {d} is running right now" in r.stderr, r.stderr
        assert not (tmp_path / "p.json").exists()
    finally:
        g.release()
    r = run_cli("profile", d, "--runs", "2", "--min-time", "0", "--warmup", "1", "--blocks", "1", "--no-layers",
                "-o", tmp_path / "p.json")
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------- export folder ownership

def test_export_refuses_a_foreign_folder(tmp_path):
    from partialdeploy.cli import app

    web = tmp_path / "web"
    web.mkdir()
    (web / "manifest.json").write_text('{"name": "my-web-app"}')
    r = CliRunner().invoke(app, ["export", "-o", str(web)])
    assert r.exit_code == 2 and "is not a partialdeploy manifest" in r.output
    assert (web / "manifest.json").read_text() == '{"name": "my-web-app"}' and len(list(web.iterdir())) == 1
    other = tmp_path / "other"
    (other / "onnx" / "fp32").mkdir(parents=True)
    (other / "onnx" / "fp32" / "model.onnx").write_text("someone else's")
    r = CliRunner().invoke(app, ["export", "-o", str(other)])
    assert r.exit_code == 2 and "no partialdeploy manifest" in r.output
    assert (other / "onnx" / "fp32" / "model.onnx").read_text() == "someone else's"


def test_export_of_another_model_cleans_its_own_stale_files(demo_dir, tmp_path):
    from safetensors.numpy import load_file, save_file

    from partialdeploy.cli import app
    from partialdeploy.demo import DEMO_CKPT

    d = tmp_path / "d"
    shutil.copytree(demo_dir, d)
    m = json.loads((d / "manifest.json").read_text())
    # pretend the folder also holds an int8 artifact of the demo, and a report of it
    shutil.copytree(d / "onnx" / "fp32", d / "onnx" / "int8")
    m["artifacts"].append({**copy.deepcopy(m["artifacts"][0]), "precision": "int8", "path": "onnx/int8/model.onnx",
                           "files": ["onnx/int8/model.onnx"]})
    (d / "manifest.json").write_text(json.dumps(m))
    (d / "profile.json").write_text(json.dumps({"schema": schema.SCHEMA, "model": m["model"], "results": []}))
    (d / "notes.txt").write_text("mine")
    sd = load_file(DEMO_CKPT)
    k = next(k for k, v in sd.items() if v.dtype.kind == "f" and v.ndim > 1)
    sd[k] = sd[k] * 1.0001  # another checkpoint of the same architecture
    ck = tmp_path / "retrained.safetensors"
    from safetensors import safe_open

    with safe_open(DEMO_CKPT, "np") as f:
        meta = f.metadata()
    save_file(sd, ck, metadata=meta)
    r = CliRunner().invoke(app, ["export", str(ck), "-o", str(d)])
    assert r.exit_code == 0, r.output
    new = json.loads((d / "manifest.json").read_text())
    assert [a["path"] for a in new["artifacts"]] == ["onnx/fp32/model.onnx"]
    assert not (d / "onnx" / "int8").exists()  # the previous model's file it owned is gone
    assert "removed the previous model's artifacts: onnx/int8" in r.output
    assert "notes.txt" in r.output and "profile.json (measures another model" in r.output
    assert (d / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------- the commands

def _write(tmp_path, name, rep):
    p = tmp_path / name
    p.write_text(json.dumps(rep))
    return str(p)


def test_cli_compare_fails_closed_with_flags(tmp_path):
    from partialdeploy.cli import app

    base = _write(tmp_path, "base.json", _rep(BASE))
    fewer = _write(tmp_path, "fewer.json", _rep({("onnx", "fp32", 1): 1.0}))
    other = _write(tmp_path, "other.json", _rep(BASE, device="jetson"))
    run = CliRunner().invoke
    r = run(app, ["report", "compare", base, fewer, "--junit", str(tmp_path / "g.xml"), "--md", str(tmp_path / "s.md")])
    assert r.exit_code == 1 and "2 baseline case(s) not measured" in r.output
    assert "missing: not measured in" in (tmp_path / "g.xml").read_text()
    assert (tmp_path / "s.md").read_text().startswith("**Latency gate: FAILED**")
    assert run(app, ["report", "compare", base, fewer, "--allow-missing"]).exit_code == 0
    r = run(app, ["report", "compare", base, other])
    assert r.exit_code == 0 and "warning:" in r.output and "different devices" in r.output
    r = run(app, ["report", "compare", base, other, "--strict"])
    assert r.exit_code == 1 and "--strict: the reports come from different devices" in r.output
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": "partialdeploy.profile/1", "results": [{"batch": -1}]}')
    r = run(app, ["report", "compare", base, str(bad)])
    assert r.exit_code == 2 and "malformed" in r.output


def test_cli_profile_nothing_measured_exit_2_one_line(demo_dir, tmp_path):
    from conftest import run_cli

    d = tmp_path / "d"
    shutil.copytree(demo_dir, d)
    (d / "profile.json").write_text("{}")  # whatever is there is not replaced by an empty run
    r = run_cli("profile", d, "--batch", "1000000", "--runs", "2", "--min-time", "0", "--no-layers")
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().startswith("error: nothing was measured") and len(r.stderr.strip().splitlines()) == 1
    assert "was kept as it was" in r.stderr and (d / "profile.json").read_text() == "{}"
