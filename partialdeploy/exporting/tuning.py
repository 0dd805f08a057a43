"""Measured choices at export, on the machine that will run the artifact (``--tune-budget SECONDS``).

After a target's artifact passed its gate, :func:`tune` times, interleaved in one cycle:

* the artifact as recorded;
* its other correct forms (``Artifact.forms``: e.g. OpenVINO INT8 with the layers NNCF left in float
  computed in bf16 on a CPU with bf16 units) — each one is a way to open the same files, described
  by what it merges into the artifact's ``extra`` (the runner reads it through ``artifact_options``);
* for an INT8 artifact, its fp32 sibling: the verified fp32 ONNX the target converted from, opened in
  the same runtime.

The fastest form that passes the gate (the same run-and-gate path as every artifact,
``verification.verify_artifact``) is kept. Every timing goes to ``extra["tuning"]``; an INT8 artifact
that is slower than its fp32 sibling is said so in ``extra["int8_speed"]``, in a note of the artifact
and in the export's notes (never emitted silently). Timing follows docs/architecture.md, "Measuring":
blocks with warm-up, cycled round-robin, median of block medians (``profiling.interleave``).

The timing runs on this machine, or with ``--tune-on HOST`` (``ExportOptions.tune_on``) on that device
(``remote.tune.time_on_device``): the forms are built and gated here either way, and ``extra["tuning"]``
says where they were timed (``timed_on``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from partialdeploy.profiling.interleave import (AS_EXPORTED, FP32_SIBLING, interleaved, method, rounds_faster,
                                               wins_needed)

SLOWER = 1.0  # an INT8 artifact whose latency ratio to fp32 exceeds this is reported as slower
HERE = "this machine"


@dataclass
class Form:
    """Another correct way to run an artifact's files: ``extra`` is merged into the artifact's extra
    when this form is kept (as for ``verification.Alternative``)."""

    name: str
    extra: dict
    note: str = ""
    # a form with other files: ``build(art_dir)`` writes its main file into the artifact's directory and
    # returns its name there (called only within the budget); kept -> it replaces the artifact's file,
    # and the files beside it with the artifact's other suffixes (an OpenVINO .bin) replace theirs
    build: Callable[[Path], str] | None = None
    path: str | None = None
    # seconds the build is expected to take (e.g. how long the artifact's own quantization took): a
    # form whose build does not fit in what is left of the budget is skipped, and said so
    cost_s: float = 0.0


def merged(extra: dict, more: dict) -> dict:
    """``extra`` with ``more`` merged in, dict values (e.g. ``runtime_config``) merged one level deep."""
    out = dict(extra)
    for k, v in more.items():
        out[k] = {**out[k], **v} if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _opener(ctx, art, art_dir: Path):
    """(runner class, function extra -> loaded runner of the artifact opened that way)."""
    from partialdeploy import backends
    from dataclasses import replace

    from partialdeploy.verification import open_options

    cls = backends.backend_of_target(art.target).runner_class()

    def open_with(extra: dict, path: str | None = None):
        return cls(Path(art_dir) / (path or art.path),
                   **open_options(cls, ctx, replace(art, extra=extra))).load()
    return cls, open_with


def _feed(ctx, runner) -> dict:
    from partialdeploy.verification import static_batch

    meta = runner.inputs()[0]
    bs = static_batch(meta.shape) or 1
    x = np.ascontiguousarray(np.repeat(ctx.parity_inputs[:1], bs, 0), np.float32)
    return {meta.name: x}


def _fp32_sibling(ctx, cls):
    """The verified fp32 ONNX in the artifact's runtime (what the target converted from)."""
    return cls(Path(ctx.onnx_path), threads=ctx.options.threads).load()


def tune(ctx, art, art_dir: Path, run_notes: list[str] | None = None) -> None:
    """Time the artifact's forms (and, for INT8, its fp32 sibling) within the budget — here, or on the
    device of ``--tune-on`` — keep the fastest form that passes the gate (here); record every timing.
    Does nothing when the budget is 0 (recorded), when the runtime cannot run here, or when there is
    nothing to compare."""
    forms = list(getattr(art, "forms", []) or [])
    if art.precision != "int8" and not forms:
        return
    budget = ctx.options.tune_budget
    if budget == 0:
        art.extra["tuning"] = {"budget_s": 0, "timed": False, "why": "--tune-budget 0"}
        if art.precision == "int8":
            art.notes.append("INT8 speed against fp32 not measured (--tune-budget 0)")
        return
    from partialdeploy import backends

    if not backends.backend_of_target(art.target).runner_class().is_available():
        return
    t0 = time.perf_counter()
    skipped: dict = {}
    try:
        built = _build_forms(forms, Path(art_dir), budget, t0, skipped)
        if ctx.options.tune_on is not None:
            from partialdeploy.remote.tune import time_on_device

            timing = time_on_device(ctx.options.tune_on, _candidates(ctx, art, art_dir, built),
                                    ctx.parity_inputs[:1], max(budget - (time.perf_counter() - t0), 0.0),
                                    note=art.notes.append)
            ms, rounds, per_round, where = timing.ms, timing.rounds, timing.per_round, timing.label
            skipped.update(timing.skipped)
        else:
            ms, rounds, per_round = _time_here(ctx, art, art_dir, built, skipped, max(budget - (time.perf_counter()
                                                                                               - t0), 0.0))
            where, timing = HERE, None
        chosen, gated = _choose(ctx, art, art_dir, forms, ms, per_round, where)
    finally:  # the files of the forms not kept
        for f in forms:
            if f.path:
                for src, _ in form_files(art, art_dir, f.path):
                    src.unlink(missing_ok=True)
    rec = {"budget_s": budget, "timed": True, "timed_on": where, "rounds": rounds,
           "latency_ms": {k: round(v, 4) for k, v in ms.items()}, "chosen": chosen, "gated": gated,
           "skipped": skipped, "rounds_ms": {k: [round(t, 4) for t in v] for k, v in per_round.items()},
           "method": f"{method(rounds, where)}, seconds {time.perf_counter() - t0:.1f}"}
    if timing is not None:
        rec["device"] = timing.device
    art.extra["tuning"] = rec
    if FP32_SIBLING in ms:
        _int8_speed(art, ms[chosen], ms[FP32_SIBLING], run_notes, rounds_faster(per_round, FP32_SIBLING, chosen), where)


