"""Issue 12 §4: Ctrl-C / SIGTERM at any stage, a full disk, a crashing converter and concurrent exports
leave the previous manifest and artifacts intact, nothing new claimed, no staging folder behind."""

import errno
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostile import ROOT, export_demo, tree
from partialdeploy import safety
from partialdeploy.exporting import manifest as export_manifest
from partialdeploy.errors import UserError
from partialdeploy.exporting.request import ExportRequest
from partialdeploy.exporting.run import run_export

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def _staging_left(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.startswith((".partialdeploy-staging", ".partialdeploy-new"))]


@pytest.fixture
def previous(tmp_path):
    """An export directory holding a finished ONNX export (the state every fault must leave intact)."""
    out = tmp_path / "dist"
    export_demo(out)
    return out, tree(out), (out / "manifest.json").read_text()


def _intact(out: Path, before: dict, manifest: str):
    assert tree(out) == before, "the previous export was changed"
    assert (out / "manifest.json").read_text() == manifest
    assert _staging_left(out.parent) == []


def _export_until(out: Path, stage: str, signum: int, *extra) -> subprocess.CompletedProcess:
    """Run `export --target all` and send ``signum`` when the progress line of ``stage`` appears."""
    p = subprocess.Popen([sys.executable, "-m", "partialdeploy", "export", "--target", "all", "-o", str(out), *extra],
                         stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    lines = []
    for line in p.stderr:
        lines.append(line)
        if line.startswith(("✓", "✗", "–")) and f" {stage}:" in line:
            p.send_signal(signum)
            break
    t0 = time.monotonic()
    rest_err, out_txt = p.communicate(timeout=120)
    assert time.monotonic() - t0 < 30, "did not stop promptly"
    return subprocess.CompletedProcess(p.args, p.returncode, out_txt, "".join(lines) + rest_err)


@pytest.mark.parametrize("stage,signum", [
    ("load", signal.SIGTERM),
    ("onnx export", signal.SIGTERM),
    ("onnxruntime", signal.SIGTERM),
    ("onnx export", signal.SIGINT),
])
def test_signal_at_a_stage_leaves_previous_export_intact(stage, signum, previous):
    """Slipped through: SIGTERM during `export --target all` killed the process at once and left its
    staging folder behind."""
    out, before, manifest = previous
    r = _export_until(out, stage, signum)
    assert r.returncode == 128 + signum, (r.returncode, r.stderr[-1500:])
    assert "Traceback" not in r.stderr
    _intact(out, before, manifest)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["images", "deploy form", "openvino", "coreml", "tensorrt"])
def test_sigterm_at_every_other_stage(stage, previous):
    out, before, manifest = previous
    r = _export_until(out, stage, signal.SIGTERM)
    assert r.returncode in (143, 0), r.stderr[-1500:]
    if r.returncode == 143:
        _intact(out, before, manifest)


def _req(out, **kw):
    return ExportRequest(out_dir=out, targets=kw.pop("targets", ("onnx", "onnxruntime")), **kw)


@pytest.mark.parametrize("where", ["build_manifest", "second move", "manifest fsync (disk full)"])
def test_fault_while_committing_restores_everything(where, previous, monkeypatch):
    """The artifacts are moved into place and the manifest written all or nothing: a signal or a full
    disk in between undoes the moves (the old onnx/fp32 comes back, onnxruntime/ is not claimed)."""
    out, before, manifest = previous
    if where == "build_manifest":
        def boom(*a, **k):
            raise safety.Terminated(signal.SIGTERM)
        monkeypatch.setattr(export_manifest, "build_manifest", boom)
        expect = safety.Terminated
    elif where == "second move":
        real = os.replace
        calls = {"n": 0}

        def flaky(src, dst):
            calls["n"] += 1
            if calls["n"] == 3:  # old onnx aside, new onnx in, then the onnxruntime move fails
                raise KeyboardInterrupt
            return real(src, dst)
        monkeypatch.setattr(safety.os, "replace", flaky)
        expect = KeyboardInterrupt
    else:
        def full(fd):
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(safety.os, "fsync", full)
        expect = UserError
    with pytest.raises(expect) as e:
        run_export(_req(out))
    if expect is UserError:
        assert "disk is full" in str(e.value)
    monkeypatch.undo()
    _intact(out, before, manifest)
    assert not (out / "onnxruntime").exists()


