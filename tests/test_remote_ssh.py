"""`profile --remote`, `remote check` against a real OpenSSH server (tests/sshd_fixture.py): the device
is this machine through SSH, with the project's Python as the device's Python (and a bare
/usr/bin/python3 without numpy for the missing-runtime path). After every run — success, error,
Ctrl-C, lost connection — nothing of the job is left in the device's temporary folder and nothing
of it runs there."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from profile_fixtures import shared_export_dir
from sshd_fixture import free_port, start_sshd, why_no_sshd

pytestmark = pytest.mark.skipif(why_no_sshd() is not None, reason=str(why_no_sshd()))
PY = sys.executable  # the project's environment: numpy, ONNX Runtime, OpenVINO
BARE = "/usr/bin/python3"
FAST = ("--target", "onnx", "--runs", "30", "--min-time", "0", "--blocks", "2", "--warmup", "2", "--no-layers")


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    s = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def cfg(sshd):
    p = sshd.ssh_config()
    # an alias, as users write them in ~/.ssh/config
    p.write_text(f"Host edgebox\n  HostName 127.0.0.1\n  Port {sshd.port}\n  User {sshd.user}\n\n"
                 # through a jump host (the same server by another name: ssh refuses a literal loop)
                 f"Host viajump\n  HostName localhost\n  HostKeyAlias [127.0.0.1]:{sshd.port}\n  Port {sshd.port}\n"
                 f"  User {sshd.user}\n  ProxyJump {sshd.user}@127.0.0.1:{sshd.port}\n\n" + p.read_text())
    return p


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    return shared_export_dir(tmp_path_factory)


def cli(*args, timeout=300):
    return subprocess.run([PY, "-m", "partialdeploy", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


def assert_nothing_left(sshd, wait_s: float = 15.0):
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        left = sshd.leftovers()  # our folder, and anything a runtime would write into $TMPDIR
        procs = sshd.device_processes()
        if not left and not procs:
            return
        time.sleep(0.2)
    raise AssertionError(f"left on the device: folders {left}, processes {procs}")


@pytest.fixture(scope="module")
def two_devices(sshd, cfg, dist, tmp_path_factory):
    """One `profile --remote` on two "devices" (the same server, by address and by alias), with the
    sustained run and a cooldown."""
    out = tmp_path_factory.mktemp("two") / "remote.json"
    logins = sshd.logins()
    r = cli("profile", dist, "--remote", sshd.host, "--remote", "edgebox", "--ssh-config", cfg, "--remote-python", PY,
            "--target", "onnx", "--runs", "150", "--min-time", "0", "--blocks", "3", "--warmup", "5", "--no-layers",
            "--sustained", "0.6s", "--cooldown", "0.05", "-o", out)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(out.read_text()), r, sshd.logins() - logins


def test_one_handshake_per_device(two_devices):
    """ControlMaster: probe, push, profile and clean-up ride on one connection per device."""
    assert two_devices[2] == 2


def test_profile_over_ssh_gives_one_report_per_device_column_with_fingerprints(two_devices, sshd):
    rep, r, _ = two_devices
    assert_nothing_left(sshd)
    devs = list(rep["environments"])
    assert len(devs) == 2 and devs[0].startswith(sshd.host + " (") and devs[1].startswith("edgebox (")
    for env in rep["environments"].values():
        d = env["device"]
        assert d["kernel"] == os.uname().release and d["machine"] == os.uname().machine
        assert {"cpufreq", "thermal_c", "os_release", "jetson", "board"} <= set(d)
        assert env["cpu"]["logical_cores"] == os.cpu_count() and env["runtimes"]["onnxruntime"]
    ok = [x for x in rep["results"] if x["status"] == "ok"]
    assert {(x["device"], x["target"]) for x in ok} == {(d, t) for d in devs for t in ("onnx", "onnxruntime")}
    for x in ok:
        s = x["sustained"]
        assert len(s["windows"]) == 3 and all(w["runs"] > 0 and w["p50_ms"] > 0 for w in s["windows"])
        assert s["verdict"] in ("steady", "throttling") and s["p50_first_ms"] == s["windows"][0]["p50_ms"]
    assert rep["settings"]["cooldown_s"] == 0.05
    # rendered side by side, through the ordinary report commands
    from partialdeploy.report.html import to_html
    from partialdeploy.report.markdown import to_markdown
    from partialdeploy.report.schema import validate

    md = to_markdown(validate(rep))
    assert all(d.split(" (")[0] in md for d in devs) and "| device |" in md
    assert md.count("## Sustained: ") == len(ok) and "| window | end s | runs | p50 ms |" in md
    assert to_html(rep).count("<tr>") >= 5
    # the gate compares per device: the same report against itself passes, one row per device x case
    path = Path(r.args[r.args.index("-o") + 1])
    cmp = cli("report", "compare", path, path, "--max-regression", "10%", "--md", path.with_suffix(".md"))
    assert cmp.returncode == 0, cmp.stdout[-1500:] + cmp.stderr[-1500:]
    table = path.with_suffix(".md").read_text()
    assert all(table.count(f"| {d.split(' (')[0]}") == 2 for d in devs), table


def test_same_artifact_local_and_remote_agree_within_noise(two_devices, dist, tmp_path):
    """Same machine, same artifact: through SSH the p50 must be what it is locally, within the noise of
    a shared, loaded 2-core machine: a factor of 3 either way. A remote path that timed anything but the
    inference (an SSH round trip is milliseconds; this inference is ~0.3 ms) is off by far more."""
    rep = two_devices[0]
    out = tmp_path / "local.json"
    r = cli("profile", dist, "--target", "onnx", "--runs", "150", "--min-time", "0", "--blocks", "3", "--warmup", "5",
            "--no-layers", "-o", out)
    assert r.returncode == 0, r.stderr[-2000:]
    local = {(x["target"], x["batch"]): x["latency_ms"]["p50"] for x in json.loads(out.read_text())["results"]
             if x["status"] == "ok"}
    remote = [x for x in rep["results"] if x["status"] == "ok"]
    assert remote and local
    for x in remote:
        ratio = x["latency_ms"]["p50"] / local[(x["target"], x["batch"])]
        assert 1 / 3 < ratio < 3.0, (x["device"], x["target"], ratio, x["latency_ms"]["p50"])


def test_remote_check_lists_runtimes_and_leaves_nothing(sshd, cfg):
    r = cli("remote", "check", "edgebox", "--ssh-config", cfg, "--remote-python", PY, "--json")
    assert r.returncode == 0, r.stderr[-1500:]
    p = json.loads(r.stdout)["probe"]
    assert "CPUExecutionProvider" in p["runtimes"]["onnxruntime"]["providers"]
    assert "CPU" in p["runtimes"]["openvino"]["devices"]
    assert p["runtimes"]["tensorrt"]["ok"] is False and p["identity"]["cores"] == os.cpu_count()
    assert_nothing_left(sshd)


@pytest.mark.skipif(subprocess.run([BARE, "-c", "import numpy"], capture_output=True).returncode == 0
                    if os.path.exists(BARE) else True, reason=f"needs a {BARE} without numpy (the bare device)")
def test_bare_python_says_what_to_install(sshd, cfg, dist):
    for args in (("remote", "check", sshd.host), ("profile", dist, "--remote", sshd.host, *FAST)):
        r = cli(*args, "--ssh-config", cfg, "--remote-python", BARE)
        assert r.returncode == 2, r.stderr[-1500:]
        last = r.stderr.strip().splitlines()[-1]
        assert f"{BARE} -m pip install numpy" in last and "Traceback" not in r.stderr
    assert_nothing_left(sshd)


@pytest.mark.skipif(not os.path.exists(BARE), reason=f"needs {BARE} (a Python without numpy)")
def test_proxyjump_from_ssh_config_is_honoured(sshd, cfg):
    """`viajump` reaches the device through a ProxyJump host (the same server): the device answers."""
    before = sshd.logins()
    r = cli("remote", "check", "viajump", "--ssh-config", cfg, "--remote-python", BARE)
    assert r.returncode == 2 and "viajump has no numpy" in r.stderr, r.stderr[-1000:]
    assert sshd.logins() - before == 2  # the jump host, then the device through it
    assert_nothing_left(sshd)


def test_per_layer_times_on_the_device_name_the_models_blocks(sshd, cfg, dist, tmp_path):
    """The per-layer pass runs on the device too (the default --layers), its layers mapped to the
    checkpoint's block names there: the families travel in the zipapp."""
    out = tmp_path / "r.json"
    r = cli("profile", dist, "--remote", "edgebox", "--ssh-config", cfg, "--remote-python", PY, "--target", "onnx",
            "--runs", "10", "--min-time", "0", "--blocks", "1", "--warmup", "1", "-o", out)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads(out.read_text())
    ok = [x for x in rep["results"] if x["status"] == "ok"]
    assert ok and rep["complete"] and not rep.get("interrupted")
    for x in ok:
        blocks = {b["block"] for b in x["layers"]["blocks"]}
        assert "stages.0.blocks.0" in blocks and "head" in blocks and not x.get("layers_error"), blocks
    assert_nothing_left(sshd)


