"""`plan --sweep` over real exports of the smallest bundled demo checkpoint: a cell that cannot be built
does not stop the others, an interrupted cell is redone, a finished one is reused (not exported or
profiled again), and the plan reads every cell's measured accuracy."""

import json

import pytest

from conftest import run_cli
from partialdeploy import demo
from partialdeploy.planner import Constraints, make_plan
from partialdeploy.planner import sweep as sw

CKPT = demo.DATA / "demo_narrow.safetensors"
FLAGS = dict(runs=10, min_time_s=0.05)


def _req(out):
    return sw.SweepRequest.from_flags([CKPT], "onnxruntime", "fp16,fp32", out_dir=out, **FLAGS)


def test_sweep_cells_resume_and_reuse(tmp_path, monkeypatch):
    out = tmp_path / "plan"

    def stop_at_fp32(done, total, label, cell=None):
        if label.endswith("/fp32") and cell is None:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sw.run_sweep(_req(out), progress=stop_at_fp32)
    first = json.loads((out / sw.SWEEP).read_text())["cells"]
    assert [c["status"] for c in first] == ["error", "pending"]  # fp16: ONNX Runtime has no fp16 target
    assert "fp16" in first[0]["reason"]

    seen = []
    res = sw.run_sweep(_req(out), progress=lambda d, t, label, cell=None: cell and seen.append(cell.status))
    assert seen == ["error", "ok"], [c.reason for c in res.cells]
    fp32 = res.cells[1]
    assert (fp32.dir / "manifest.json").is_file() and (fp32.dir / "accuracy.json").is_file()
    assert json.loads((fp32.dir / sw.CELL).read_text())["key"] == fp32.key

    def no_work(*a, **k):
        raise AssertionError("a finished cell was exported or profiled again")

    monkeypatch.setattr("partialdeploy.pipeline.run_export", no_work)
    again = sw.run_sweep(_req(out), measure=no_work)
    assert [c.status for c in again.cells] == ["error", "reused"]
    # another option (here: the profiling settings) is another cell key: not reused
    other = sw.SweepRequest.from_flags([CKPT], "onnxruntime", "fp32", out_dir=out, runs=11, min_time_s=0.05)
    assert other.cells()[0].key != fp32.key

    p = make_plan(again.reports, Constraints.from_flags(budget="10s", min_accuracy="90%"))
    (c,) = p.candidates
    info = json.loads((demo.DATA / "demo_narrow.json").read_text())
    assert c.accuracy_kind == "accuracy" and c.accuracy_set == "360 held-out test images"
    assert abs(c.accuracy - info["test_accuracy"]) < 0.01 and c.params and c.flops and p.exit_code == 0
    monkeypatch.undo()
    r = run_cli("plan", "--sweep", CKPT, "--targets", "onnxruntime", "--precisions", "fp16,fp32", "-o", out,
                "--runs", "10", "--min-time", "0.05", "--budget", "10s")
    assert r.returncode == 0, r.stderr
    assert "reused" in r.stderr and (out / "plan.html").is_file() and (out / "plan.json").is_file()
    r = run_cli("plan", "--sweep", CKPT, "--remote", "jetson", "-o", out)
    assert r.returncode == 2 and "--remote jetson" in r.stderr
