"""The remote package's parts that need no SSH server: host arguments (no option injection), the
zipapp (what travels, its sha256 check, Python 3.9 syntax), the device fingerprint read from a
Jetson's and a Raspberry Pi's /sys and /proc laid out in a temporary folder, the probe's one-line
answer, and the sustained-run windows and verdict."""

import ast
import itertools
import io
import json
import subprocess
import sys
import zipfile

import pytest

from partialdeploy.errors import UserError
from partialdeploy.backends.runner import Runner
from partialdeploy.remote import device, payload, probe, sustained
from partialdeploy.remote.hosts import check_remote_python, parse_host


@pytest.mark.parametrize("bad", ["-oProxyCommand=touch /tmp/x", "-p", "host name", "host\nname", "host\tx",
                                 "user@-oProxy", "a\x00b", "", "host:0", "host:99999", "bad!user@host",
                                 "[::1", "host:port"])
def test_host_arguments_that_ssh_could_misread_are_refused(bad):
    with pytest.raises(UserError) as e:
        parse_host(bad)
    assert "\n" not in str(e.value) and "--remote" in str(e.value)
    from partialdeploy.exporting.options import ExportOptions

    with pytest.raises(UserError) as e:  # export --tune-on takes the same hosts, refused the same way
        ExportOptions(tune_on=bad)
    assert "\n" not in str(e.value) and str(e.value).startswith("--tune-on ")


def test_host_forms():
    assert parse_host("jetson").ssh_args() == [] and parse_host("jetson").name == "jetson"
    h = parse_host("pi@10.0.0.7:2222")
    assert (h.user, h.name, h.port, h.ssh_args()) == ("pi", "10.0.0.7", 2222, ["-l", "pi", "-p", "2222"])
    h = parse_host("root@[fe80::1%eth0]:22")
    assert (h.user, h.name, h.port) == ("root", "fe80::1%eth0", 22)
    assert parse_host("::1").name == "::1"
    assert check_remote_python("/opt/venv/bin/python") == "/opt/venv/bin/python"
    for bad in ("-c", "python3; rm -rf /", "py thon", "$(id)"):
        with pytest.raises(UserError):
            check_remote_python(bad)


def test_zipapp_holds_the_device_side_and_nothing_of_the_export_side(tmp_path):
    p = payload.build()
    names = set(zipfile.ZipFile(io.BytesIO(p.data)).namelist())
    for need in ("__main__.py", "partialdeploy/profiling/profiler.py", "partialdeploy/backends/onnxruntime/runner.py",
                 "partialdeploy/backends/openvino/runner.py", "partialdeploy/backends/tensorrt/runner.py",
                 "partialdeploy/backends/tensorrt/__init__.py", "partialdeploy/backends/torch/__init__.py",
                 "partialdeploy/records.py", "partialdeploy/integrity.py", "partialdeploy/remote/agent.py",
                 "partialdeploy/remote/device_profile.py", "partialdeploy/backends/tensorrt/build.py"):
        assert need in names
    assert "partialdeploy/families/base.py" in names  # per-layer times are named as the model's family does
    assert not [n for n in names if n.startswith(("partialdeploy/exporting", "partialdeploy/models",
                                                  "partialdeploy/data", "partialdeploy/cli",
                                                  "partialdeploy/backends/target.py"))
                or n.endswith(("/target.py", "/bundle.py", "torch/runner.py"))]
    assert len(p.data) < 600_000 and payload.build().sha256 == p.sha256  # deterministic
    for n in names:  # the device may run Python 3.9
        if n.endswith(".py"):
            ast.parse(zipfile.ZipFile(io.BytesIO(p.data)).read(n), n, feature_version=(3, 9))