def test_crash_on_the_device_shows_its_stderr_and_cleans_up(sshd, cfg, dist, tmp_path):
    crash = tmp_path / "crashing-python"
    crash.write_text("#!/bin/sh\necho 'Fatal Python error: device-side crash marker' >&2\nexit 134\n")
    crash.chmod(0o755)
    r = cli("profile", dist, "--remote", sshd.host, "--ssh-config", cfg, "--remote-python", crash, *FAST,
            "-o", tmp_path / "r.json")
    assert r.returncode == 1 and "device-side crash marker" in r.stderr and "exit 134" in r.stderr, r.stderr
    assert not (tmp_path / "r.json").exists()  # nothing measured: no report written
    assert_nothing_left(sshd)


def test_a_hung_device_is_stopped_at_the_job_deadline_and_cleans_up(sshd, cfg, dist, tmp_path):
    """A device whose Python never answers and ignores the request to stop: --remote-timeout ends the
    job (one line, exit 1, no report written) and nothing of it is left running there."""
    hung = tmp_path / "hung-python"
    hung.write_text("#!/bin/sh\nexec sleep 600\n")
    hung.chmod(0o755)
    t0 = time.monotonic()
    r = cli("profile", dist, "--remote", sshd.host, "--ssh-config", cfg, "--remote-python", hung, *FAST,
            "--remote-timeout", "2s", "-o", tmp_path / "r.json", timeout=120)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "did not finish within 2 s (--remote-timeout): stopped while probing" in r.stderr, r.stderr[-2000:]
    assert time.monotonic() - t0 < 60 and "Traceback" not in r.stderr
    assert not (tmp_path / "r.json").exists()
    assert_nothing_left(sshd)


