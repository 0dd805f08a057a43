"""The exit-code contract, command by command: bad input and a runtime missing here -> 2, a gate
breached -> 1, nothing to do -> 2 (profile) or a failed gate (compare: nothing measured is no pass),
interrupted -> 130 (SIGINT) / 143 (SIGTERM); the error is one line on stderr, and no input ever
ends in exit 3 ("internal error"). Run in-process through the real entry point (`cli.main`), so
its last-resort handler is what would turn a bug into exit 3."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT

D = "DEMO"  # replaced by the demo export directory


@pytest.fixture
def cli(capsys, monkeypatch):
    from partialdeploy import cli as cli_mod

    def run(*args):
        old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
        monkeypatch.setattr(sys, "argv", ["partialdeploy", *map(str, args)])
        try:
            cli_mod.main()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            for s, h in old.items():
                signal.signal(s, h)
        cap = capsys.readouterr()
        return code, cap.out, cap.err

    return run


def _report(tmp_path, name, p50=1.0, **extra):
    r = {"schema": "partialdeploy.profile/1", "device": "box", "model": {"name": "m"}, "settings": {},
         "environment": {}, "results": [{"target": "onnx", "precision": "fp32", "batch": 1, "mode": "latency",
                                         "status": "ok", "runs": 10, "latency_ms": dict.fromkeys(
                                             ("p50", "p90", "p99", "mean", "min", "max"), p50) | {"std": 0.0}}],
         **extra}
    p = tmp_path / name
    p.write_text(json.dumps(r))
    return p


def _perturbed_onnx(demo_dir, tmp_path):
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.load(demo_dir / "onnx/fp32/model.onnx")
    for t in m.graph.initializer:
        a = numpy_helper.to_array(t)
        if a.ndim == 4:
            t.CopyFrom(numpy_helper.from_array(-a.astype(np.float32), t.name))
            break
    p = tmp_path / "other.onnx"
    onnx.save(m, p)
    return p


def _cases():
    """(command, failure class, args(tmp, demo) , patch(monkeypatch) or None, exit code, words in the line)"""
    def no_openvino_target(mp):
        from partialdeploy.backends.openvino.target import OpenVINOTarget
        mp.setattr(OpenVINOTarget, "requires", ("openvino_is_not_here",))

    def no_openvino_runner(mp):
        from partialdeploy.backends.openvino.runner import OpenVINORunner
        mp.setattr(OpenVINORunner, "unavailable_reason", classmethod(lambda cls: "openvino is not installed"))

    def no_openvino_module(mp):
        import partialdeploy.lazy as lazy
        real = lazy.installed
        mp.setattr(lazy, "installed", lambda *m: "openvino" not in m and real(*m))

    def broken_gate(mp):
        from partialdeploy.errors import VerificationError
        from partialdeploy.backends.onnxruntime.target import OnnxRuntimeTarget

        def export(self, ctx, out_dir):
            raise VerificationError("parity gate 'ONNX -> ONNX Runtime fp32' failed: cosine 0.5 < 0.99999")
        mp.setattr(OnnxRuntimeTarget, "export", export)

    return [
        ("export", "bad input", lambda t, d: ["export", t / "nope.pth", "-o", t / "o"], None, 2, "does not exist"),
        ("export", "missing runtime", lambda t, d: ["export", "--target", "openvino", "-o", t / "o"],
         no_openvino_target, 2, "unavailable"),
        ("export", "gate breach", lambda t, d: ["export", "--target", "onnxruntime", "-o", t / "o"], broken_gate, 1,
         None),
        ("export", "bad input", lambda t, d: ["export", "--check-images", t / "nope", "-o", t / "o"], None, 2,
         "is not a folder"),
        ("export", "bad input", lambda t, d: ["export", "--target", "tensorrt", "--bundle-wheel", t / "nope.whl", "-o",
                                               t / "o"], None, 2, "does not exist"),
        ("export", "bad input", lambda t, d: ["export", "--precision", "int8", "--target", "onnxruntime",
                                               "--int8-exclude", "stages.0.blocks.0,stages.9", "-o", t / "o"], None, 2,
         "stages.9: not a block of"),
        ("inspect", "bad input", lambda t, d: ["inspect", d / "onnx/fp32/model.onnx"], None, 2, "not a checkpoint"),
        ("profile", "bad input", lambda t, d: ["profile", t / "nope"], None, 2, "nope"),
        ("profile", "missing runtime", lambda t, d: ["profile", d / "onnx/fp32/model.onnx", "--target", "openvino"],
         no_openvino_runner, 2, "openvino is not installed"),
        ("profile", "nothing to do", lambda t, d: ["profile", d, "--batch", "1000000", "-o", t / "p.json"], None, 2,
         "nothing was measured"),
        ("report show", "bad input", lambda t, d: ["report", d / "manifest.json"], None, 2, "schema"),
        ("report compare", "bad input", lambda t, d: ["report", "compare", _report(t, "a.json"), d / "manifest.json"],
         None, 2, "schema"),
        ("report compare", "gate breach", lambda t, d: ["report", "compare", _report(t, "a.json"),
                                                        _report(t, "b.json", 2.0)], None, 1, "+100.0%"),
        ("report compare", "nothing to do", lambda t, d: ["report", "compare", _report(t, "a.json"),
                                                          _report(t, "e.json", results=[])], None, 1,
         "no measured results"),
        ("report merge", "bad input", lambda t, d: ["report", "merge", t / "nope.json", "-o", t / "m.json"], None, 2,
         "no such profile report"),
        ("build-engine", "bad input", lambda t, d: ["build-engine", d], None, 2, "bundle"),
        ("diff", "bad input", lambda t, d: ["diff", t / "nope.onnx", d / "onnx/fp32/model.onnx"], None, 2, "nope"),
        ("diff", "missing runtime", lambda t, d: ["diff", d / "onnx/fp32/model.onnx", t / "m.xml"],
         no_openvino_module, 2, "openvino runtime is not installed here: pip install openvino"),
        ("diff", "gate breach", lambda t, d: ["diff", d / "onnx/fp32/model.onnx", _perturbed_onnx(d, t)], None, 1,
         None),
        ("plan", "bad input", lambda t, d: ["plan", t / "nope.json"], None, 2, "nope"),
        ("remote check", "bad input", lambda t, d: ["remote", "check", "-oProxyCommand=touch pwned"], None, 2,
         "No such option"),
        ("profile", "bad input", lambda t, d: ["profile", d, "--remote", "127.0.0.1", "--remote-timeout", "soon"],
         None, 2, "--remote-timeout 'soon' is not a duration"),
        ("profile", "bad input", lambda t, d: ["profile", d, "--remote-timeout", "5m"], None, 2, "go with --remote"),
        ("export", "bad input", lambda t, d: ["export", "--tune-on", "-oProxyCommand=touch pwned", "-o", t / "o"], None,
         2, "--tune-on '-oProxyCommand=touch pwned'"),
        ("export", "bad input", lambda t, d: ["export", "--tune-on", "pi@10.0.0.7", "--tune-budget", "0", "-o",
                                               t / "o"], None, 2, "--tune-budget, which is 0"),
        ("export", "usage", lambda t, d: ["export", "--bogus"], None, 2, "No such option: --bogus"),
        ("report compare", "usage", lambda t, d: ["report", "compare", "only-one.json"], None, 2, "Missing argument"),
    ]


@pytest.mark.parametrize("command, klass, args, patch, code, words", _cases(),
                         ids=[f"{c[0]}: {c[1]}" for c in _cases()])
def test_exit_code_contract(cli, demo_dir, tmp_path, monkeypatch, command, klass, args, patch, code, words):
    (tmp_path / "m.xml").write_text("<net/>")
    if patch:
        patch(monkeypatch)
    got, out, err = cli(*args(tmp_path, demo_dir))
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert got == code, f"{command} ({klass}): exit {got}, expected {code}\n{out[-1500:]}\n{err}"
    assert "internal error" not in err and "Traceback" not in err
    if code == 2 or words:
        assert len(lines) >= 1 and lines[-1].startswith("error:"), err
        assert len([ln for ln in lines if ln.startswith("error:")]) == 1, err  # one error line
    if code == 2:
        assert len(lines) == 1, err  # bad input: the one line and nothing else
    if words:
        assert words in lines[-1], lines[-1]
    assert not (tmp_path / "pwned").exists()


def test_every_command_is_in_the_contract():
    from partialdeploy.cli import app

    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    names |= {f"{g.name} {c.name or c.callback.__name__}" for g in app.registered_groups
              for c in g.typer_instance.registered_commands}
    covered = {c[0] for c in _cases()}
    assert {n.replace("_", "-") for n in names} <= covered | {"report show"}, names - covered


def test_sigterm_during_profile_is_143_and_keeps_the_report(demo_dir, tmp_path):
    """SIGTERM (a CI cancel) mid-run: exit 143, one line, the existing report untouched or replaced by
    what was measured — never an empty one."""
    out = tmp_path / "p.json"
    out.write_text('{"kept": true}')
    p = subprocess.Popen([sys.executable, "-m", "partialdeploy", "profile", str(demo_dir), "--runs", "0",
                          "--min-time", "60", "--no-layers", "-o", str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    time.sleep(8)
    p.send_signal(signal.SIGTERM)
    o, e = p.communicate(timeout=120)
    assert p.returncode == 143, (p.returncode, e[-1500:])
    assert len([ln for ln in e.splitlines() if ln.strip()]) == 1 and "terminated by" in e
    data = json.loads(out.read_text())
    assert data == {"kept": True} or any(r.get("latency_ms") for r in data["results"])
