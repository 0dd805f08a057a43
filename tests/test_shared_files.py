"""What an export commits follows the umask: a model server running as another user (a non-root
container, a systemd service) reads the artifact folders, manifests and reports. Staging stays private
(mkdtemp 0700 / mkstemp 0600); what is moved into place is chmod'ed as a plain mkdir/open would be.
Read back as another uid (nobody) in a subprocess."""

import os
import shutil
import stat
import subprocess
import tempfile
from pathlib import Path

import pytest

from partialdeploy.safety import share_per_umask

NOBODY = 65534
# as nobody: list what cannot be read / entered, then read every file (cat fails on the first it cannot)
READ_ALL = ('id -u; find "$1" ! -readable; find "$1" -type d ! -executable; '
            'find "$1" -type f | wc -l; find "$1" -type f -exec cat {} + > /dev/null && echo read-all')


def _as_nobody(root: Path) -> list[str]:
    """The output lines of READ_ALL run as nobody (system tools: /root's Python is not nobody's)."""
    if os.getuid() != 0:
        pytest.skip("reading as another uid needs root (setuid to nobody); CI runs as root")
    r = subprocess.run(["/bin/sh", "-c", READ_ALL, "sh", str(root)], capture_output=True, text=True, timeout=60,
                       preexec_fn=lambda: (os.setgid(NOBODY), os.setuid(NOBODY)), cwd="/")
    return r.stdout.split("\n")[:-1] + ([r.stderr.strip()] if r.stderr.strip() else [])


@pytest.fixture
def shared_dir():
    """A directory other users can traverse (pytest's tmp_path base is 0700), umask 022 meanwhile."""
    old = os.umask(0o022)
    root = Path(tempfile.mkdtemp(prefix="pd-shared-", dir="/tmp"))
    root.chmod(0o755)
    try:
        yield root
    finally:
        os.umask(old)
        shutil.rmtree(root, ignore_errors=True)


def test_export_and_profile_are_readable_by_another_user(shared_dir):
    from partialdeploy.exporting.request import ExportRequest
    from partialdeploy.exporting.run import run_export
    from partialdeploy.profiling.profiler import Profiler
    from partialdeploy.profiling.settings import Settings

    out = shared_dir / "dist"
    res = run_export(ExportRequest(targets=("onnx", "tensorrt"), out_dir=out, parity_images=4))
    assert res.exit_code == 0 and res.manifest_path.exists()
    settings = Settings(batches=(1,), runs=3, min_time_s=None, warmup=1, blocks=1, layers=False)
    Profiler(out, settings, None, out / "profile.json").run()
    modes = {p.relative_to(out).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in [out, *out.rglob("*")]}
    assert modes["onnx/fp32"] == modes["tensorrt/fp32"] == 0o755  # were mkdtemp's 0700
    assert modes["profile.json"] == modes["manifest.json"] == 0o644  # profile.json was mkstemp's 0600
    assert modes["tensorrt/fp32/build_engine.sh"] == 0o755 and modes["tensorrt/fp32/infer.py"] == 0o644
    n_files = len([p for p in out.rglob("*") if p.is_file()])
    assert n_files >= 10 and _as_nobody(out) == [str(NOBODY), str(n_files), "read-all"]
    out.chmod(0o700)  # the check can fail: a private folder is reported as such
    assert _as_nobody(out)[1:3] == [str(out), str(out)]


def test_share_per_umask_follows_a_stricter_umask(tmp_path):
    d = Path(tempfile.mkdtemp(dir=tmp_path))
    fd, f = tempfile.mkstemp(dir=d)
    os.close(fd)
    (d / "run.sh").write_text("#!/bin/sh\n")
    (d / "run.sh").chmod(0o700)
    (d / "link").symlink_to(f)
    old = os.umask(0o027)
    try:
        share_per_umask(d)
    finally:
        os.umask(old)
    assert stat.S_IMODE(d.stat().st_mode) == 0o750 and stat.S_IMODE(os.stat(f).st_mode) == 0o640
    assert stat.S_IMODE((d / "run.sh").stat().st_mode) == 0o750 and (d / "link").is_symlink()