def test_zipapp_is_refused_when_changed_and_runs_alone(tmp_path):
    p = payload.build()
    z = tmp_path / "pd.pyz"
    z.write_bytes(p.data)
    # stdin stays open (end-of-file on it means "connection lost" to the agent)
    proc = subprocess.Popen(payload.boot_command(sys.executable, str(z), p.sha256, "probe", "onnxruntime"),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path)
    stdout = proc.stdout.read()
    proc.wait(timeout=120)
    proc.stdin.close()
    line = [ln for ln in stdout.splitlines() if ln.startswith("@@partialdeploy ")]
    assert proc.returncode == 0 and line, proc.stderr.read()[-1500:]
    proc.stderr.close()
    ans = json.loads(line[0].split(" ", 1)[1])["probe"]
    assert ans["runtimes"]["onnxruntime"]["ok"] and "openvino" not in ans["runtimes"]
    z.write_bytes(p.data + b"x")
    r = subprocess.run(payload.boot_command(sys.executable, str(z), p.sha256, "probe"), capture_output=True,
                       text=True, cwd=tmp_path, timeout=60)
    assert r.returncode == payload.EXIT_TAMPERED and "not what was sent" in r.stderr and "@@" not in r.stdout


def _tree(root, files: dict):
    for rel, text in files.items():
        f = root / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    return str(root)


def test_a_device_side_that_stops_without_its_result_is_never_a_clean_run():
    """A partial report that came home from a device whose profiler then failed or crashed is kept, but
    the run is not clean (profile_one: interrupted, a warning naming why, exit 1)."""
    from partialdeploy.remote.profile import stopped_early
    from partialdeploy.remote.session import AgentRun

    done = AgentRun(rc=0, events=[{"event": "result", "report": {}}])
    assert stopped_early(done) is None
    crashed = AgentRun(rc=1, partial={"results": []}, stderr_tail="Traceback ...\nImportError: no module x\n")
    assert stopped_early(crashed) == "the device-side profiler crashed (exit 1: ImportError: no module x)"
    failed = AgentRun(rc=2, events=[{"event": "error", "message": "disk full", "exit_code": 2}])
    assert stopped_early(failed) == "the device-side profiler stopped: disk full"
    assert "no message" in stopped_early(AgentRun(rc=-9))


