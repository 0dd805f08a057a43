"""`export --tune-on HOST`: the measured selection times the candidate forms on the device, against a
real OpenSSH server (tests/sshd_fixture.py; the "device" is this machine through SSH, with the
project's Python, and a bare /usr/bin/python3 without numpy for the device without the runtime).
The forms are built and gated here; the manifest says where they were timed; nothing of the job is
left on the device; a bad or unreachable host is one line before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime")

from sshd_fixture import free_port, start_sshd, why_no_sshd  # noqa: E402
from test_exit_codes import cli  # noqa: E402,F401 (the in-process entry point fixture)

from partialdeploy.backends.onnxruntime.target import PLACEMENT_EVERY  # noqa: E402
from partialdeploy.errors import UserError  # noqa: E402
from partialdeploy.exporting.options import ExportOptions  # noqa: E402
from partialdeploy.exporting.request import ExportRequest  # noqa: E402
from partialdeploy.exporting.run import run_export  # noqa: E402
from partialdeploy.profiling.interleave import rounds_faster, wins_needed  # noqa: E402
from partialdeploy.remote.ssh import SSHOptions  # noqa: E402
from partialdeploy.remote.tune import MAX_MS, TuneDevice, validated  # noqa: E402

pytestmark = pytest.mark.skipif(why_no_sshd() is not None, reason=str(why_no_sshd()))
PY = sys.executable  # the project's environment: numpy, ONNX Runtime, OpenVINO
BARE = "/usr/bin/python3"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    s = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield s
    s.stop()


def _device(sshd, python=PY) -> TuneDevice:
    return TuneDevice(sshd.host, python, SSHOptions(config=sshd.ssh_config()))


def _export(out, device, targets=("onnxruntime",)):
    return run_export(ExportRequest(targets=targets, precision="int8", out_dir=out,
                                    options=ExportOptions(tune_budget=2, threads=1, tune_on=device)))


def _nothing_left(sshd):
    from test_remote_ssh import assert_nothing_left

    assert_nothing_left(sshd)


@pytest.fixture(scope="module")
def tuned_on_device(sshd, tmp_path_factory):
    out = tmp_path_factory.mktemp("tuneon") / "dist"
    logins = sshd.logins()
    res = _export(out, _device(sshd))
    assert res.exit_code == 0, res.failures
    return res, json.loads((out / "manifest.json").read_text()), sshd.logins() - logins


def test_the_forms_are_timed_on_the_device_round_by_round(tuned_on_device, sshd):
    res, manifest, logins = tuned_on_device
    entry = next(e for e in manifest["artifacts"] if e["target"] == "onnxruntime")
    tune = entry["extra"]["tuning"]
    assert tune["timed"], tune
    label = tune["timed_on"]
    assert label.startswith(f"{sshd.host} (") and f"on {label}" in tune["method"]
    assert tune["device"]["cores"] == os.cpu_count() and tune["device"]["hostname"]
    assert logins == 1  # one session for the export: reached before any work, then every timing job on it
    lat, per_round = tune["latency_ms"], tune["rounds_ms"]
    # the artifact as exported, ORT's default Q/DQ placement (a form built here, its file pushed), fp32 sibling
    assert {"as exported", "fp32"} <= set(lat) and PLACEMENT_EVERY in set(lat) | set(tune["skipped"])
    assert set(per_round) == set(lat) and all(len(v) == tune["rounds"] for v in per_round.values())
    assert all(min(v) <= lat[k] <= max(v) and v and min(v) > 0 for k, v in per_round.items())
    # the sign-test rule: a form is kept only when it was faster than as exported in the rounds needed
    for name in set(lat) - {"as exported", "fp32"}:
        won, n = rounds_faster(per_round, name, "as exported")
        if name == tune["chosen"]:
            assert n == tune["rounds"] and won >= wins_needed(n) and tune["gated"][name] == "passed"
        elif lat[name] < lat["as exported"]:
            assert tune["gated"][name].startswith(("not kept: faster in only", "failed"))
    speed = entry["extra"]["int8_speed"]
    assert speed["fp32_ms"] == pytest.approx(lat["fp32"], rel=1e-3)
    slower = [n for n in res.notes if "SLOWER" in n]
    assert bool(slower) == speed["slower_than_fp32"] and all(f"on {label}" in n for n in slower)
    d = res.out_dir / "onnxruntime" / "int8"
    assert sorted(p.name for p in d.iterdir()) == ["model.onnx"]  # the forms not kept are gone here too
    _nothing_left(sshd)


def test_a_device_without_the_runtime_leaves_the_tuning_not_done(sshd, tmp_path):
    if not os.path.exists(BARE) or subprocess.run([BARE, "-c", "import numpy"], capture_output=True).returncode == 0:
        pytest.skip(f"needs a {BARE} without numpy (the device without the runtime)")
    res = _export(tmp_path / "dist", _device(sshd, BARE))
    assert res.exit_code == 0, res.failures
    entry = json.loads((tmp_path / "dist" / "manifest.json").read_text())["artifacts"][0]
    tune = entry["extra"]["tuning"]
    assert tune["timed"] is False and f"{BARE} -m pip install numpy" in tune["why"]
    assert any(n.startswith("measured selection not done") for n in entry["notes"])
    _nothing_left(sshd)


def test_bad_or_unreachable_hosts_are_one_line_before_any_work(sshd, cli, tmp_path):  # noqa: F811
    out = tmp_path / "dist"
    closed = f"127.0.0.1:{free_port()}"
    for args, words in ((["--tune-on=-oProxyCommand=touch pwned"], "--tune-on"),
                        (["--tune-on", "pi@bad host"], "whitespace"),
                        (["--tune-on", sshd.host, "--tune-budget", "0"], "--tune-budget"),
                        (["--remote-python", PY], "go with --tune-on"),
                        (["--tune-on", closed, "--ssh-config", sshd.ssh_config()], "connection refused")):
        code, _, err = cli("export", "--target", "onnxruntime", "--precision", "int8", "-o", out, *args)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 2 and len(lines) == 1 and words in lines[0], (args, err)
        assert not out.exists() and not (tmp_path / "pwned").exists()


def test_the_devices_answer_is_not_trusted():
    asked = ["as exported", "other form", "fp32"]
    good = {"rounds": 3, "rounds_ms": {"as exported": [2.0, 2.1, 1.9], "fp32": [3.0, 3.0, 3.1]},
            "skipped": {"other form": "does not open on the device"}}
    ms, rounds, per_round, skipped = validated(good, asked, "dev")
    assert ms == {"as exported": 2.0, "fp32": 3.0} and rounds == 3 and skipped == good["skipped"]
    for bad in ({**good, "rounds": True}, {**good, "rounds": 99},
                {**good, "rounds_ms": {**good["rounds_ms"], "rm -rf": [1.0, 1.0, 1.0]}},
                {**good, "rounds_ms": {**good["rounds_ms"], "as exported": [1.0, float("nan"), 1.0]}},
                {**good, "rounds_ms": {**good["rounds_ms"], "as exported": [1.0, -1.0, 1.0]}},
                {**good, "rounds_ms": {**good["rounds_ms"], "as exported": [1.0, MAX_MS, 1.0]}},
                {**good, "rounds_ms": {**good["rounds_ms"], "as exported": [1.0, 1.0]}},
                {**good, "rounds_ms": {"fp32": [3.0, 3.0, 3.1]}, "skipped": {}},
                {**good, "skipped": {}}, "not an object"):
        with pytest.raises(Exception, match="malformed timing"):
            validated(bad, asked, "dev")
    from partialdeploy.remote.tune import identity

    evil = {"identity": {"cpu": "\x1b]0;pwned\x07EPYC" + "x" * 500, "cores": float("nan"), "board": ["x"], "os": "?"}}
    assert identity(evil) == {"cpu": " ]0;pwned EPYC" + "x" * 106}  # printable, 120 characters, known keys only


def test_tune_on_options_are_checked_before_any_connection():
    with pytest.raises(UserError, match="--tune-budget"):
        ExportOptions(tune_budget=0, tune_on="jetson")
    with pytest.raises(UserError, match="--tune-on '-oProxyCommand=x'"):
        ExportOptions(tune_on="-oProxyCommand=x")
    with pytest.raises(UserError, match="--remote-python"):
        ExportOptions(tune_on=TuneDevice("jetson", "python3; id"))
    assert ExportOptions(tune_on="pi@10.0.0.7:2222").tune_on == TuneDevice("pi@10.0.0.7:2222")


def _tiny_onnx(path):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.save(m, str(path))
    return path


def _candidates(tmp_path):
    from partialdeploy.remote.tune import Candidate

    art, fp32 = tmp_path / "art", tmp_path / "fp32"
    art.mkdir()
    fp32.mkdir()
    _tiny_onnx(art / "model.onnx")
    (art / "broken.onnx").write_bytes(b"not an onnx model")
    _tiny_onnx(fp32 / "model.onnx")
    return [Candidate("as exported", "onnxruntime", "model.onnx", [art / "model.onnx"], {"threads": 1}, art),
            Candidate("broken form", "onnxruntime", "broken.onnx", [art / "broken.onnx"], {"threads": 1}, art),
            Candidate("fp32", "onnxruntime", "model.onnx", [fp32 / "model.onnx"], {"threads": 1}, fp32)]


def test_a_form_that_does_not_open_on_the_device_is_skipped_there(sshd, tmp_path):
    """The job as the export sends it (files under two roots, one name twice): what opens is timed, round
    by round; what does not is answered as skipped, with why."""
    import numpy as np

    from partialdeploy.remote.tune import time_on_device

    t = time_on_device(_device(sshd), _candidates(tmp_path), np.ones((1, 3, 8, 8), np.float32), 0.5)
    assert set(t.ms) == {"as exported", "fp32"} and t.rounds >= 3
    assert all(len(v) == t.rounds for v in t.per_round.values())
    assert t.skipped["broken form"].startswith("does not open on the device") and t.label.startswith(sshd.host)
    _nothing_left(sshd)


@pytest.mark.slow  # waits out the deadline and the grace period (~10 s)
def test_a_device_that_hangs_while_timing_is_stopped_at_the_deadline(sshd, tmp_path):
    import numpy as np

    from partialdeploy.remote.ssh import RemoteError
    from partialdeploy.remote.tune import time_on_device

    hung = tmp_path / "hangs-in-tune"  # answers the probe, then hangs in the timing job, deaf to "stop"
    hung.write_text(f'#!/bin/sh\ncase " $* " in *" tune "*) exec sleep 600;; esac\nexec {PY} "$@"\n')
    hung.chmod(0o755)
    dev = TuneDevice(sshd.host, str(hung), SSHOptions(config=sshd.ssh_config(), job_timeout_s=4))
    with pytest.raises(RemoteError, match=r"did not finish within 4 s \(--remote-timeout\): stopped while timing"):
        time_on_device(dev, _candidates(tmp_path), np.ones((1, 3, 8, 8), np.float32), 0.5)
    _nothing_left(sshd)