def test_full_disk_rlimit_fsize(previous):
    """A real full disk (RLIMIT_FSIZE: every write beyond 64 kB fails with EFBIG) while the ONNX is
    written: exit 2 with one line, previous export intact, no staging left."""
    out, before, manifest = previous

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, 64 << 10))

    r = subprocess.run([sys.executable, "-m", "partialdeploy", "export", "--target", "onnx,onnxruntime", "-o",
                        str(out)], capture_output=True, text=True, env=ENV, preexec_fn=limit, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    err = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
    assert len(err) == 1 and "disk is full" in err[0] and "Traceback" not in r.stderr, r.stderr
    _intact(out, before, manifest)


def test_crashing_converter_then_kill9_leftovers_are_cleaned(previous, tmp_path):
    """A converter that raises is that target's failure (the others land); one that takes the whole
    process down (a segfault, kill -9) leaves its staging folder, which the next run removes."""
    out, before, manifest = previous
    code = ("import os, signal, sys\n"
            "from partialdeploy.backends.onnxruntime import target as m\n"
            "def crash(self, ctx, d):\n"
            "    (d / 'half.onnx').write_bytes(b'x' * 1000)\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n"
            "m.OnnxRuntimeTarget.export = crash\n"
            "from partialdeploy.cli import main\n"
            f"sys.argv = ['partialdeploy', 'export', '--target', 'onnx,onnxruntime', '-o', {str(out)!r}]\n"
            "main()\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    assert tree(out) == before and (out / "manifest.json").read_text() == manifest  # nothing claimed
    left = _staging_left(out.parent)
    assert len(left) == 1  # what a kill -9 leaves ...
    export_demo(out)  # ... the next run into the same place removes
    assert _staging_left(out.parent) == []
    m = json.loads((out / "manifest.json").read_text())
    assert [a["target"] for a in m["artifacts"]] == ["onnx"]


def test_converter_exception_claims_nothing_for_that_target(previous, monkeypatch):
    from partialdeploy.backends.onnxruntime import target as m

    out, before, manifest = previous

    def broken(self, ctx, d):
        (d / "model.onnx").write_bytes(b"half")
        raise RuntimeError("converter crashed")
    monkeypatch.setattr(m.OnnxRuntimeTarget, "export", broken)
    res = run_export(_req(out))
    assert res.exit_code == 2 and res.failures[0].target == "onnxruntime"
    assert not (out / "onnxruntime").exists() and _staging_left(out.parent) == []
    assert [a["target"] for a in json.loads((out / "manifest.json").read_text())["artifacts"]] == ["onnx"]


def test_second_export_into_the_same_dir_is_refused(previous):
    out, before, manifest = previous
    with safety.export_guard(out):  # an export holding the directory
        r = subprocess.run([sys.executable, "-m", "partialdeploy", "export", "-o", str(out)], capture_output=True,
                           text=True, env=ENV, timeout=300)
        assert r.returncode == 2, r.stderr
        assert "another partialdeploy export is writing into" in r.stderr and "Traceback" not in r.stderr
        with pytest.raises(UserError, match="another partialdeploy export"):
            run_export(_req(out))
    _intact(out, before, manifest)
    export_demo(out)  # released: the next export goes through


def test_failed_export_into_a_new_dir_leaves_no_directory(tmp_path):
    out = tmp_path / "a" / "b" / "dist"
    with pytest.raises(UserError):
        run_export(ExportRequest(out_dir=out, precision="int3"))
    assert list(tmp_path.iterdir()) == []


def test_manifest_permissions_follow_umask(tmp_path):
    out = tmp_path / "dist"
    export_demo(out)
    mode = (out / "manifest.json").stat().st_mode & 0o777
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask
