"""A profile report as read back: the JSON checked against the schema ``partialdeploy.profile/1``
(bounded size, the structure renderers rely on, every number a number) and its result rows, typed."""

from __future__ import annotations

import json
import math
from pathlib import Path

from partialdeploy.errors import UserError
from partialdeploy.records import ProfileResult

SCHEMA = "partialdeploy.profile/1"
SCHEMA_PREFIX = "partialdeploy.profile/"
MAX_REPORT_BYTES = 256 << 20


def load(path: str | Path) -> dict:
    p = Path(path)
    if p.is_dir():
        p = p / "profile.json"
    try:
        if p.stat().st_size > MAX_REPORT_BYTES:
            raise UserError(f"{p} is larger than {MAX_REPORT_BYTES >> 20} MiB: not a profile report")
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"no such profile report: {p}") from None
    except (OSError, ValueError, RecursionError) as e:
        raise UserError(f"{p} is not a readable JSON report: {str(e)[:160]}") from None
    data = validate(data, str(p))
    from partialdeploy.integrity import verify_profiled_artifacts

    verify_profiled_artifacts(data, p)  # inside an export dir: the measured artifacts are still the exported ones
    return data


def validate(data, where: str = "report") -> dict:
    if not isinstance(data, dict) or not isinstance(data.get("schema"), str):
        raise UserError(f"{where} is not a partialdeploy profile report (no schema field)")
    schema = data["schema"]
    if not schema.startswith(SCHEMA_PREFIX):
        raise UserError(f"{where} has schema {schema!r}, expected {SCHEMA!r}")
    if schema != SCHEMA:
        raise UserError(f"{where} has schema {schema!r}; this partialdeploy reads {SCHEMA!r} (upgrade it)")
    if not isinstance(data.get("results"), list):
        raise UserError(f"{where} has no results list")
    problem = _structure_problem(data)
    if problem:
        raise UserError(f"{where} is malformed ({problem}): not a report written by `partialdeploy profile`")
    return data


def is_number(v, none_ok: bool = True) -> bool:
    """A finite int or float (not a bool); None counts when ``none_ok``."""
    if v is None:
        return none_ok
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _structure_problem(data: dict) -> str | None:
    """What a renderer would trip over, as text (None when the report is well-formed). Values that are
    only printed may be anything (they are escaped); numbers that are computed with must be numbers."""
    for key in ("model", "settings", "environment", "environments", "tool"):
        if not isinstance(data.get(key) or {}, dict):
            return f"{key} is not a mapping"
    if not all(isinstance(v, dict) for v in (data.get("environments") or {}).values()):
        return "environments holds a non-mapping"
    for i, r in enumerate(data["results"]):
        try:
            ProfileResult.from_dict(r)  # the numbers a renderer computes with are numbers
        except ValueError as e:
            msg = str(e)
            return f"results[{i}]{' ' if msg.startswith('is ') else '.'}{msg}"
    return None


def results(report: dict) -> list[ProfileResult]:
    """The result rows of a (validated) report, typed."""
    return [ProfileResult.from_dict(r) for r in report.get("results", [])]


def ok_results(report: dict) -> list[ProfileResult]:
    return [r for r in results(report) if r.measured]


def devices(report: dict) -> list[str]:
    """The devices a report's rows were measured on (a merged report has several)."""
    devs = [r.device for r in results(report) if r.device]
    return list(dict.fromkeys(devs)) or [report.get("device", "?")]


def is_multi_device(report: dict) -> bool:
    return len(devices(report)) > 1
