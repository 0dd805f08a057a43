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
blocks with warm-up, cycled round-robin, median of block medians.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

MIN_ROUNDS, MAX_ROUNDS = 3, 5
BLOCK_S, BLOCK_RUNS, WARMUP = 0.05, 5, 2
SLOWER = 1.0  # an INT8 artifact whose latency ratio to fp32 exceeds this is reported as slower


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


def interleaved(fns: dict[str, Callable[[], object]], budget_s: float) -> tuple[dict, int, dict]:
    """Median of block medians (ms) per function, timed in blocks cycled round-robin: at least
    MIN_ROUNDS rounds, more (up to MAX_ROUNDS) while the budget allows. Returns ({name: ms}, rounds,
    {name: [block median ms, round by round]}) — the rounds pair the functions (see :func:`rounds_faster`)."""
    meds: dict = {k: [] for k in fns}
    t_start = time.perf_counter()
    rounds = 0
    while rounds < MAX_ROUNDS:
        for name, fn in fns.items():
            for _ in range(WARMUP):
                fn()
            ts: list[float] = []
            t_end = time.perf_counter() + BLOCK_S
            while len(ts) < BLOCK_RUNS or time.perf_counter() < t_end:
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            meds[name].append(float(np.median(ts)) * 1e3)
        rounds += 1
        spent = time.perf_counter() - t_start
        if rounds >= MIN_ROUNDS and spent * (rounds + 1) / rounds > budget_s:
            break
    return {k: float(np.median(v)) for k, v in meds.items()}, rounds, meds


def rounds_faster(per_round: dict, a: str, b: str) -> tuple[int, int]:
    """(rounds in which ``a`` was faster than ``b``, rounds): both were timed in every round, so what
    slowed the machine during a round slowed both."""
    pairs = list(zip(per_round.get(a, []), per_round.get(b, [])))
    return sum(x < y for x, y in pairs), len(pairs)


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
    """Time the artifact's forms (and, for INT8, its fp32 sibling) within the budget; keep the fastest
    form that passes the gate; record every timing. Does nothing when the budget is 0 (recorded), when
    the runtime cannot run here, or when there is nothing to compare."""
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

    cls = backends.backend_of_target(art.target).runner_class()
    if not cls.is_available():
        return
    _, open_with = _opener(ctx, art, art_dir)
    t0 = time.perf_counter()
    runners: dict = {}
    skipped: dict = {}
    try:
        runners["as exported"] = open_with(art.extra)
        for f in forms:
            spent = time.perf_counter() - t0
            cost = 0.0 if f.build is None or getattr(f.build, "built", False) else f.cost_s
            if spent > budget / 2 or spent + cost > budget:
                skipped[f.name] = "over budget" + (f" (building it takes ≈{f.cost_s:.0f} s)" if f.cost_s else "")
                continue
            try:
                if f.build is not None:
                    f.path = f.build(Path(art_dir))
                runners[f.name] = open_with(merged(art.extra, f.extra), f.path)
            except Exception as e:  # a form that cannot be built or compiled here is not a candidate
                skipped[f.name] = f"not built or does not open: {str(e).splitlines()[0][:160]}"
        if art.precision == "int8":
            runners["fp32"] = _fp32_sibling(ctx, cls)
        feeds = {k: _feed(ctx, r) for k, r in runners.items()}
        ms, rounds, per_round = interleaved({k: (lambda r=r, f=feeds[k]: r.infer(f)) for k, r in runners.items()},
                                            max(budget - (time.perf_counter() - t0), 0.0))
    finally:
        for r in runners.values():
            r.close()
    try:
        chosen, gated = _choose(ctx, art, art_dir, forms, ms, per_round)
    finally:  # the files of the forms not kept
        for f in forms:
            if f.path:
                for src, _ in form_files(art, art_dir, f.path):
                    src.unlink(missing_ok=True)
    rec = {"budget_s": budget, "timed": True, "rounds": rounds, "latency_ms": {k: round(v, 4) for k, v in ms.items()},
           "chosen": chosen, "gated": gated, "skipped": skipped,
           "rounds_ms": {k: [round(t, 4) for t in v] for k, v in per_round.items()},
           "method": f"batch as exported, median of {rounds} interleaved block medians (≥{BLOCK_S}s or "
                     f"{BLOCK_RUNS} runs each, warm-up per block), seconds {time.perf_counter() - t0:.1f}"}
    art.extra["tuning"] = rec
    if "fp32" in ms:
        _int8_speed(art, ms[chosen], ms["fp32"], run_notes, rounds_faster(per_round, "fp32", chosen))


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


def _choose(ctx, art, art_dir: Path, forms: list[Form], ms: dict, per_round: dict | None = None
            ) -> tuple[str, dict]:
    """Gate the forms faster than the recorded one, fastest first; the first that passes is kept
    (its extra merged, its note added). With the round-by-round times, a form counts as faster only
    when it was faster in every round: a lead that one round of noise reverses is no lead, and the
    artifact stays as exported. Returns (kept form name, {form: passed, failed or why not tried})."""
    from partialdeploy.errors import UserError, VerificationError
    from partialdeploy.verification import verify_artifact

    gated: dict = {}
    by_name = {f.name: f for f in forms}
    for name in sorted((n for n in ms if n in by_name), key=ms.get):
        if ms[name] >= ms["as exported"]:
            break
        won, n = rounds_faster(per_round or {}, name, "as exported")
        if n and won < n:
            gated[name] = f"not kept: faster in only {won} of {n} interleaved rounds"
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
        art.notes.append(f"measured selection: {name} ({ms[name]:.3g} ms against {ms['as exported']:.3g} ms as "
                         f"exported on this machine)" + (f"; {f.note}" if f.note else ""))
        return name, gated
    return "as exported", gated


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
                fp32_won: tuple[int, int] = (0, 0)) -> None:
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
        msg = (f"{art.target} int8 is SLOWER than fp32 on this machine: {int8_ms:.3g} ms against {fp32_ms:.3g} ms "
               f"(×{ratio:.2f}{held}); prefer the fp32 artifact for speed here")
        art.notes.append(msg)
        if run_notes is not None:
            run_notes.append(msg)
