"""The public Python API, called as a user would (on the bundled demo checkpoint): export -> frozen
result with paths, sha256 and parity numbers; profile; diff; inspect; typed errors; a light import."""

import dataclasses
import json
import subprocess
import sys

import pytest

import partialdeploy as pd

pytest.importorskip("onnxruntime")


def test_import_is_light():
    code = ("import sys, partialdeploy as pd; pd.UserError; pd.ParityError; pd.RuntimeUnavailable; "
            "heavy = [m for m in ('torch', 'numpy', 'onnx', 'onnxruntime', 'openvino') if m in sys.modules]; "
            "print(heavy)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
    r = subprocess.run([sys.executable, "-c", code.replace("pd.RuntimeUnavailable;", "pd.export; pd.diff;")],
                       capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"  # even the API functions load nothing heavy until called


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    events = []
    out = tmp_path_factory.mktemp("api") / "dist"
    res = pd.export(targets=["onnx", "onnxruntime"], out=out, on_event=lambda stage, info: events.append(stage))
    return res, events


def test_export_returns_a_frozen_result_with_paths_hashes_and_numbers(exported):
    from partialdeploy.integrity import file_sha256

    res, events = exported
    assert res.ok and not res.failures and res.manifest.is_file()
    assert [(a.target, a.precision) for a in res.artifacts] == [("onnx", "fp32"), ("onnxruntime", "fp32")]
    for a in res.artifacts:
        assert a.path.is_file() and a.sha256 == file_sha256(a.path) and a.verified == "parity"
        assert a.parity and all(p.passed and p.cosine_min > 0.9999 and p.images > 0 for p in a.parity)
    manifest = json.loads(res.manifest.read_text())
    assert {x["sha256"] for x in manifest["artifacts"]} == {a.sha256 for a in res.artifacts}
    with pytest.raises(dataclasses.FrozenInstanceError):
        res.artifacts[0].sha256 = "x"
    assert res.artifact("onnxruntime").target == "onnxruntime"
    assert "deploy form" in events and "onnx" in events  # on_event saw the stages as they ran


def test_the_result_carries_what_the_cli_prints(exported):
    """`export --json` is the API result's ``data``; the exit code is the same rule."""
    res, _ = exported
    d = res.data
    assert d["exit_code"] == res.exit_code == 0 and d["manifest"] and d["model"]["name"] == res.model
    assert [(a["target"], a["sha256"]) for a in d["artifacts"]] == [(a.target, a.sha256) for a in res.artifacts]
    assert [s["name"] for s in d["stages"]][:4] == ["load", "images", "deploy form", "onnx export"]
    assert res.batch == 1 and d["failures"] == [] and d["skipped"] == []


def test_a_profile_decides_what_no_argument_says(tmp_path, monkeypatch):
    """Arguments left out take the profile's values (the defaults are the profile's, then onnx / fp32);
    the ones given win; every export option reaches the request."""
    import partialdeploy.exporting.run as run

    seen = []

    def capture(req, progress=None):
        seen.append(req)
        raise pd.UserError("stop here")
    monkeypatch.setattr(run, "run_export", capture)
    prof = tmp_path / "p.yaml"
    prof.write_text("target: onnxruntime\nprecision: int8\n")
    for kw in ({}, {"targets": "onnx", "precision": "fp32", "int8_exclude": "head", "tune_budget": 0}):
        with pytest.raises(pd.UserError, match="stop here"):
            pd.export(profile=str(prof), out=tmp_path / "d", **kw)
    assert (seen[0].targets, seen[0].precision) == (("onnxruntime",), "int8")
    assert (seen[1].targets, seen[1].precision) == (("onnx",), "fp32")
    assert seen[1].options.int8_exclude == ("head",) and seen[1].options.tune_budget == 0


def test_bad_input_raises_user_error_and_writes_nothing(tmp_path):
    with pytest.raises(pd.UserError, match="precision"):
        pd.export(precision="int4", out=tmp_path / "a")
    with pytest.raises(pd.UserError, match="unknown target"):
        pd.export(targets="onnx,nosuchruntime", out=tmp_path / "b")
    with pytest.raises(pd.UserError):
        pd.export(tmp_path / "missing.ckpt", out=tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_missing_runtime_is_runtime_unavailable(tmp_path):
    """A TensorRT engine cannot run on this machine (no NVIDIA GPU / TensorRT): a typed error, not a crash."""
    (tmp_path / "m.engine").write_bytes(b"not an engine")
    with pytest.raises(pd.RuntimeUnavailable):
        pd.profile(tmp_path / "m.engine", runs=1, min_time_s=None, warmup=0, blocks=1, layers=False)


def test_profile_that_measures_nothing_is_a_user_error(exported, tmp_path):
    """Every case skipped here (a batch the static model cannot take): one UserError (it was a
    StopIteration), and a report already there is not replaced by the empty run."""
    res, _ = exported
    (tmp_path / "p.json").write_text("{}")
    with pytest.raises(pd.UserError, match="nothing was measured.*batch"):
        pd.profile(res.out_dir, batches=(1000000,), runs=1, min_time_s=None, warmup=0, blocks=1, layers=False,
                   out=tmp_path / "p.json")
    assert (tmp_path / "p.json").read_text() == "{}"
    # without check (how the CLI calls it) the report says so instead: exit code 2, nothing written
    rep = pd.profile(res.out_dir, batches=(1000000,), runs=1, min_time_s=None, warmup=0, blocks=1, layers=False,
                     out=tmp_path / "p.json", check=False)
    assert rep.exit_code == 2 and not rep.written and (tmp_path / "p.json").read_text() == "{}"
    assert rep.results and all(r.status != "ok" for r in rep.results)


def test_parity_error_carries_the_numbers(tmp_path):
    """A tolerance nobody can meet (a profile may set one): the gate fails, the error has the numbers."""
    prof = tmp_path / "strict.yaml"
    prof.write_text("target: onnx\nprecision: fp32\ntolerances:\n  fp32: {cosine_min: 1.01}\n")
    with pytest.raises(pd.ParityError) as e:
        pd.export(profile=str(prof), out=tmp_path / "dist")
    err = e.value
    assert err.parity and all(not p.passed and p.cosine_min <= 1.0 for p in err.parity)
    assert "cosine" in str(err)


def test_profile_diff_inspect(exported, tmp_path):
    res, _ = exported
    rep = pd.profile(res.out_dir, target="onnxruntime", runs=5, min_time_s=None, warmup=1, blocks=1, layers=True,
                     out=tmp_path / "p.json")
    r = rep.result("onnxruntime")
    assert rep.path.is_file() and r.status == "ok" and r.latency_ms["p50"] > 0 and r.runs == 5
    blocks = {b["block"] for b in r.layers["blocks"]}
    assert "stages.0.blocks.0" in blocks and "other" not in blocks  # per-layer times in the checkpoint's names
    d = pd.diff(res.artifact("onnx").path, res.artifact("onnxruntime").path)
    assert d.agree and d.first_divergent is None and [b.block for b in d.blocks][0] == "patch_embed"
    info = pd.inspect()
    assert info.family == "PartialNet" and info.params[1] <= info.params[0] and info.flops[0] > 0 and info.folds
