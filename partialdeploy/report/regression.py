"""The latency gate of ``report compare``: two profile reports, one verdict that fails closed.

A comparison passes only when every case of the baseline was measured again, on the same model
with the same input shapes, with positive finite numbers, and none got slower than allowed. What
cannot be judged fails (exit 1): a baseline case missing from the new report (unless
``allow_missing``), a report with nothing measured, a non-positive latency, another model, another
input shape. What weakens the evidence without making it wrong is a warning — or, with ``strict``,
a failure too: the reports come from different devices, or a baseline case is noisy (coefficient of
variation above its report's threshold). Malformed reports never get here (``report.schema.load``: exit 2).
"""

from __future__ import annotations

import math

from partialdeploy.errors import VerificationError
from partialdeploy.records import ProfileResult
from partialdeploy.report.schema import ok_results, results
from partialdeploy.report.text import fmt, md_safe

METRICS = ("p50", "p90", "p99", "mean")
# the model fields that decide what is computed (a retrained checkpoint of one architecture compares fine)
_ARCH_KEYS = ("family", "variant", "embed_dim", "depths", "num_classes", "in_chans", "img_size", "patch_size",
              "mlp_ratio", "n_div", "use_channel_attn", "use_spatial_attn", "num_heads", "feature_dim")
FAILING = ("regression", "missing", "invalid", "shape differs")


def _key(r: ProfileResult) -> tuple:
    return (r.device, r.target, r.precision, r.batch, r.mode or "latency")


def _label(k: tuple) -> str:
    dev, target, prec, batch, _ = k
    return f"{dev + ' ' if dev else ''}{target}/{prec} b{batch}"


def _measured(report: dict) -> dict[tuple, ProfileResult]:
    return {_key(r): r for r in ok_results(report)}


def _arch(report: dict) -> dict:
    m = report.get("model") or {}
    return {k: m.get(k) for k in _ARCH_KEYS if k in m}


def _model_problem(base: dict, new: dict) -> str | None:
    a, b = _arch(base), _arch(new)
    if not a or not b:  # single model files carry no architecture: the input shapes still have to agree
        return None
    diff = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if not diff:
        return None
    na, nb = (r.get("model", {}).get("name", "?") for r in (base, new))
    return (f"they profile different models ({na!r} vs {nb!r}: {', '.join(diff[:4])} differ); a latency change "
            "between two models is not a regression")


def _devices(report: dict) -> set[str]:
    devs = {r.device for r in results(report) if r.device}
    return devs or {str(report.get("device") or "?")}


def _row(k, rb: ProfileResult | None, rn: ProfileResult | None, metric: str, max_regression: float,
         allow_missing: bool) -> dict:
    row = {"device": k[0], "target": k[1], "precision": k[2], "batch": k[3], "mode": k[4],
           "base_ms": rb.latency_ms[metric] if rb else None, "new_ms": rn.latency_ms[metric] if rn else None,
           "change": None, "base_cv": rb.cv if rb else None}
    if rn is None:
        row["status"] = "missing (allowed)" if allow_missing else "missing"
        return row
    if rb is None:
        row["status"] = "new"
        return row
    vb, vn = row["base_ms"], row["new_ms"]
    if not (math.isfinite(vb) and math.isfinite(vn) and vb > 0 and vn > 0):
        row["status"] = "invalid"
        row["reason"] = f"{metric} {vb!r} -> {vn!r} ms is not a positive latency"
        return row
    if rb.input_shapes and rn.input_shapes and rb.input_shapes != rn.input_shapes:
        row["status"] = "shape differs"
        row["reason"] = f"input {rb.input_shapes} -> {rn.input_shapes}"
        return row
    ch = (vn - vb) / vb
    row["change"] = ch
    row["status"] = "regression" if ch > max_regression else "improved" if ch < -max_regression else "ok"
    return row