def test_the_job_deadline_keeps_what_was_measured(sshd, cfg, dist, tmp_path):
    out = tmp_path / "r.json"
    r = cli("profile", dist, "--remote", sshd.host, "--ssh-config", cfg, "--remote-python", PY, "--target", "onnx",
            "--runs", "0", "--min-time", "60", "--blocks", "3", "--no-layers", "--remote-timeout", "8s", "-o", out,
            timeout=120)
    assert r.returncode == 1 and "(--remote-timeout): stopped; kept what was measured" in r.stderr, r.stderr[-2000:]
    rep = json.loads(out.read_text())
    assert rep["timed_out"] is True and rep["interrupted"] is True
    assert any(x["status"] in ("ok", "interrupted") for x in rep["results"])
    assert_nothing_left(sshd)


def test_bad_host_arguments_exit_2_before_any_connection(dist, tmp_path):
    marker = tmp_path / "pwned"
    r = cli("profile", dist, f"--remote=-oProxyCommand=touch {marker}")  # the other forms: test_remote_units
    assert r.returncode == 2 and "cannot start with '-'" in r.stderr and "Traceback" not in r.stderr
    r = cli("remote", "check", "--", "host name")
    assert r.returncode == 2 and "whitespace" in r.stderr
    assert not marker.exists()


