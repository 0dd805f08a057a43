"""Per target: convert the verified ONNX into an artifact in its own temporary directory, open it
through its runtime and gate it (verification.convert_and_verify), then time its correct forms
(tuning). A target that fails is recorded and the others go on; a full disk stops the export."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from partialdeploy.errors import PartialDeployError, VerificationError, first_line
from partialdeploy.backends import get_target
from partialdeploy.backends.target import ExportContext
from partialdeploy.records import Artifact, TargetFailure, TargetSkip
from partialdeploy.safety import is_disk_full
from partialdeploy.verification import convert_and_verify

Progress = Callable[[str, str], None]  # (stage, message)


@dataclass
class Converted:
    """What the targets produced: artifacts (paths relative to their staging directory, in order),
    where each goes in the export, and what failed or was skipped."""

    artifacts: list[Artifact] = field(default_factory=list)
    staged: list[tuple[Path, Path]] = field(default_factory=list)  # (staging dir, <target>/<precision>)
    failures: list[TargetFailure] = field(default_factory=list)
    skipped: list[TargetSkip] = field(default_factory=list)


def why_skipped(target, precision: str) -> tuple[str, str] | None:
    """(reason recorded, line said) when ``target`` cannot produce ``precision`` here, else None."""
    why = target.check_env() or target.refusal(precision)
    return (why, f"skipped: {why}") if why else None


def convert_targets(targets, precision: str, ctx_common: dict, staging: Path, notes: list[str], say: Progress,
                    stage: Callable) -> Converted:
    """Each target in order: skipped when it cannot run here, else converted, gated and tuned in a fresh
    directory under ``staging``; ``stage(name, seconds, verified, parity)`` records each that passed."""
    done = Converted()
    for name in targets:
        t0 = time.perf_counter()
        target = get_target(name)
        skip = why_skipped(target, precision)
        if skip:
            done.skipped.append(TargetSkip(name, precision, skip[0]))
            say(name, skip[1])
            continue
        tdir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=staging))
        ctx = ExportContext(precision=precision, **ctx_common)
        art = convert_one(name, target, ctx, tdir, done.failures, say)
        if art is None:
            continue
        if art.verified == "parity":  # measured selection among its forms; INT8 timed against fp32
            from partialdeploy.exporting.tuning import tune_or_record

            tune_or_record(ctx, art, tdir, notes)
        done.staged.append((tdir, Path(name) / precision))
        done.artifacts.append(art)
        say(name, f"{art.verified}: {art.path}")
        stage(name, time.perf_counter() - t0, art.verified, art.parity[-1] if art.parity else None)
    return done


def convert_one(name: str, target, ctx: ExportContext, tdir: Path, failures: list[TargetFailure],
                say: Progress) -> Artifact | None:
    """Convert and verify one target in ``tdir``; a failure is recorded (and ``tdir`` removed) and the
    export goes on, except when the disk is full: then the whole export stops, nothing claimed."""
    try:
        # the target converts; verification opens the artifact in its runtime and gates it
        return convert_and_verify(target, ctx, tdir)
    except PartialDeployError as e:
        if is_disk_full(e):
            raise
        kind = "verification" if isinstance(e, VerificationError) else "error"
        failures.append(TargetFailure(name, ctx.precision, kind, str(e), list(getattr(e, "parity", ()) or ())))
        say(name, f"FAILED: {e}")
    except Exception as e:  # a converter crashed: report it as this target's failure, go on
        if is_disk_full(e):
            raise
        failures.append(TargetFailure(name, ctx.precision, "error", f"{type(e).__name__}: {first_line(e, 300)}"))
        say(name, f"FAILED: {type(e).__name__}: {e}")
    shutil.rmtree(tdir, ignore_errors=True)
    return None
