"""`plan --sweep` over real exports of the smallest bundled demo checkpoint: a cell that cannot be built
does not stop the others, an interrupted cell is redone, a finished one is reused (not exported or
profiled again), and the plan reads every cell's measured accuracy."""

import json

import pytest

from conftest import run_cli
from partialdeploy import demo
from partialdeploy.errors import UserError
from partialdeploy.planner import Constraints, make_plan
from partialdeploy.planner import sweep as sw
from sshd_fixture import why_no_sshd

CKPT = demo.DATA / "demo_narrow.safetensors"
FLAGS = dict(runs=10, min_time_s=0.05)


def _req(out):
    return sw.SweepRequest.from_flags([CKPT], "onnxruntime", "fp16,fp32", out_dir=out, **FLAGS)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """A sweep interrupted before its fp32 cell, then run again: (out dir, result)."""
    out = tmp_path_factory.mktemp("sweep") / "plan"

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
    return out, res


def test_sweep_cells_resume_and_reuse(swept, monkeypatch):
    out, res = swept
    fp32 = res.cells[1]
    assert (fp32.dir / "manifest.json").is_file() and (fp32.dir / "accuracy.json").is_file()
    assert json.loads((fp32.dir / sw.CELL).read_text())["key"] == fp32.key

    def no_work(*a, **k):
        raise AssertionError("a finished cell was exported or profiled again")

    monkeypatch.setattr("partialdeploy.exporting.run.run_export", no_work)
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
    r = run_cli("plan", "--sweep", CKPT, "--remote", "-oProxyCommand=touch x", "-o", out)
    assert r.returncode == 2 and r.stderr.startswith("error:") and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(why_no_sshd() is not None, reason=str(why_no_sshd()))
def test_sweep_cell_profiled_on_a_device_over_ssh(swept, tmp_path):
    """``--remote``: the device is this machine through a real OpenSSH server; the cell's report comes
    home labelled with the device, the plan reads it, and nothing is left on the device."""
    import shutil
    import sys

    from partialdeploy.remote.ssh import SSHOptions
    from sshd_fixture import start_sshd

    _, res = swept
    cell = tmp_path / "cell"
    shutil.copytree(res.cells[1].dir, cell)
    (cell / sw.PROFILE).unlink()
    server = start_sshd(tmp_path / "sshd")
    try:
        req = sw.SweepRequest.from_flags([CKPT], "onnxruntime", "fp32", out_dir=tmp_path / "p", remote=server.host,
                                         remote_python=sys.executable, ssh=SSHOptions(config=server.ssh_config()),
                                         **FLAGS)
        measure = req.measure()  # reaches and probes the device first
        assert isinstance(measure, sw.RemoteMeasure) and req.cells()[0].key != res.cells[1].key
        report = measure(cell, 1)
        assert server.host in report["device"] and report["results"][0]["status"] == "ok"
        p = make_plan([cell / sw.PROFILE], Constraints.from_flags(budget="10s"))
        assert p.exit_code == 0 and p.devices[0].device == report["device"]
        assert p.candidates[0].accuracy_kind == "accuracy"
        assert [n for n in server.leftovers() if n.startswith("partialdeploy.")] == []
    finally:
        server.stop()
    bad = sw.SweepRequest.from_flags([CKPT], "onnxruntime", "fp32", out_dir=tmp_path / "q", remote="a b", **FLAGS)
    with pytest.raises(UserError):
        bad.measure()
