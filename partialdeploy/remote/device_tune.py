"""Device side of ``export --tune-on HOST`` (inside the zipapp): the export's measured selection times
its candidate forms here, on the device that will run them.

The job names each candidate (the artifact as exported, each built form, the fp32 sibling of an
INT8 artifact) by its main file under the pushed folder, its runtime and the runner options the
export's gate opened it with. Each is opened, fed the export's parity image in its static batch, and
timed by ``profiling.interleave.interleaved`` — the function the export uses on its own machine. A
form that does not open here is reported as skipped; the artifact as exported not opening is an
error. The answer (``tuned``) is read on the local side as untrusted data (``remote.tune``).
"""

from __future__ import annotations

import os

from partialdeploy.remote.channel import EXPORT_DIR, STOP, emit

FEED = "feed.npy"


def _open_all(base: str, candidates: list) -> tuple[dict, dict]:
    from partialdeploy.backends.runner import runner_for
    from partialdeploy.errors import first_line
    from partialdeploy.integrity import safe_join
    from partialdeploy.profiling.interleave import AS_EXPORTED

    runners: dict = {}
    skipped: dict = {}
    try:
        for c in candidates:
            name = str(c["name"])
            emit("progress", done=len(runners), total=len(candidates), label=f"opening {name}")
            try:
                runners[name] = runner_for(c["runtime"])(safe_join(base, c["path"], "candidate file"),
                                                         **dict(c.get("options") or {})).load()
            except Exception as e:  # noqa: BLE001 - a runtime's own exception type
                if name == AS_EXPORTED:
                    raise
                skipped[name] = f"does not open on the device: {type(e).__name__}: {first_line(e, 160)}"
    except BaseException:
        for r in runners.values():
            r.close()
        raise
    return runners, skipped


def run_tune(workdir: str, job: dict) -> int:
    """Open every candidate, time them interleaved within the job's budget, answer ``tuned``."""
    import numpy as np

    from partialdeploy.errors import first_line
    from partialdeploy.integrity import safe_join
    from partialdeploy.profiling.interleave import interleaved
    from partialdeploy.verification import static_batch

    base = os.path.join(workdir, EXPORT_DIR)
    x = np.load(safe_join(base, FEED, "feed"), allow_pickle=False)  # never code from a file
    try:
        runners, skipped = _open_all(base, list(job["candidates"]))
    except Exception as e:  # noqa: BLE001
        emit("error", message=f"the artifact as exported does not open on the device: {type(e).__name__}: "
             f"{first_line(e, 300)}", exit_code=1)
        return 1
    try:
        fns = {}
        for name, r in runners.items():
            meta = r.inputs()[0]
            feed = {meta.name: np.ascontiguousarray(np.repeat(x, static_batch(meta.shape) or 1, 0), np.float32)}
            fns[name] = lambda r=r, f=feed: r.infer(f)
        emit("progress", done=0, total=1, label=f"timing {len(fns)} forms interleaved")
        ms, rounds, per_round = interleaved(fns, float(job["budget_s"]))
    finally:
        for r in runners.values():
            r.close()
    if STOP.is_set():  # asked to stop (Ctrl-C there, the job's deadline): a cut timing is not answered
        emit("error", message="asked to stop while timing the forms: no timing sent", exit_code=1)
        return 1
    emit("tuned", device=job.get("device"), rounds=rounds, rounds_ms=per_round, latency_ms=ms, skipped=skipped)
    return 0
