"""examples/device-matrix.yml is runnable: its shell steps, for a small part of its matrix, run here on
the demo checkpoint in job order (export -> profile -> merge -> gate), and what they produce is what CI
would show: export and latency JUnit files that validate, a merged report, an HTML page, a summary."""

import itertools
import json
import os
import stat
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT

WF = ROOT / "examples" / "device-matrix.yml"
SMALL = {"target": ["onnxruntime"], "precision": ["fp32", "int8"], "device": ["local"]}  # the demo, quickly


def _combos(job: dict) -> list[dict]:
    m = (job.get("strategy") or {}).get("matrix") or {}
    keys = [k for k in m if k in SMALL]
    assert set(m) <= set(SMALL), f"a matrix key the test does not know: {set(m) - set(SMALL)}"
    for k in keys:
        assert set(SMALL[k]) <= set(m[k]) or k == "device", (k, m[k])
    return [dict(zip(keys, vals)) for vals in itertools.product(*(SMALL[k] for k in keys))] or [{}]


def _expand(script: str, combo: dict) -> str:
    for k, v in combo.items():
        script = script.replace("${{ matrix.%s }}" % k, v)
    assert "${{" not in script, script
    return script


@pytest.mark.slow  # two INT8 exports, profiles and gates: `make test-slow`
def test_device_matrix_example_runs_on_the_demo(tmp_path):
    import xmlschema

    wf = yaml.safe_load(WF.read_text())
    jobs = wf["jobs"]
    assert list(jobs) == ["export", "profile", "gate"] and jobs["profile"]["needs"] == "export"
    shim = tmp_path / "bin"
    shim.mkdir()
    exe = shim / "partialdeploy"
    exe.write_text(f"#!/bin/sh\nexec {sys.executable} -m partialdeploy \"$@\"\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    work = tmp_path / "ws"
    work.mkdir()
    env = {**os.environ, "PATH": f"{shim}:{os.environ['PATH']}", "CHECKPOINT": "", "CALIB": "",
           "BASELINE": str(tmp_path / "baseline.json"), "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md")}
    ran = []
    for name, job in jobs.items():
        for combo in _combos(job):
            for step in job["steps"]:
                if "run" not in step or step.get("name", "").startswith("install"):
                    continue  # actions (checkout, artifacts: one workspace here) and installs
                script = _expand(step["run"], combo)
                r = subprocess.run(["bash", "-e", "-c", script], cwd=work, env=env, capture_output=True, text=True,
                                   timeout=900)
                assert r.returncode == 0, f"{name} {combo} {step.get('name')}:\n{script}\n{r.stdout[-2000:]}{r.stderr}"
                ran.append((name, step.get("name")))
    assert {n for n, _ in ran} == {"export", "profile", "gate"}
    assert (work / "merged.json").exists() and "<svg" in (work / "public" / "index.html").read_text()
    schema = xmlschema.XMLSchema(ROOT / "tests" / "fixtures" / "junit.xsd")
    for x in (work / "junit").glob("export-*.xml"):
        schema.validate(str(x))
    assert len(list((work / "junit").glob("export-*.xml"))) == 2
    # a baseline now exists: the gate step compares, writes JUnit and the job summary, and passes
    (tmp_path / "baseline.json").write_bytes((work / "merged.json").read_bytes())
    gate = next(s for s in jobs["gate"]["steps"] if s.get("name", "").startswith("gate"))
    r = subprocess.run(["bash", "-e", "-c", gate["run"]], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    schema.validate(str(work / "junit" / "latency.xml"))
    assert "**Latency gate: passed**" in (tmp_path / "summary.md").read_text()
    # and a report without the int8 cells fails the gate (exit 1), fail closed
    m = json.loads((work / "merged.json").read_text())
    m["results"] = [x for x in m["results"] if x.get("precision") != "int8"]
    (work / "merged.json").write_text(json.dumps(m))
    r = subprocess.run(["bash", "-e", "-c", gate["run"]], cwd=work, env=env, capture_output=True, text=True)
    assert r.returncode == 1 and "baseline case(s) not measured" in r.stderr, r.stdout + r.stderr