def _build_forms(forms: list["Form"], art_dir: Path, budget: float, t0: float, skipped: dict) -> list["Form"]:
    """The forms to time: each built (when it has files of its own) while the budget allows; a form over
    budget or whose build fails is recorded in ``skipped``."""
    out = []
    for f in forms:
        spent = time.perf_counter() - t0
        cost = 0.0 if f.build is None or getattr(f.build, "built", False) else f.cost_s
        if spent > budget / 2 or spent + cost > budget:
            skipped[f.name] = "over budget" + (f" (building it takes ≈{f.cost_s:.0f} s)" if f.cost_s else "")
            continue
        try:
            if f.build is not None:
                f.path = f.build(art_dir)
            out.append(f)
        except Exception as e:  # a form that cannot be built here is not a candidate
            skipped[f.name] = f"not built: {str(e).splitlines()[0][:160]}"
    return out


def _time_here(ctx, art, art_dir: Path, forms: list["Form"], skipped: dict, budget_s: float):
    """:func:`interleaved` on this machine over {as exported, each form, fp32 sibling for INT8}."""
    cls, open_with = _opener(ctx, art, art_dir)
    runners: dict = {}
    try:
        runners[AS_EXPORTED] = open_with(art.extra)
        for f in forms:
            try:
                runners[f.name] = open_with(merged(art.extra, f.extra), f.path)
            except Exception as e:  # a form that cannot be compiled here is not a candidate
                skipped[f.name] = f"does not open: {str(e).splitlines()[0][:160]}"
        if art.precision == "int8":
            runners[FP32_SIBLING] = _fp32_sibling(ctx, cls)
        feeds = {k: _feed(ctx, r) for k, r in runners.items()}
        return interleaved({k: (lambda r=r, f=feeds[k]: r.infer(f)) for k, r in runners.items()}, budget_s)
    finally:
        for r in runners.values():
            r.close()


def _candidates(ctx, art, art_dir: Path, forms: list["Form"]) -> list:
    """What the device times (``remote.tune.Candidate``): each way's files and the options its runner
    opens them with — as the gate opens them here (``verification.open_options``)."""
    from dataclasses import replace

    from partialdeploy.backends import backend_of_target
    from partialdeploy.remote.profile import artifact_files
    from partialdeploy.remote.tune import Candidate
    from partialdeploy.verification import open_options

    backend = backend_of_target(art.target)
    cls = backend.runner_class()
    mine = [Path(art_dir) / r for r in artifact_files(Path(art_dir), art)]

    def files_of(main: str) -> list[Path]:
        if main == art.path:
            return mine
        return [Path(art_dir) / main] + [src for src, _ in form_files(art, art_dir, main)[1:] if src.is_file()]

    out = [Candidate(AS_EXPORTED, backend.name, art.path, files_of(art.path),
                     open_options(cls, ctx, art), Path(art_dir))]
    for f in forms:
        out.append(Candidate(f.name, backend.name, f.path or art.path, files_of(f.path or art.path),
                             open_options(cls, ctx, replace(art, extra=merged(art.extra, f.extra))), Path(art_dir)))
    if art.precision == "int8":
        onnx = Path(ctx.onnx_path)
        out.append(Candidate(FP32_SIBLING, backend.name, onnx.name, [onnx], {"threads": ctx.options.threads},
                             onnx.parent))
    return out


def tune_or_record(ctx, art, art_dir: Path, run_notes: list[str] | None = None) -> None:
    """:func:`tune`, where a runtime failing while timing (not the artifact: it passed its gate) is
    recorded in ``extra.tuning`` and a note instead of failing the export."""
    from partialdeploy.errors import first_line

    try:
        tune(ctx, art, art_dir, run_notes)
    except Exception as e:  # a runtime's own exception type while timing
        why = f"{type(e).__name__}: {first_line(e, 200)}"
        art.extra["tuning"] = {"budget_s": ctx.options.tune_budget, "timed": False, "why": why}
        art.notes.append(f"measured selection not done (kept as exported): {why}"
                         + ("; INT8 speed against fp32 not measured" if art.precision == "int8" else ""))


