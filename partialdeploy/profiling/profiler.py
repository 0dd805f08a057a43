"""Latency profiling of exported artifacts (numpy only; runtimes come in through the runners).

How a number is made (docs/architecture.md, "Measuring"):

* every artifact is loaded once (load/compile time, first-inference time and peak resident
  memory are recorded on the way);
* the timed runs are split into ``blocks``; blocks are **cycled across all cases** (artifact ×
  batch) so that slow drift of a noisy machine hits every case alike, and every block starts with
  its own warm-up (ONNX Runtime's worker threads would otherwise still be spinning from the
  previous case);
* a block runs until its share of the run count AND its share of the minimum time are reached;
* statistics: p50/p90/p99, mean, std, min, max, coefficient of variation (a warning above the
  threshold, as trtexec does), throughput, median of block medians;
* per-layer times come from a separate pass with the runtime's profiler switched on (profiling
  slows inference, so it never touches the timed runs), mapped to the model family's block names.

The report is written (atomically) after every block round, so Ctrl-C keeps what was measured.
"""

from __future__ import annotations

import re
import resource
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from partialdeploy.errors import PartialDeployError, RuntimeUnavailable, UserError, first_line
from partialdeploy.records import ManifestEntry, ProfileResult
from partialdeploy.verify import MANIFEST

SCHEMA = "partialdeploy.profile/1"
MODES = ("latency", "throughput")


