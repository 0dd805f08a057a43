"""Device side of ``profile --remote`` and ``build-engine --remote`` (inside the zipapp; numpy and
the runtimes are imported here, never by the agent's probe).

The measurement is ``profiling.profiler.Profiler``'s, unchanged; :class:`DeviceProfiler` adds what an edge
device needs around it: thermal zones read before and after each case's blocks, ``--cooldown``
pauses after each block, partial reports streamed home after every round (a lost connection keeps
them), the device fingerprint, governor / temperature-rise warnings, and ``--sustained`` windows.
"""

from __future__ import annotations

import json
import os
import sys
import time

from partialdeploy.profiling.profiler import Profiler
from partialdeploy.profiling.settings import Settings
from partialdeploy.records import ProfileResult
from partialdeploy.remote import device
from partialdeploy.remote.channel import EXPORT_DIR, STOP, emit


class DeviceProfiler(Profiler):
    def __init__(self, *a, cooldown_s: float = 0.0, **kw):
        super().__init__(*a, **kw)
        self.cooldown_s = cooldown_s
        self.thermal: dict = {}  # id(result) -> {"before": {...}, "after": {...}}

    def before_block(self, result: ProfileResult) -> None:
        self.thermal.setdefault(id(result), {"before": device.thermal_zones()})

    def after_block(self, result: ProfileResult) -> None:
        self.thermal[id(result)]["after"] = device.thermal_zones()
        pause(self.cooldown_s)

    def save(self) -> None:
        super().save()
        emit("partial", report=self.snapshot())

    def annotate(self) -> None:
        """Thermal readings and warnings into the results (their ``other`` keys travel unchanged)."""
        det = self.report["environment"].get("device") or {}
        gov = device.governor_warning(det)
        for r in self.results:
            th = self.thermal.get(id(r))
            if not r.measured:
                continue
            warns = list(r.warnings or [])
            if gov:
                warns.append(gov)
            if th and th.get("before") and th.get("after"):
                r.other["thermal_c"] = th
                rise = device.temperature_rise(th["before"], th["after"])
                if rise and rise[1] > device.TEMP_RISE_WARN_C:
                    warns.append(f"{rise[0]} rose {rise[1]:.1f} °C during this case "
                                 f"(> {device.TEMP_RISE_WARN_C:.0f} °C): the device heats up; consider --cooldown "
                                 "or --sustained")
            r.warnings = warns


def pause(seconds: float) -> None:
    end = time.monotonic() + (seconds or 0)
    while time.monotonic() < end and not STOP.is_set():
        time.sleep(min(0.2, max(0.0, end - time.monotonic())))


def _sustained(prof: DeviceProfiler, duration_s: float) -> None:
    import numpy as np

    from partialdeploy.remote.sustained import run_windows
    from partialdeploy.backends.runner import runner_for

    s = prof.settings
    by_path = {a.path: a for a in prof.artifacts}
    for r in [r for r in prof.results if r.measured]:
        if STOP.is_set():
            break
        art = by_path.get(r.artifact)
        if art is None:
            continue
        pause(prof.cooldown_s)
        emit("progress", done=0, total=1, label=f"sustained {r.target}/{r.precision} b{r.batch}")
        cls = runner_for(r.runtime)
        runner = cls(prof.base / art.path, threads=s.threads, **cls.artifact_options(art, s.mode))
        try:
            runner.load()
            rng = np.random.default_rng(s.seed)
            shapes = r.input_shapes or {}
            feed = {m.name: rng.standard_normal(shapes.get(m.name, [1])).astype(m.dtype) for m in runner.inputs()}
            res = run_windows(lambda rn=runner, fd=feed: rn.timed_infer(fd)[1], duration_s, device.thermal_zones,
                              device.cur_clocks_mhz, STOP.is_set)
        finally:
            runner.close()
        r.other["sustained"] = res
        if res.get("verdict") == "throttling":
            r.warnings = list(r.warnings or []) + [f"sustained {duration_s:g} s: throttling — {res['reason']}"]


def run_profile(workdir: str, job: dict) -> int:
    st = dict(job["settings"])
    st["batches"] = tuple(st.get("batches") or (1,))
    settings = Settings(**st)
    prof = DeviceProfiler(os.path.join(workdir, EXPORT_DIR), settings, job.get("target"),
                          out_path=os.path.join(workdir, "profile.json"), device=job.get("device"),
                          progress=lambda d, t, lab: emit("progress", done=d, total=t, label=lab),
                          should_stop=STOP.is_set, cooldown_s=float(job.get("cooldown_s") or 0))
    details = device.details()
    prof.run()
    env = prof.report["environment"]
    env["device"] = details
    env["device"]["thermal_c_end"] = device.thermal_zones()
    env["python_executable"] = os.path.realpath(sys.executable)
    if job.get("sustained_s") and not prof.report.get("interrupted"):
        try:
            _sustained(prof, float(job["sustained_s"]))
        except KeyboardInterrupt:
            prof.report["interrupted"] = True
    if STOP.is_set():
        prof.report["interrupted"] = True
    prof.report["settings"].update(cooldown_s=float(job.get("cooldown_s") or 0),
                                   sustained_s=job.get("sustained_s"))
    prof.annotate()
    prof.report["warnings"] = [w for w in [device.governor_warning(details)] if w]
    emit("result", report=prof.snapshot())
    return 0


def run_build(workdir: str, job: dict) -> int:
    """Build and gate the TensorRT engine of the pushed bundle; the sidecar records the device."""
    from partialdeploy.remote.probe import identity
    from partialdeploy.backends.tensorrt.build import build_engine
    from partialdeploy.integrity import file_sha256

    bundle = os.path.join(workdir, EXPORT_DIR, job["bundle"])
    opts = job.get("options") or {}
    side = build_engine(bundle, precision=opts.get("precision"), workspace_mb=opts.get("workspace_mb"),
                        any_tensorrt=bool(opts.get("any_tensorrt")),
                        progress=lambda m: emit("progress", done=0, total=0, label=str(m)))
    side["built_on"] = {**identity(), "device": job.get("device"), "details": device.details()}
    side_path = os.path.join(bundle, "model.engine.json")
    with open(side_path, "w") as f:
        json.dump(side, f, indent=1, default=str)
    emit("built", sidecar=side, engine_sha256=file_sha256(os.path.join(bundle, "model.engine")))
    return 0