def test_fingerprint_of_a_jetson(tmp_path):
    root = _tree(tmp_path, {
        "proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit\x00",
        "etc/nv_tegra_release": "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64\n",
        "var/lib/nvpmodel/status": "pmode:0000 fmode:fanNull",
        "sys/class/thermal/thermal_zone0/type": "cpu-thermal", "sys/class/thermal/thermal_zone0/temp": "48500",
        "sys/class/thermal/thermal_zone1/type": "gpu-thermal", "sys/class/thermal/thermal_zone1/temp": "46000",
        "sys/class/thermal/thermal_zone2/type": "cpu-thermal", "sys/class/thermal/thermal_zone2/temp": "49000",
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor": "schedutil",
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq": "2201600",
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_min_freq": "2201600",
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq": "2201600",
        "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor": "schedutil",
        "sys/class/devfreq/17000000.gpu/cur_freq": "1300500000",
        "sys/class/devfreq/17000000.gpu/min_freq": "306000000",
        "sys/class/devfreq/17000000.gpu/max_freq": "1300500000",
    })
    d = device.details(root)
    assert d["board"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert d["thermal_c"] == {"cpu-thermal": 48.5, "gpu-thermal": 46.0, "cpu-thermal#2": 49.0}
    assert d["cpufreq"]["governors"] == {"schedutil": [0, 1]}
    assert d["cpufreq"]["clocks_mhz"]["cpu0"] == {"cur": 2202, "min": 2202, "max": 2202}
    j = d["jetson"]
    assert j["l4t_version"] == "36.4.0" and j["nvpmodel"] == "pmode:0000 fmode:fanNull"
    assert j["jetson_clocks"].startswith("off")  # the GPU still scales (min < max)
    assert d["gpu_devfreq"]["cur_freq"] == 1300 and d["gpu_devfreq"]["max_freq"] == 1300
    assert "schedutil" in device.governor_warning(d)


def test_fingerprint_of_a_raspberry_pi_in_performance_mode(tmp_path):
    root = _tree(tmp_path, {
        "proc/device-tree/model": "Raspberry Pi 5 Model B Rev 1.0\x00",
        "etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n',
        "sys/class/thermal/thermal_zone0/type": "cpu-thermal", "sys/class/thermal/thermal_zone0/temp": "61200",
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor": "performance",
        "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq": "2400000",
    })
    d = device.details(root)
    assert d["board"].startswith("Raspberry Pi 5") and d["jetson"] is None
    assert d["os_release"] == "Debian GNU/Linux 12 (bookworm)" and d["thermal_c"] == {"cpu-thermal": 61.2}
    assert device.governor_warning(d) is None and device.cur_clocks_mhz(root) == [2400]
    assert device.temperature_rise({"cpu-thermal": 50.0}, {"cpu-thermal": 61.2}) == ("cpu-thermal", pytest.approx(11.2))
    assert device.temperature_rise({}, {}) is None


def test_probe_answers_say_what_to_install():
    bare = {"python": "3.11.2", "numpy": None, "runtimes": {}}
    line = probe.missing(bare, "pi", "/usr/bin/python3", ["onnxruntime"])
    assert "numpy" in line and "/usr/bin/python3 -m pip install numpy" in line and "\n" not in line
    ort_only = {"numpy": "2.0", "runtimes": {"onnxruntime": {"ok": True}, "openvino": {"ok": False,
                                                                                        "error": "not installed"}}}
    assert probe.missing(ort_only, "pi", "python3", ["onnxruntime", "openvino"]) is None
    line = probe.missing(ort_only, "pi", "python3", ["openvino"])
    assert "python3 -m pip install openvino" in line
    assert probe.available(ort_only) == {"onnxruntime"}
    assert probe.available({"numpy": "2", "runtimes": {"tensorrt": {"ok": "yes"}, "evil": {"ok": True}}}) == set()
    assert "pip install tensorrt" in probe.missing({"numpy": "2", "runtimes": {}}, "j", "python3", ["tensorrt"])


def test_sustained_windows_and_verdict():
    assert sustained.parse_duration("5m") == 300 and sustained.parse_duration("90") == 90
    assert sustained.parse_duration("1.5h") == 5400
    for bad in ("", "5 minutes", "-1s", "0", "2d"):
        with pytest.raises(ValueError):
            sustained.parse_duration(bad)
    assert sustained.window_plan(300) == (10, 30.0) and sustained.window_plan(2)[0] == 3
    assert sustained.window_plan(3600)[0] == 20
    w = [{"p50_ms": 10.0}, {"p50_ms": 10.5}, {"p50_ms": 12.0}]
    v = sustained.verdict(w)
    assert v["verdict"] == "throttling" and v["p50_change"] == pytest.approx(0.2)
    assert sustained.verdict(w[:2])["verdict"] == "steady"
    assert sustained.verdict([{"p50_ms": 1.0}])["verdict"] == "unknown"
    clock = itertools.count()
    res = sustained.run_windows(lambda: 0.001 * (1 + next(clock) / 5000), 0.6, thermal=lambda: {"z": 40.0},
                                clocks=lambda: [1000, 1200])
    assert len(res["windows"]) == 3 and all(x["runs"] > 0 and x["temp_max_c"] == 40.0 and x["cpu_mhz_mean"] == 1100
                                            for x in res["windows"])
    assert res["windows"][-1]["p50_ms"] > res["windows"][0]["p50_ms"]  # the fake device slows down


def test_agent_removes_its_folder_when_its_stdin_closes(tmp_path):
    """What the device does when the connection is lost: end of file on stdin -> folder removed, process
    group ended. A folder that is not one of ours is never removed."""
    p = payload.build()
    for name, removed in (("partialdeploy.AbCdEfGh12", True), ("not-ours", False)):
        d = tmp_path / name
        d.mkdir()
        (d / "pd.pyz").write_bytes(p.data)
        r = subprocess.run(payload.boot_command(sys.executable, "pd.pyz", p.sha256, "probe"), cwd=d,
                           stdin=subprocess.DEVNULL, capture_output=True, start_new_session=True, timeout=120)
        assert d.exists() != removed, (name, r.returncode, r.stderr[-500:])
        if removed:
            assert r.returncode != 0 and b'"probe"' not in r.stdout


def _pythons(version: str) -> list[str]:
    import glob

    return sorted(glob.glob(f"/root/.pyenv/versions/{version}.*/bin/python{version}") +
                  glob.glob(f"/usr/bin/python{version}"))


@pytest.mark.skipif(not _pythons("3.9") or not _pythons("3.6"),
                    reason="needs a Python 3.9 and a Python 3.6 interpreter (pyenv) to run the device side under them")
def test_device_side_runs_on_python_3_9_and_refuses_3_6(tmp_path):
    p = payload.build()
    d = tmp_path / "partialdeploy.Py39Py36ab"
    d.mkdir()
    (d / "pd.pyz").write_bytes(p.data)
    proc = subprocess.Popen(payload.boot_command(_pythons("3.9")[0], "pd.pyz", p.sha256, "probe"), cwd=d,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    proc.wait(timeout=120)
    proc.stdin.close()
    err = proc.stderr.read()
    proc.stderr.close()
    ans = json.loads(out.split("@@partialdeploy ", 1)[1])["probe"]
    assert proc.returncode == 0 and ans["python"].startswith("3.9"), err[-1000:]
    assert ans["identity"]["cores"] and "runtimes" in ans
    r = subprocess.run(payload.boot_command(_pythons("3.6")[0], "pd.pyz", p.sha256, "probe"), cwd=d,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == payload.EXIT_TOO_OLD and "Python 3.6 on this device is too old (need >= 3.9)" in r.stderr


def test_an_engine_built_after_the_export_travels_with_its_bundle(tmp_path):
    from partialdeploy.records import Artifact
    from partialdeploy.remote.profile import artifact_files

    b = tmp_path / "tensorrt" / "fp16"
    b.mkdir(parents=True)
    for n in ("model.onnx", "bundle.json", "build_engine.sh"):
        (b / n).write_text(n)
    entry = Artifact(target="tensorrt", precision="fp16", path="tensorrt/fp16",
                          files=[f"tensorrt/fp16/{n}" for n in ("model.onnx", "bundle.json", "build_engine.sh")])
    assert sorted(artifact_files(tmp_path, entry)) == sorted(entry.files)
    (b / "model.engine").write_bytes(b"engine")
    (b / "model.engine.json").write_text("{}")
    assert artifact_files(tmp_path, entry)[-2:] == ["tensorrt/fp16/model.engine", "tensorrt/fp16/model.engine.json"]
    ov = Artifact(target="openvino", precision="fp32", path="ov/model.xml")  # an old manifest: no files list
    (tmp_path / "ov").mkdir()
    (tmp_path / "ov" / "model.xml").write_text("<xml/>")
    (tmp_path / "ov" / "model.bin").write_bytes(b"w")
    assert artifact_files(tmp_path, ov) == ["ov/model.xml", "ov/model.bin"]


class _ProbedRunner(Runner):  # a runtime that exists only in this test: Runner.probe's default probes it
    name = "probert"
    requires = ("json",)


def test_the_device_probe_asks_each_backend():
    """remote/probe knows no runtime: a backend that says how to install it on a device is probed by
    its runner and named, with that install line, when the device lacks it."""
    import json as js

    from partialdeploy import backends

    backends.register(backends.Backend(name="probert", runner=f"{__name__}:_ProbedRunner",
                                       device_install="pip install probert"))
    try:
        assert "probert" in probe.runtimes()
        assert probe.probe(".", ["probert"])["runtimes"] == {"probert": {"ok": True, "version": js.__version__}}
        line = probe.missing({"numpy": "2", "runtimes": {}}, "pi", "python3", ["probert"])
        assert "pi cannot run probert" in line and "python3 -m pip install probert" in line
    finally:
        backends.unregister("probert")
    assert "probert" not in probe.runtimes() and "coreml" not in probe.runtimes()