@dataclass
class Settings:
    batches: tuple[int, ...] = (1,)
    threads: int | None = None
    mode: str = "latency"  # latency: one request at a time; throughput: async requests in flight
    warmup: int = 10  # warm-up inferences per block ...
    warmup_time_s: float | None = None  # ... or warm up for this long instead
    runs: int | None = 100  # timed inferences (all blocks together) ...
    min_time_s: float | None = 1.0  # ... AND at least this much timed time (None: count only)
    max_time_s: float | None = 120.0  # safety cap per case (None: no cap)
    blocks: int = 3
    layers: bool = True
    layer_runs: int = 20
    top: int = 10
    cv_threshold: float = 0.10
    samples_cap: int = 2000  # raw samples kept in the report (for the distribution plot)
    seed: int = 0

    def validate(self) -> "Settings":
        if not self.batches or any(int(b) < 1 for b in self.batches):
            raise UserError(f"--batch must list positive integers, got {list(self.batches)}")
        if self.threads is not None and self.threads < 1:
            raise UserError(f"--threads must be >= 1, got {self.threads}")
        if self.mode not in MODES:
            raise UserError(f"--mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.runs is None and self.min_time_s is None:
            raise UserError("give a run count (--runs) and/or a minimum time (--min-time)")
        if self.runs is not None and self.runs < 1:
            raise UserError(f"--runs must be >= 1, got {self.runs}")
        if self.blocks < 1:
            raise UserError(f"--blocks must be >= 1, got {self.blocks}")
        if self.warmup < 0:
            raise UserError(f"--warmup must be >= 0, got {self.warmup}")
        return self


def parse_batches(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(t) for t in re.split(r"[,\s]+", text.strip()) if t)
    except ValueError:
        raise UserError(f"--batch takes comma-separated integers like 1,8,32, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise UserError(f"--batch takes positive integers like 1,8,32, got {text!r}")
    return tuple(dict.fromkeys(vals))


# ---------------------------------------------------------------- statistics

def summarize(samples_s, batch: int, wall_s: float | None = None) -> dict:
    """Latency statistics (ms) of per-inference times in seconds; throughput in images/s."""
    a = np.asarray(samples_s, dtype=np.float64) * 1e3
    if a.size == 0:
        return {}
    mean = float(a.mean())
    std = float(a.std(ddof=1)) if a.size > 1 else 0.0
    busy = wall_s if wall_s else float(a.sum()) / 1e3
    return {
        "latency_ms": {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
                       "p99": float(np.percentile(a, 99)), "mean": mean, "std": std,
                       "min": float(a.min()), "max": float(a.max())},
        "cv": std / mean if mean > 0 else 0.0,
        "runs": int(a.size),
        "timed_s": busy,
        "throughput_ips": batch * a.size / busy if busy > 0 else None,
    }


# ---------------------------------------------------------------- layer names -> the family's blocks

def block_of(name: str, model=None) -> str:
    """Map an ONNX / OpenVINO / TensorRT layer name to the official block it came from, as the
    model's family names it (``model``: an ArchSpec or a manifest's ``model`` dict; without one,
    whichever family recognises the name). ``/stages/stages.0/blocks/blocks.1/mlp/mlp.0/Conv`` ->
    ``stages.0.blocks.1``; ``node_Conv_12_layer2_1_conv1`` -> ``layer2.1``; deploy-form
    ``/body/body.5/fc1/Conv`` -> that body block's official name; anything else -> ``other``. Fused
    layers (``a + b``) take the first name that maps."""
    from partialdeploy import families

    return families.block_of_layer(name, model)


def layer_breakdown(rows: list[dict], top: int = 10, model=None) -> dict:
    """Top-N layers, time per block (``model``: see :func:`block_of`) and per op type. ``rows`` come in execution order:
    a layer whose name does not map (fused or renamed by the runtime, e.g. ``Gelu``) is counted in
    the block of the layer before it and flagged ``block_inferred``."""
    rows = [dict(r) for r in rows if r.get("time_ms", 0) > 0]
    total = sum(r["time_ms"] for r in rows)
    blocks: dict[str, float] = {}
    ops: dict[str, float] = {}
    prev = None
    from partialdeploy import families

    fam = families.family_of(model) if model is not None else None
    spec = families.spec_of(model) if fam is not None else None
    for r in rows:
        b = (fam.block_of_layer(r["name"], spec) or "other") if fam is not None else block_of(r["name"])
        if b == "other" and prev is not None:
            b, r["block_inferred"] = prev, True
        r["block"] = prev = b
        blocks[r["block"]] = blocks.get(r["block"], 0.0) + r["time_ms"]
        ops[r.get("op") or "?"] = ops.get(r.get("op") or "?", 0.0) + r["time_ms"]
    rows.sort(key=lambda r: -r["time_ms"])

    def pct(v):
        return 100.0 * v / total if total else 0.0

    return {
        "total_ms": total,
        "layer_count": len(rows),
        "top": [{**r, "pct": pct(r["time_ms"])} for r in rows[:top]],
        "blocks": [{"block": k, "time_ms": v, "pct": pct(v)} for k, v in sorted(blocks.items(), key=lambda kv: -kv[1])],
        "ops": [{"op": k, "time_ms": v, "pct": pct(v)} for k, v in sorted(ops.items(), key=lambda kv: -kv[1])],
    }


# ---------------------------------------------------------------- memory

def _status_kb(field_name: str) -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return float(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark of this process (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb / 1024
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return r / (2**20 if sys.platform == "darwin" else 1024)


def rss_mb() -> float | None:
    kb = _status_kb("VmRSS")
    return kb / 1024 if kb is not None else None


# ---------------------------------------------------------------- what to profile

def plan(source: str | Path, target: str | None = None) -> tuple[dict, list[ManifestEntry], Path]:
    """(manifest-ish header, artifact entries, base dir) for an export dir, a manifest.json, or
    a single model file (``target`` from the suffix unless given)."""
    from partialdeploy.runners.base import canonical_target, target_for_path

    src = Path(source)
    if not src.exists():
        raise UserError(f"no such file or directory: {src}")
    manifest_path = src / MANIFEST if src.is_dir() else src if src.name == MANIFEST else None
    if manifest_path is not None and manifest_path.exists():
        from partialdeploy.verify import entries, load_manifest, check_artifact_files

        m = load_manifest(manifest_path)
        arts = [a for a in entries(m) if a.path]
        if target:
            want = canonical_target(target)
            arts = [a for a in arts if canonical_target(a.target) == want]
        if not arts:
            raise UserError(f"{manifest_path} lists no artifacts" + (f" for target {target}" if target else ""))
        for a in arts:  # every artifact is checked against its sha256 before anything is loaded
            check_artifact_files(manifest_path.parent, a)
        header = {"model": m.get("model", {}), "preprocessing": m.get("preprocessing", {}),
                  "manifest": str(manifest_path), "manifest_tool": m.get("tool")}
        return header, arts, manifest_path.parent
    if src.is_dir() and src.suffix.lower() not in (".mlpackage",) and target is None:
        try:
            tgt = target_for_path(src)
        except UserError:
            from partialdeploy.backends import suffixes

            raise UserError(f"{src} has no {MANIFEST}: profile an export directory, a manifest or a model file "
                            f"({', '.join(suffixes())})") from None
    else:
        tgt = target or target_for_path(src)
    from partialdeploy.verify import verify_inside_export

    verify_inside_export(src)  # a file inside an export directory is checked against its manifest
    entry = ManifestEntry(target=tgt, precision="?", path=src.name)
    return {"model": {"name": src.stem}, "preprocessing": {}, "manifest": None}, [entry], src.parent


# ---------------------------------------------------------------- the measurement

def mode_refusal(runner_cls, mode: str) -> str | None:
    """Why ``runner_cls`` cannot measure ``mode`` (None: it can). Throughput keeps several requests in
    flight, which needs the runner's declared ASYNC_QUEUE; it is never silently measured as latency."""
    from partialdeploy import backends
    from partialdeploy.runners.base import ASYNC_QUEUE

    if mode != "throughput" or ASYNC_QUEUE in runner_cls.capabilities:
        return None
    able = sorted(b.name for b in backends.all_backends() if ASYNC_QUEUE in b.runner_class().capabilities)
    return (f"--mode throughput needs several requests in flight (an async infer queue), which the "
            f"{runner_cls.name} runner does not have (it runs one request at a time; {', '.join(able) or 'none'} "
            f"can): profile it with --mode latency")


@dataclass
class _Case:
    key: int  # artifact index
    batch: int
    result: ProfileResult
    feed: dict | None = None
    samples: list = field(default_factory=list)
    block_medians: list = field(default_factory=list)
    wall_s: float = 0.0
    async_lat: list = field(default_factory=list)


def _make_feed(metas, batch: int, size, rng) -> dict:
    feed = {}
    for m in metas:
        shape = list(m.shape)
        if shape:
            shape[0] = batch
        for i in range(1, len(shape)):
            if not isinstance(shape[i], int):
                # dynamic spatial dims: use the manifest's preprocessing size (NCHW)
                hw = list(size or (224, 224))
                shape[i] = 3 if i == 1 else hw[0] if i == 2 else hw[-1]
        dt = np.dtype(m.dtype if m.dtype in ("float32", "float16", "float64", "int64", "int32", "uint8") else "float32")
        arr = rng.standard_normal(shape).astype(dt) if dt.kind == "f" else np.zeros(shape, dt)
        feed[m.name] = arr
    return feed


def _runner_options(cls, settings: Settings, layers: bool, tmp: str | None, art: ManifestEntry) -> dict:
    opts = cls.artifact_options(art, settings.mode)
    if layers:
        opts["profile_layers"] = True
        if tmp:
            opts["scratch_dir"] = tmp  # where a runtime's profiler may write its files
    return opts


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
            from partialdeploy.runners.base import runner_for

            why = runner_for(self.artifacts[0].target).unavailable_reason()
            if why:
                raise RuntimeUnavailable(why)

    # -- report skeleton
    def _init_report(self) -> dict:
        from partialdeploy import __version__
        from partialdeploy.envinfo import device_label, fingerprint

        env = fingerprint(self.settings.threads)
        self.report = {
            "schema": SCHEMA,
            "tool": {"name": "partialdeploy", "version": __version__},
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "device": self.device or device_label(env),
            "source": self.source,
            "model": self.header.get("model", {}),
            "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.settings).items()},
            "environment": env,
            "complete": False,
            "interrupted": False,
            "results": [],
        }
        self.results = []
        self.written = False
        return self.report

    def snapshot(self) -> dict:
        """The report as JSON types (its results serialized by ProfileResult.to_dict)."""
        return {**self.report, "results": [r.to_dict() for r in self.results]}

    def save(self) -> None:
        """Write the report so far (atomically); a run that has measured nothing yet never replaces an
        existing report (report_file.write)."""
        from partialdeploy import report_file

        if self.out_path is not None and report_file.write(self.snapshot(), self.out_path):
            self.written = True  # this run's report is on disk (False: an existing report was kept)

    def run(self) -> dict:
        """Profile every case; one run at a time per report file (report_file.ReportLock)."""
        from contextlib import nullcontext

        from partialdeploy.report_file import ReportLock

        with ReportLock(self.out_path) if self.out_path is not None else nullcontext():
            return self._run()

    def _run(self) -> dict:
        self._init_report()
        cases: list[_Case] = []
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
            self.report["environment"]["peak_rss_process_mb"] = round(peak_rss_mb(), 1)
            self.save()
        return self.snapshot()

    # -- phase 1: load every artifact, first inference per batch, memory
    def _load_all(self) -> list[_Case]:
        s = self.settings
        rng = np.random.default_rng(s.seed)
        size = (self.header.get("preprocessing") or {}).get("size")
        cases: list[_Case] = []
        for i, art in enumerate(self.artifacts):
            cases += self._load_one(i, art, rng, size)
        if not cases and not any(r.status == "error" for r in self.results):
            self.report["note"] = "nothing could run on this machine"
        return cases

    def _load_one(self, i: int, art: ManifestEntry, rng, size) -> list[_Case]:
        """Open one artifact through its runner (as its manifest entry records), then one first
        inference per batch; every batch gets a result row, ok or the reason it is not."""
        from partialdeploy.runners.base import canonical_target, runner_for

        s = self.settings
        tgt = canonical_target(art.target or "?")
        base = {"target": art.target, "runtime": tgt, "precision": art.precision,
                "artifact": art.path, "mode": s.mode, "threads": s.threads,
                **({"sha256": art.sha256} if art.sha256 else {})}

        def add(batch, status, reason=None, **extra) -> ProfileResult:
            res = ProfileResult(**base, batch=batch, status=status, reason=reason or None, **extra)
            self.results.append(res)
            return res

        def every_batch(status, reason) -> list[_Case]:
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
        scope = "artifact" if reset_peak_rss() else "process"
        rss0 = rss_mb()
        try:
            runner = cls(path, threads=s.threads, **_runner_options(cls, s, False, None, art))
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
        mem = {"peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_load_mb": round(rss0, 1) if rss0 else None,
               "scope": scope}
        for c in cases:
            c.result.memory = mem
        return cases

    def _first_inferences(self, i: int, runner, metas, add, rng, size) -> list[_Case]:
        cases = []
        static = metas[0].shape[0] if metas and metas[0].shape and isinstance(metas[0].shape[0], int) else None
        for b in self.settings.batches:
            if static is not None and b != static:
                add(b, "skipped", f"artifact has a static batch of {static} (export with --dynamic-batch "
                    f"to profile batch {b})")
                continue
            feed = _make_feed(metas, b, size, rng)
            try:
                t0 = time.perf_counter()
                runner.infer(feed)
                first = time.perf_counter() - t0
            except KeyboardInterrupt:
                raise
            except Exception as e:
                add(b, "error", f"inference failed: {first_line(e, 200)}")
                continue
            res = add(b, "ok", None, load_time_s=runner.load_time_s, first_inference_ms=first * 1e3,
                      clock=None if runner.clock == "perf_counter" else runner.clock,
                      input_shapes={k: list(v.shape) for k, v in feed.items()})
            cases.append(_Case(i, b, res, feed))
        return cases

    # -- phase 2: timed blocks cycled over the cases
    def _timed(self, cases: list[_Case]) -> None:
        from partialdeploy.runners.base import ASYNC_QUEUE

        s = self.settings
        if not cases:
            return
        per_runs = None if s.runs is None else max(1, -(-s.runs // s.blocks))
        per_time = None if s.min_time_s is None else s.min_time_s / s.blocks
        cap = None if s.max_time_s is None else s.max_time_s / s.blocks
        total = s.blocks * len(cases)
        done = 0
        for blk in range(s.blocks):
            for c in cases:
                runner = self._runners[c.key]
                label = f"{c.result.target}/{c.result.precision} b{c.batch} block {blk + 1}/{s.blocks}"
                self.progress(done, total, label)
                self.before_block(c.result)
                if s.mode == "throughput" and runner.can(ASYNC_QUEUE):
                    self._block_async(runner, c, per_runs, per_time, cap)
                else:
                    self._block_sync(runner, c, per_runs, per_time, cap)
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

    def _warmup(self, runner, feed) -> None:
        s = self.settings
        if s.warmup_time_s:
            t_end = time.perf_counter() + s.warmup_time_s
            while time.perf_counter() < t_end and not self.should_stop():
                runner.infer(feed)
        else:
            for _ in range(s.warmup):
                runner.infer(feed)

    def _block_sync(self, runner, c: _Case, n, t_min, cap) -> None:
        self._warmup(runner, c.feed)
        out: list[float] = []
        infer, feed, clock = runner.timed_infer, c.feed, time.perf_counter
        t_start = clock()
        try:
            while True:
                out.append(infer(feed)[1])  # the runner's own time (TensorRT: CUDA events)
                el = clock() - t_start
                if (n is None or len(out) >= n) and (t_min is None or el >= t_min):
                    break
                if (cap is not None and el >= cap) or self.should_stop():
                    break
        finally:
            c.samples.extend(out)
            if out:
                c.block_medians.append(float(np.median(out)))
                c.wall_s += float(sum(out))

    def _block_async(self, runner, c: _Case, n, t_min, cap) -> None:
        self._warmup(runner, c.feed)
        if cap is not None and t_min is not None:
            t_min = min(t_min, cap)
        wall, lat = runner.run_async(c.feed, count=n, min_time_s=t_min, should_stop=self.should_stop)
        c.samples.extend(lat)
        c.wall_s += wall
        c.async_lat.append(len(lat))
        if lat:
            c.block_medians.append(float(np.median(lat)))
        c.result.requests_in_flight = runner.requests_in_flight()

    # -- phase 3: per-layer pass with the profiler on
    def _layers(self, cases: list[_Case]) -> None:
        from partialdeploy.runners.base import runner_for

        s = self.settings
        seen = set()
        for c in cases:
            if c.key in seen:
                continue
            seen.add(c.key)
            art = self.artifacts[c.key]
            tgt = c.result.runtime
            self.progress(0, 1, f"per-layer profile {art.target}/{art.precision}")
            with tempfile.TemporaryDirectory(prefix="pd-layers-") as tmp:
                try:
                    cls = runner_for(tgt)
                    r = cls(self.base / art.path, threads=s.threads, **_runner_options(cls, s, True, tmp, art))
                    r.load()
                    for _ in range(max(2, min(s.warmup, 5))):
                        r.infer(c.feed)
                    r.reset_layer_times()  # counters of the warm-up runs are not wanted
                    for _ in range(s.layer_runs):
                        r.infer(c.feed)
                    rows = r.layer_times()
                    r.close()
                except KeyboardInterrupt:
                    raise
                except Exception as e:
                    c.result.layers_error = first_line(e, 200)
                    continue
            if rows:
                lb = layer_breakdown(rows, s.top, self.header.get("model") or None)
                lb.update({"batch": c.batch, "runs": s.layer_runs, "source": cls.layer_source or tgt})
                c.result.layers = lb

    # -- statistics into the results
    def _finish(self, cases: list[_Case]) -> None:
        s = self.settings
        for c in cases:
            r = c.result
            if not c.samples:
                if self.report.get("interrupted") and r.status == "ok":
                    r.status, r.reason = "interrupted", "interrupted before any timed run"
                continue
            st = summarize(c.samples, c.batch, c.wall_s if c.async_lat else None)
            r.latency_ms, r.cv, r.runs, r.timed_s, r.throughput_ips = (st["latency_ms"], st["cv"], st["runs"],
                                                                       st["timed_s"], st["throughput_ips"])
            if r.status == "interrupted":
                r.status = "ok"
            bm = np.asarray(c.block_medians) * 1e3
            r.blocks = len(bm)
            r.block_p50_ms = [float(v) for v in bm]
            r.median_of_block_medians_ms = float(np.median(bm)) if len(bm) else None
            warns = []
            if st["cv"] > s.cv_threshold:
                warns.append(f"latency varies: coefficient of variation {100 * st['cv']:.1f}% > "
                             f"{100 * s.cv_threshold:.0f}% (busy or throttling machine?): treat with care")
            if len(bm) > 1 and bm.min() > 0 and (bm.max() - bm.min()) / np.median(bm) > s.cv_threshold:
                warns.append(f"block medians drift {bm.min():.3g}-{bm.max():.3g} ms between blocks")
            if self.report.get("interrupted"):
                warns.append(f"interrupted: {len(c.samples)} timed runs kept")
            r.warnings = warns
            samples = np.asarray(c.samples) * 1e3
            if len(samples) > s.samples_cap:
                samples = samples[np.linspace(0, len(samples) - 1, s.samples_cap).astype(int)]
            r.samples_ms = [round(float(v), 4) for v in samples]
        self.report["summary"] = {k: sum(r.status == k for r in self.results)
                                  for k in ("ok", "skipped", "not_run", "error")}


def default_report_path(source: str | Path) -> Path:
    """Where ``profile`` writes its report unless told: DIR/profile.json for an export directory,
    else beside the model file."""
    src = Path(source)
    return (src if src.is_dir() and (src / MANIFEST).exists() else src.parent) / "profile.json"


def profile(source, settings: Settings | None = None, target: str | None = None, out_path=None, **kw) -> dict:
    """Profile ``source`` (export dir, manifest or model file); returns the report dict."""
    return Profiler(source, settings, target, out_path, **kw).run()


def exit_code(report: dict) -> int:
    """0 when everything that could run here ran; 1 if an artifact failed to load or run; 2 when
    nothing was measured (every case skipped or not runnable here: nothing to do with these flags)."""
    from partialdeploy.report_file import measured_count

    if any(r.get("status") == "error" for r in report.get("results", [])):
        return 1
    return 0 if measured_count(report) else 2
