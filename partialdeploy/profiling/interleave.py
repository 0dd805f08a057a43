"""Interleaved timing of a few ways to run the same thing (the export's measured selection,
``exporting.tuning``, here or on a device with ``export --tune-on``: ``remote.device_tune``).

Timing follows docs/architecture.md, "Measuring": blocks with warm-up, cycled round-robin, median of
block medians; the rounds pair the functions, so what slowed the machine during a round slowed all.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

MIN_ROUNDS, MAX_ROUNDS = 3, 9
BLOCK_S, BLOCK_RUNS, WARMUP = 0.05, 5, 2
ALPHA = 0.05  # a form counts as faster when a coin would win its rounds this rarely (sign test)
AS_EXPORTED = "as exported"  # the artifact as recorded: what the other ways are compared with
FP32_SIBLING = "fp32"  # an INT8 artifact's fp32 sibling, timed beside them for the record only
REPORT_ONLY = (FP32_SIBLING,)
REPORT_ROUNDS = 5  # rounds when only report-only rows stand beside the baseline


def wins_needed(n: int) -> int:
    """Of ``n`` paired rounds, in how many a form must be the faster to count as faster: the least k
    with P(at least k of n heads of a fair coin) <= ALPHA (one-sided sign test: 5 of 5, 7 of 8, 8 of 9).
    Under 5 rounds no count is that rare, and every round is needed."""
    from math import comb

    for k in range(n + 1):
        if sum(comb(n, j) for j in range(k, n + 1)) <= ALPHA * 2 ** n:
            return k
    return n


def settled(per_round: dict, baseline: str = AS_EXPORTED, report_only=REPORT_ONLY) -> bool:
    """Whether more rounds (up to MAX_ROUNDS) could change any verdict against ``baseline``: every
    other way has either won the rounds it needs already or lost more than it can afford. With
    nothing to decide (only the report-only rows), REPORT_ROUNDS."""
    if baseline not in per_round:
        return False
    need = wins_needed(MAX_ROUNDS)
    others = [k for k in per_round if k != baseline and k not in report_only]
    if not others:
        return len(per_round[baseline]) >= REPORT_ROUNDS
    for name in others:
        won, n = rounds_faster(per_round, name, baseline)
        if won < need and n - won <= MAX_ROUNDS - need:
            return False
    return True


def interleaved(fns: dict[str, Callable[[], object]], budget_s: float) -> tuple[dict, int, dict]:
    """Median of block medians (ms) per function, timed in blocks cycled round-robin: at least
    MIN_ROUNDS rounds, more (up to MAX_ROUNDS) while the budget allows and a verdict against
    AS_EXPORTED is still open (:func:`settled`). Returns ({name: ms}, rounds, {name: [block median ms,
    round by round]}) — the rounds pair the functions (see :func:`rounds_faster`)."""
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
        if rounds >= MIN_ROUNDS and (spent * (rounds + 1) / rounds > budget_s or settled(meds)):
            break
    return {k: float(np.median(v)) for k, v in meds.items()}, rounds, meds


def rounds_faster(per_round: dict, a: str, b: str) -> tuple[int, int]:
    """(rounds in which ``a`` was faster than ``b``, rounds): both were timed in every round, so what
    slowed the machine during a round slowed both."""
    pairs = list(zip(per_round.get(a, []), per_round.get(b, [])))
    return sum(x < y for x, y in pairs), len(pairs)


def method(rounds: int, where: str) -> str:
    """How the times were taken, as the manifest records it."""
    return (f"batch as exported, median of {rounds} interleaved block medians (≥{BLOCK_S}s or {BLOCK_RUNS} runs "
            f"each, warm-up per block) on {where}")