def compare(base: dict, new: dict, max_regression: float, metric: str = "p50", *, allow_missing: bool = False,
            strict: bool = False) -> dict:
    """Per (device, target, precision, batch, mode): the ``metric`` change new vs base, and the
    verdict: ``failures`` (each one line) make :func:`check` raise; ``warnings`` do too with ``strict``."""
    b, n = _measured(base), _measured(new)
    rows = [_row(k, b.get(k), n.get(k), metric, max_regression, allow_missing) for k in dict.fromkeys([*b, *n])]
    failures: list[str] = []
    warnings: list[str] = []
    if not b:
        failures.append("the baseline has no measured results: nothing to gate against")
    if not n:
        failures.append("the new report has no measured results (everything skipped, not run or failed)")
    problem = _model_problem(base, new)
    if problem:
        failures.append(problem)
    missing = [r for r in rows if r["status"] == "missing"]
    if missing and n:
        failures.append(f"{len(missing)} baseline case(s) not measured in the new report: "
                        f"{', '.join(_label(_rk(r)) for r in missing[:6])}{' …' if len(missing) > 6 else ''} "
                        "(--allow-missing accepts fewer cases)")
    for status in ("invalid", "shape differs"):
        bad = [r for r in rows if r["status"] == status]
        if bad:
            failures.append(f"{len(bad)} case(s) cannot be compared ({status}): " +
                            "; ".join(f"{_label(_rk(r))} {r['reason']}" for r in bad[:3]))
    regs = [r for r in rows if r["status"] == "regression"]
    if regs:
        w = max(regs, key=lambda r: r["change"])
        failures.append(f"{len(regs)} latency regression(s) beyond {100 * max_regression:.0f}%: worst "
                        f"{_label(_rk(w))} {metric} {w['base_ms']:.3f} -> {w['new_ms']:.3f} ms "
                        f"(+{100 * w['change']:.1f}%)")
    db, dn = _devices(base), _devices(new)
    if b and n and db != dn:
        warnings.append(f"the reports come from different devices ({', '.join(sorted(db))} vs "
                        f"{', '.join(sorted(dn))}): a change may be the machine, not the model")
    cv_max = (base.get("settings") or {}).get("cv_threshold") or 0.10
    noisy = [r for r in rows if r["base_cv"] is not None and r["base_cv"] > cv_max and r["change"] is not None]
    if noisy:
        worst = max(noisy, key=lambda r: r["base_cv"])
        warnings.append(f"{len(noisy)} baseline case(s) are noisy (coefficient of variation above "
                        f"{100 * cv_max:.0f}%, worst {_label(_rk(worst))} {100 * worst['base_cv']:.0f}%): a "
                        "change within that noise means little; re-measure the baseline on a quiet machine")
    return {"metric": metric, "max_regression": max_regression, "allow_missing": allow_missing, "strict": strict,
            "rows": rows, "regressions": len(regs), "compared": sum(r["change"] is not None for r in rows),
            "failures": failures, "warnings": warnings,
            "passed": not failures and not (strict and warnings)}


def _rk(row: dict) -> tuple:
    return (row["device"], row["target"], row["precision"], row["batch"], row["mode"])


def check(cmp: dict) -> None:
    """Raise VerificationError (exit 1) unless the comparison passed; the message is one line."""
    if cmp["passed"]:
        return
    reasons = cmp["failures"] + ([f"--strict: {w}" for w in cmp["warnings"]] if cmp["strict"] else [])
    more = f" (and {len(reasons) - 1} more problem(s), listed above)" if len(reasons) > 1 else ""
    raise VerificationError(reasons[0] + more)


def to_markdown(cmp: dict) -> str:
    """The comparison as a Markdown table with its verdict (for a CI job summary)."""
    cmp = md_safe(cmp)  # device and target names come from the reports: inert text
    m = cmp["metric"]
    L = [f"**Latency gate: {'passed' if cmp['passed'] else 'FAILED'}** ({m}, max regression "
         f"{100 * cmp['max_regression']:.0f}%, {cmp['compared']} case(s) compared)", ""]
    L += [f"- failure: {f}" for f in cmp["failures"]] + [f"- warning: {w}" for w in cmp["warnings"]]
    L += ["", f"| device | target | precision | batch | base {m} ms | new {m} ms | change | status |",
          "|---|---|---|---:|---:|---:|---:|---|"]
    for r in cmp["rows"]:
        ch = "–" if r["change"] is None else f"{100 * r['change']:+.1f}%"
        L.append(f"| {r['device'] or ''} | {r['target']} | {r['precision']} | {r['batch']} | {fmt(r['base_ms'], 3)} | "
                 f"{fmt(r['new_ms'], 3)} | {ch} | {r['status']} |")
    return "\n".join(L) + "\n"
