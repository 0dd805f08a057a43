"""The profiler: every artifact loaded once, timed blocks cycled across all cases, a per-layer pass,
the report written after every block round (docs/architecture.md, "Measuring").

* every artifact is loaded once (load/compile time, first-inference time and peak resident
  memory are recorded on the way);
* the timed runs are split into ``blocks``; blocks are **cycled across all cases** (artifact ×
  batch) so that slow drift of a noisy machine hits every case alike, and every block starts with
  its own warm-up (ONNX Runtime's worker threads would otherwise still be spinning from the
  previous case) — ``timed``;
* statistics: p50/p90/p99, mean, std, min, max, coefficient of variation (a warning above the
  threshold, as trtexec does), throughput, median of block medians — ``results``;
* per-layer times come from a separate pass with the runtime's profiler switched on — ``layers``.

The report is written (atomically) after every block round, so Ctrl-C keeps what was measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from partialdeploy.errors import PartialDeployError, RuntimeUnavailable, UserError, first_line
from partialdeploy.profiling import memory, timed
from partialdeploy.profiling.layers import layer_pass
from partialdeploy.profiling.results import fill_result, new_report, status_counts
from partialdeploy.profiling.settings import Settings, mode_refusal, runner_options
from partialdeploy.profiling.source import plan
from partialdeploy.profiling.timed import Case
from partialdeploy.records import Artifact, ProfileResult


class Profiler:
    """Profile every case; call :meth:`run`. ``progress(done, total, label)`` is called as blocks
    finish; ``should_stop()`` is polled between inferences (Ctrl-C works too)."""

    def __init__(self, source, settings: Settings | None = None, target: str | None = None,
                 out_path: str | Path | None = None, progress: Callable | None = None,
                 should_stop: Callable[[], bool] | None = None, device: str | None = None):
        self.settings = (settings or Settings()).validate()
        self.header, self.artifacts, self.base = plan(source, target)
        self.source, self.target = str(source), target
        self.out_path = Path(out_path) if out_path else None
        self.progress = progress or (lambda done, total, label: None)
        self.should_stop = should_stop or (lambda: False)
        self.device = device
        self.report: dict = {}
        self.results: list[ProfileResult] = []
        self._runners: dict[int, object] = {}
        self.written = False  # whether this run wrote out_path (an empty run never replaces a report)
        if self.header.get("manifest") is None:  # a single file that cannot run here is an error (exit 2)
            from partialdeploy.backends.runner import runner_for

            why = runner_for(self.artifacts[0].target).unavailable_reason()
            if why:
                raise RuntimeUnavailable(why)

    def snapshot(self) -> dict:
        """The report as JSON types (its results serialized by ProfileResult.to_dict)."""
        return {**self.report, "results": [r.to_dict() for r in self.results]}

    def save(self) -> None:
        """Write the report so far (atomically); a run that has measured nothing yet never replaces an
        existing report (report.file.write)."""
        from partialdeploy.report import file as report_file

        if self.out_path is not None and report_file.write(self.snapshot(), self.out_path):
            self.written = True  # this run's report is on disk (False: an existing report was kept)

    def run(self) -> dict:
        """Profile every case; one run at a time per report file (report.file.ReportLock)."""
        from contextlib import nullcontext

        from partialdeploy.report.file import ReportLock

        with ReportLock(self.out_path) if self.out_path is not None else nullcontext():
            return self._run()

    def _run(self) -> dict:
        self.report = new_report(self.settings, self.source, self.header.get("model", {}), self.device)
        self.results, self.written = [], False
        cases: list[Case] = []
        try:
            cases = self._load_all()
            self.save()
            self._timed(cases)
            if self.settings.layers:
                self._layers(cases)
            self.report["complete"] = True
        except KeyboardInterrupt:
            self.report["interrupted"] = True
        finally:
            self._finish(cases)
            for r in self._runners.values():
                try:
                    r.close()
                except Exception:
                    pass
            self._runners.clear()
            self.report["environment"]["peak_rss_process_mb"] = round(memory.peak_rss_mb(), 1)
            self.save()
        return self.snapshot()

    # -- phase 1: load every artifact, first inference per batch, memory
    def _load_all(self) -> list[Case]:
        s = self.settings
        rng = np.random.default_rng(s.seed)
        size = (self.header.get("preprocessing") or {}).get("size")
        cases: list[Case] = []
        for i, art in enumerate(self.artifacts):
            cases += self._load_one(i, art, rng, size)
        if not cases and not any(r.status == "error" for r in self.results):
            self.report["note"] = "nothing could run on this machine"
        return cases

    def _load_one(self, i: int, art: Artifact, rng, size) -> list[Case]:
        """Open one artifact through its runner (as its manifest entry records), then one first
        inference per batch; every batch gets a result row, ok or the reason it is not."""
        from partialdeploy.backends import canonical
        from partialdeploy.backends.runner import runner_for

        s = self.settings
        tgt = canonical(art.target or "?")
        base = {"target": art.target, "runtime": tgt, "precision": art.precision,
                "artifact": art.path, "mode": s.mode, "threads": s.threads,
                **({"sha256": art.sha256} if art.sha256 else {})}

        def add(batch, status, reason=None, **extra) -> ProfileResult:
            res = ProfileResult(**base, batch=batch, status=status, reason=reason or None, **extra)
            self.results.append(res)
            return res

        def every_batch(status, reason) -> list[Case]:
            for b in s.batches:
                add(b, status, reason)
            return []

        path = self.base / art.path
        try:
            cls = runner_for(tgt)
        except UserError as e:
            return every_batch("not_run", str(e))
        base["runtime_version"] = cls.runtime_version()
        why = cls.unavailable_reason()
        if why:
            return every_batch("not_run", f"not run here: {why}")
        refused = mode_refusal(cls, s.mode)
        if refused:
            return every_batch("skipped", refused)
        if not path.exists():
            return every_batch("error", f"artifact missing: {path}")
        self.progress(i, len(self.artifacts), f"loading {art.target}/{art.precision}")
        scope = "artifact" if memory.reset_peak_rss() else "process"
        rss0 = memory.rss_mb()
        try:
            runner = cls(path, threads=s.threads, **runner_options(cls, s, art))
            runner.load()
            metas = runner.inputs()
        except PartialDeployError as e:
            if isinstance(e, UserError) and self.header.get("manifest") is None:
                raise  # the one file asked for cannot be opened: bad input (exit 2), not a failed run
            return every_batch("error", str(e))
        except Exception as e:  # a runtime's own exception type
            return every_batch("error", f"cannot load: {type(e).__name__}: {first_line(e, 200)}")
        self._runners[i] = runner
        cp = runner.compute_precision()
        if cp:  # read back from the runtime: a bf16 run is never reported as fp32
            base["compute_precision"] = cp
        cases = self._first_inferences(i, runner, metas, add, rng, size)
        mem = {"peak_rss_mb": round(memory.peak_rss_mb(), 1),
               "rss_before_load_mb": round(rss0, 1) if rss0 else None, "scope": scope}
        for c in cases:
            c.result.memory = mem
        return cases

    def _first_inferences(self, i: int, runner, metas, add, rng, size) -> list[Case]:
        cases = []
        static = metas[0].shape[0] if metas and metas[0].shape and isinstance(metas[0].shape[0], int) else None
        for b in self.settings.batches:
            if static is not None and b != static:
                add(b, "skipped", f"artifact has a static batch of {static} (export with --dynamic-batch "
                    f"to profile batch {b})")
                continue
            feed = timed.make_feed(metas, b, size, rng)
            try:
                first = timed.first_inference_s(runner, feed)
            except KeyboardInterrupt:
                raise
            except Exception as e:
                add(b, "error", f"inference failed: {first_line(e, 200)}")
                continue
            res = add(b, "ok", None, load_time_s=runner.load_time_s, first_inference_ms=first * 1e3,
                      clock=None if runner.clock == "perf_counter" else runner.clock,
                      input_shapes={k: list(v.shape) for k, v in feed.items()})
            cases.append(Case(i, b, res, feed))
        return cases

    # -- phase 2: timed blocks cycled over the cases
    def _timed(self, cases: list[Case]) -> None:
        s = self.settings
        if not cases:
            return
        share = timed.Share.of(s)
        total, done = s.blocks * len(cases), 0
        for blk in range(s.blocks):
            for c in cases:
                label = f"{c.result.target}/{c.result.precision} b{c.batch} block {blk + 1}/{s.blocks}"
                self.progress(done, total, label)
                self.before_block(c.result)
                timed.run_block(self._runners[c.key], c, s, share, self.should_stop)
                self.after_block(c.result)
                done += 1
                self.progress(done, total, label)
                if self.should_stop():
                    raise KeyboardInterrupt
            self._finish(cases)  # partial results on disk after every round
            self.save()

    def before_block(self, result: ProfileResult) -> None:
        """Hook: called before every timed block of a case (the remote agent reads temperatures)."""

    def after_block(self, result: ProfileResult) -> None:
        """Hook: called after every timed block of a case (the remote agent reads temperatures and
        pauses for --cooldown)."""

    # -- phase 3: per-layer pass with the profiler on, once per artifact
    def _layers(self, cases: list[Case]) -> None:
        seen = set()
        for c in cases:
            if c.key in seen:
                continue
            seen.add(c.key)
            art = self.artifacts[c.key]
            self.progress(0, 1, f"per-layer profile {art.target}/{art.precision}")
            layer_pass(c, art, self.base, self.settings, self.header.get("model") or None)

    # -- statistics into the results
    def _finish(self, cases: list[Case]) -> None:
        for c in cases:
            fill_result(c, self.settings, bool(self.report.get("interrupted")))
        self.report["summary"] = status_counts(self.results)


def profile(source, settings: Settings | None = None, target: str | None = None, out_path=None, **kw) -> dict:
    """Profile ``source`` (export dir, manifest or model file); returns the report dict."""
    return Profiler(source, settings, target, out_path, **kw).run()


def exit_code(report: dict) -> int:
    """0 when everything that could run here ran; 1 if an artifact failed to load or run; 2 when
    nothing was measured (every case skipped or not runnable here: nothing to do with these flags)."""
    from partialdeploy.report.file import measured_count

    if any(r.get("status") == "error" for r in report.get("results", [])):
        return 1
    return 0 if measured_count(report) else 2