def test_unknown_host_key_is_refused_unless_accepted(sshd, tmp_path):
    cfg = sshd.ssh_config(known=False, name="unknown_cfg")
    kh = sshd.root / "unknown_cfg.known_hosts"
    r = cli("remote", "check", sshd.host, "--ssh-config", cfg, "--remote-python", PY)
    assert r.returncode == 2 and "host key is not known" in r.stderr and "--accept-new-host-key" in r.stderr
    assert kh.read_text() == ""
    r = cli("remote", "check", sshd.host, "--ssh-config", cfg, "--remote-python", BARE if os.path.exists(BARE) else PY,
            "--accept-new-host-key")
    assert "accepted the new host key" in r.stderr and "127.0.0.1" in kh.read_text()
    assert_nothing_left(sshd)


def test_connection_refused_is_one_line_exit_2(sshd, cfg):
    r = cli("remote", "check", f"127.0.0.1:{free_port()}", "--ssh-config", cfg)
    assert r.returncode == 2 and "connection refused" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_a_silent_device_times_out_in_one_line(tmp_path):
    """A port that accepts and then says nothing (no SSH banner): ConnectTimeout covers the handshake."""
    import socket
    import threading

    from partialdeploy.errors import UserError
    from partialdeploy.remote.hosts import parse_host
    from partialdeploy.remote.ssh import Connection, SSHOptions

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        held = []
        threading.Thread(target=lambda: held.append(srv.accept()), daemon=True).start()
        with pytest.raises(UserError, match="connection timed out") as e:
            Connection(parse_host(f"127.0.0.1:{srv.getsockname()[1]}"), SSHOptions(connect_timeout=1)).open()
        assert "\n" not in str(e.value)
        for conn, _ in held:
            conn.close()