def _choose(ctx, art, art_dir: Path, forms: list[Form], ms: dict, per_round: dict | None = None,
            where: str = HERE) -> tuple[str, dict]:
    """Gate the forms faster than the recorded one, fastest first; the first that passes is kept
    (its extra merged, its note added). With the round-by-round times, a form counts as faster only
    when it was faster in enough of the paired rounds that a coin would rarely do as well
    (``interleave.wins_needed``: every round up to 5, 7 of 8, 8 of 9): a lead that noise can make is
    no lead, and the artifact stays as exported. Returns (kept form name, {form: passed, failed or why not tried})."""
    from partialdeploy.errors import UserError, VerificationError
    from partialdeploy.verification import verify_artifact

    gated: dict = {}
    by_name = {f.name: f for f in forms}
    for name in sorted((n for n in ms if n in by_name), key=ms.get):
        if ms[name] >= ms[AS_EXPORTED]:
            break
        won, n = rounds_faster(per_round or {}, name, AS_EXPORTED)
        need = wins_needed(n)
        if n and won < need:
            gated[name] = f"not kept: faster in only {won} of {n} interleaved rounds ({need} needed)"
            continue
        f = by_name[name]
        saved = (dict(art.extra), list(art.parity), art.alternatives, art.proof, art.path)
        art.extra = merged(art.extra, f.extra)
        art.parity, art.alternatives, art.proof, art.path = [], [], None, f.path or art.path
        try:
            verify_artifact(ctx, art, art_dir)
        except (VerificationError, UserError) as e:
            gated[name] = f"failed: {str(e).splitlines()[0][:200]}"
            art.extra, art.parity, art.alternatives, art.proof, art.path = saved
            continue
        art.path = saved[4]
        if f.path:  # its files become the artifact's (gated just now, as they will be opened)
            for src, dst in form_files(art, art_dir, f.path):
                src.replace(dst)
            f.path = None
        gated[name] = "passed"
        art.notes.append(f"measured selection: {name} ({ms[name]:.3g} ms against {ms[AS_EXPORTED]:.3g} ms as "
                         f"exported on {where})" + (f"; {f.note}" if f.note else ""))
        return name, gated
    return AS_EXPORTED, gated


def form_files(art, art_dir: Path, path: str) -> list[tuple[Path, Path]]:
    """(form's file, artifact's file) pairs of a built form: its main file, and the files beside it with
    the suffixes of the artifact's other files (``model.perf.part.xml`` brings ``model.perf.part.bin``)."""
    main = Path(art_dir) / path
    pairs = [(main, Path(art_dir) / art.path)]
    for f in art.files or []:
        if f != art.path and Path(f).suffix and Path(f).suffix != main.suffix:
            pairs.append((main.with_suffix(Path(f).suffix), Path(art_dir) / f))
    return pairs


class built_once:  # noqa: N801  (used like a decorator: a function that builds once)
    """``build`` for several forms that open the same files in different ways: built by the first form
    that asks, reused by the others (whose budget check then costs nothing: ``built``)."""

    def __init__(self, build: Callable[[Path], str]):
        self._build, self._name = build, None

    @property
    def built(self) -> bool:
        return self._name is not None

    def __call__(self, art_dir: Path) -> str:
        if self._name is None:
            self._name = self._build(art_dir)
        return self._name


def _int8_speed(art, int8_ms: float, fp32_ms: float, run_notes: list[str] | None,
                fp32_won: tuple[int, int] = (0, 0), where: str = HERE) -> None:
    """Record (and, when the INT8 median is the slower one, say) how INT8 compares with its fp32
    sibling; ``fp32_won`` = (rounds in which fp32 was faster, rounds), said with it: the user sees
    whether the verdict held round after round or only in the medians."""
    ratio = int8_ms / fp32_ms if fp32_ms > 0 else float("nan")
    slower = bool(ratio > SLOWER)
    won, n = fp32_won
    art.extra["int8_speed"] = {"int8_ms": round(int8_ms, 4), "fp32_ms": round(fp32_ms, 4), "ratio": round(ratio, 3),
                               "slower_than_fp32": slower,
                               "fp32_form": "the verified fp32 ONNX in the same runtime, same threads"}
    if n:
        art.extra["int8_speed"]["rounds_fp32_faster"] = f"{won}/{n}"
    if slower:
        held = f", slower in {won} of {n} interleaved rounds" if n else ""
        msg = (f"{art.target} int8 is SLOWER than fp32 on {where}: {int8_ms:.3g} ms against {fp32_ms:.3g} ms "
               f"(×{ratio:.2f}{held}); prefer the fp32 artifact for speed {'here' if where == HERE else 'there'}")
        art.notes.append(msg)
        if run_notes is not None:
            run_notes.append(msg)