def _start_long_profile(sshd, cfg, dist, out):
    proc = subprocess.Popen([PY, "-m", "partialdeploy", "profile", str(dist), "--remote", sshd.host, "--ssh-config",
                             str(cfg), "--remote-python", PY, "--target", "onnx", "--runs", "0", "--min-time", "60",
                             "--blocks", "3", "--no-layers", "-o", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(sshd.remote_tmp.glob("partialdeploy.*/profile.json")):  # loaded, timed blocks running
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.1)
    time.sleep(1.0)  # the first partial report reaches home
    folder = next(sshd.remote_tmp.glob("partialdeploy.*"))
    assert folder.stat().st_mode & 0o777 == 0o700  # mktemp -d: private
    assert (folder / "export" / "manifest.json").is_file() and (folder / "pd.pyz").is_file()
    return proc


def _ssh_children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            comm, ppid = stat[stat.index("(") + 1:stat.rindex(")")], int(stat[stat.rindex(")") + 2:].split()[1])
            if ppid == pid and comm == "ssh":
                kids.append(int(d.name))
    return kids


def test_ctrl_c_stops_the_device_job_keeps_results_and_cleans_up(sshd, cfg, dist, tmp_path):
    out = tmp_path / "r.json"
    proc = _start_long_profile(sshd, cfg, dist, out)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr[-2000:]
    rep = json.loads(out.read_text())
    assert rep["interrupted"] is True and any(x["status"] in ("ok", "interrupted") for x in rep["results"])
    assert_nothing_left(sshd)


def test_lost_connection_keeps_what_was_measured_and_the_device_cleans_up(sshd, cfg, dist, tmp_path):
    out = tmp_path / "r.json"
    proc = _start_long_profile(sshd, cfg, dist, out)
    cut = 0
    for k in _ssh_children(proc.pid):  # the master and the session: the link is gone
        try:
            os.kill(k, signal.SIGKILL)
            cut += 1
        except ProcessLookupError:  # a short-lived ssh command that just ended
            pass
    assert cut, "no ssh client to cut"
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "connection" in stderr.lower(), stderr[-2000:]
    rep = json.loads(out.read_text())
    assert rep["connection_lost"] is True and rep["interrupted"] is True
    assert_nothing_left(sshd)


def _bundle(dist, tmp_path) -> Path:
    """A TensorRT bundle as far as build-engine's checks go (bundle.json + model.onnx)."""
    from partialdeploy.backends.tensorrt.build import BUNDLE_SCHEMA

    b = tmp_path / "bundle"
    b.mkdir()
    (b / "model.onnx").write_bytes((dist / "onnx" / "model.onnx").read_bytes())
    (b / "bundle.json").write_text(json.dumps({"schema": BUNDLE_SCHEMA, "onnx": "model.onnx", "precision": "fp16"}))
    return b


def test_build_engine_remote_stops_at_the_devices_missing_tensorrt(sshd, cfg, dist, tmp_path):
    """No TensorRT here: the flow is tested up to the device's answer (nothing pushed, nothing left)."""
    b = _bundle(dist, tmp_path)
    r = cli("build-engine", b, "--remote", "edgebox", "--ssh-config", cfg, "--remote-python", PY)
    assert r.returncode == 2, r.stderr[-1500:]
    last = r.stderr.strip().splitlines()[-1]
    assert "cannot run tensorrt" in last and "pip install tensorrt" in last and "cuda-python" in last
    assert not (b / "model.engine").exists()
    assert_nothing_left(sshd)
    (b / "bundle.json").unlink()  # not a bundle: refused before any connection
    r = cli("build-engine", b, "--remote", "edgebox", "--ssh-config", cfg)
    assert r.returncode == 2 and "not a TensorRT bundle" in r.stderr


def test_files_come_back_whole_and_bounded(sshd, cfg, tmp_path):
    """The pull-back path of build-engine --remote: a file of the job's folder, streamed, size-bounded."""
    from partialdeploy.remote.hosts import parse_host
    from partialdeploy.remote.session import Session
    from partialdeploy.remote.ssh import RemoteError, SSHOptions

    blob = os.urandom(3 << 20)
    src = tmp_path / "model.engine"
    src.write_bytes(blob)
    with Session(parse_host("edgebox"), PY, SSHOptions(config=cfg)) as s:
        s.push([(src, "bundle/model.engine")])
        got = tmp_path / "back"
        assert s.fetch_to("export/bundle/model.engine", got, 4 << 20) == len(blob) and got.read_bytes() == blob
        with pytest.raises(RemoteError, match="larger than 1 MiB"):
            s.fetch_to("export/bundle/model.engine", got, 1 << 20)
    assert_nothing_left(sshd)


def test_a_device_without_space_says_so_and_keeps_nothing(sshd, cfg, dist, tmp_path):
    """The device's temporary filesystem is a tmpfs too small for the job (mounted over its TMPDIR)."""
    from partialdeploy.remote import payload

    zip_kb = len(payload.build().data) >> 10
    for size_kb, where in ((16, "temporary folder"), (zip_kb + 64, "the job")):
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", str(sshd.remote_tmp)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here (needs root with CAP_SYS_ADMIN): {r.stderr.strip()}")
        try:
            r = cli("profile", dist, "--remote", sshd.host, "--ssh-config", cfg, "--remote-python", PY, *FAST)
            assert r.returncode == 2 and "no space left on the device" in r.stderr and where in r.stderr, r.stderr
            assert not [n for n in sshd.leftovers() if n.startswith("partialdeploy.")]
        finally:
            subprocess.run(["umount", str(sshd.remote_tmp)], check=True)
