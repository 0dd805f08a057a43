"""JUnit XML for CI test reporters (GitHub/GitLab read ``<testsuites><testsuite><testcase>``): the
latency gate of ``report compare`` and the parity gates of ``export``, one test case per target ×
precision × batch, a failing case carrying its numbers in the failure message.

Written with the standard library's ElementTree (text is escaped there); files are replaced
atomically. The shape follows the JUnit schema the reporters read (``tests/fixtures/junit.xsd``).
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from partialdeploy.safety import write_atomic
from partialdeploy.report.regression import FAILING
from partialdeploy.report.text import md_safe

_CONTROL = dict.fromkeys(c for c in range(32) if c not in (9, 10, 13))


def _text(v) -> str:
    """XML 1.0 cannot hold most control characters, whatever a report file contained."""
    return str(v).translate(_CONTROL)


@dataclass
class Case:
    name: str
    classname: str
    outcome: str = "passed"  # passed | failure | error | skipped
    message: str = ""
    details: str = ""
    seconds: float = 0.0


@dataclass
class Suite:
    name: str
    cases: list[Case] = field(default_factory=list)
    properties: dict = field(default_factory=dict)
    out: str = ""

    def count(self, outcome: str) -> int:
        return sum(c.outcome == outcome for c in self.cases)


def to_xml(suites: list[Suite]) -> bytes:
    root = ET.Element("testsuites", name="partialdeploy")
    totals = dict.fromkeys(("tests", "failures", "errors"), 0)
    t_all = 0.0
    for s in suites:
        t = sum(c.seconds for c in s.cases)
        t_all += t
        n = {"tests": len(s.cases), "failures": s.count("failure"), "errors": s.count("error"),
             "skipped": s.count("skipped")}
        for k in totals:  # the root carries no skipped count in the JUnit layout
            totals[k] += n[k]
        el = ET.SubElement(root, "testsuite", name=_text(s.name), **{k: str(v) for k, v in n.items()},
                           time=f"{t:.3f}", timestamp=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()))
        if s.properties:
            props = ET.SubElement(el, "properties")
            for k, v in s.properties.items():
                ET.SubElement(props, "property", name=_text(k), value=_text(v))
        for c in s.cases:
            ce = ET.SubElement(el, "testcase", name=_text(c.name), classname=_text(c.classname),
                               time=f"{c.seconds:.3f}")
            if c.outcome in ("failure", "error", "skipped"):
                sub = ET.SubElement(ce, c.outcome, message=_text(c.message))
                if c.outcome != "skipped":
                    sub.set("type", "gate" if c.outcome == "failure" else "error")
                    sub.text = _text(c.details or c.message)
            elif c.details:
                ET.SubElement(ce, "system-out").text = _text(c.details)
        if s.out:
            ET.SubElement(el, "system-out").text = _text(s.out)
    for k, v in totals.items():
        root.set(k, str(v))
    root.set("time", f"{t_all:.3f}")
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write(suites: list[Suite], path: str | Path) -> Path:
    """Write the XML atomically (a CI step never reads half a file)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(p, to_xml(suites), prefix=".junit-")
    return p


# ---------------------------------------------------------------- the latency gate

def comparison_suite(cmp: dict, base_name: str = "baseline", new_name: str = "new") -> Suite:
    """One case per compared (device, target, precision, batch); the report-level verdicts (nothing
    measured, another model; with --strict also other devices / noisy baselines) as one more case."""
    m = cmp["metric"]
    s = Suite(f"latency gate: {new_name} vs {base_name}",
              properties={"metric": m, "max_regression": f"{100 * cmp['max_regression']:.1f}%",
                          "allow_missing": cmp.get("allow_missing", False), "strict": cmp.get("strict", False)})
    for r in cmp["rows"]:
        cls = f"latency.{r['device'] or 'device'}.{r['target']}.{r['precision']}"
        name = f"{r['target']} {r['precision']} batch {r['batch']}" + (f" on {r['device']}" if r["device"] else "")
        nums = (f"{m} {'–' if r['base_ms'] is None else format(r['base_ms'], '.3f')} -> "
                f"{'–' if r['new_ms'] is None else format(r['new_ms'], '.3f')} ms"
                + ("" if r["change"] is None else f" ({100 * r['change']:+.1f}%, allowed "
                   f"+{100 * cmp['max_regression']:.0f}%)"))
        c = Case(name, cls, details=nums)
        if r["status"] in FAILING:
            c.outcome = "failure"
            c.message = f"{r['status']}: {r.get('reason') or nums}"
            if r["status"] == "missing":
                c.message = f"missing: not measured in {new_name} (baseline {m} {r['base_ms']:.3f} ms)"
        elif r["status"] == "missing (allowed)":
            c.outcome, c.message = "skipped", f"not measured in {new_name} (--allow-missing)"
        elif r["status"] == "new":
            c.details = nums + f"\nnot in {base_name}: nothing to compare with"
        s.cases.append(c)
    report_level = [f for f in cmp["failures"] if "regression(s)" not in f and "not measured in the new" not in f
                    and "cannot be compared" not in f]
    strict = [f"--strict: {w}" for w in cmp["warnings"]] if cmp.get("strict") else []
    if report_level or strict or cmp["warnings"]:
        why = report_level + strict
        s.cases.append(Case("evidence", "latency.reports", "failure" if why else "passed",
                            message=why[0] if why else "", details="\n".join(why + cmp["warnings"])))
    return s


# ---------------------------------------------------------------- the export's parity gates

def _parity_text(parity) -> str:
    return "\n".join(f"{p.stage}: {p.summary()}" + (f" ({p.reason})" if p.reason else "") for p in parity)


def export_suite(res, batch: int | None = None) -> Suite:
    """One case per pipeline stage that gates (deploy form, ONNX) and per target × precision × batch
    artifact; failed targets carry the gate's message, skipped ones their reason. ``res`` is what
    ``partialdeploy.export`` returns (read from its ``data``, the ``export --json`` document)."""
    from partialdeploy.records import Artifact, ParityResult, TargetFailure

    b = f" batch {batch}" if batch else ""
    d = res.data
    s = Suite(f"parity gates: {res.model}", properties={"output": str(res.out_dir)})
    for st in d["stages"]:
        par = ParityResult.from_dict(st["parity"]) if st.get("parity") else None
        if par is not None and st["name"] in ("deploy form", "onnx export"):
            c = Case(st["name"], "parity.pipeline", seconds=st["seconds"], details=_parity_text([par]))
            if not par.passed:
                c.outcome, c.message = "failure", par.reason or par.summary()
            s.cases.append(c)
    secs = {st["name"]: st["seconds"] for st in d["stages"]}
    for a in map(Artifact.from_dict, d["artifacts"]):
        c = Case(f"{a.target} {a.precision}{b}", f"parity.{a.target}", seconds=secs.get(a.target, 0.0),
                 details=f"{a.verified}: {a.path}\n{_parity_text(a.parity)}")
        if a.gate is None:  # converted and checked, never run: no parity gate passed for it
            c.outcome, c.message = "skipped", f"{a.verified}: no parity gate ran on this artifact here"
        s.cases.append(c)
    for f in map(TargetFailure.from_dict, d["failures"]):
        s.cases.append(Case(f"{f.target} {f.precision}{b}", f"parity.{f.target}",
                            "failure" if f.kind == "verification" else "error",
                            message=f.error.splitlines()[0][:500] if f.error else f.kind or "failed",
                            details=f.error))
    for k in res.skipped:
        s.cases.append(Case(f"{k.target} {k.precision}{b}", f"parity.{k.target}", "skipped", message=k.message))
    s.out = "\n".join(res.notes)
    return s


def error_suite(name: str, message: str) -> Suite:
    """A command that stopped before any gate (bad input, missing runtime) still shows in CI."""
    return Suite(name, [Case("input", "partialdeploy", "error", message=message)])


def suite_markdown(suite: Suite) -> str:
    """A suite as a Markdown table for a CI job summary: every case with its outcome and its numbers
    (text from reports and manifests is made inert: no HTML, no table breaks)."""
    icon = {"passed": "passed", "failure": "**FAILED**", "error": "**ERROR**", "skipped": "skipped"}
    bad = suite.count("failure") + suite.count("error")
    L = [f"**{md_safe(suite.name)}: {'FAILED' if bad else 'passed'}** ({len(suite.cases)} case(s), "
         f"{bad} failed, {suite.count('skipped')} skipped)", "", "| case | result | numbers |", "|---|---|---|"]
    for c in suite.cases:
        text = c.message if c.outcome != "passed" else (c.details.splitlines() or [""])[-1]
        L.append(f"| {md_safe(c.name)} | {icon[c.outcome]} | {md_safe(text)[:300]} |")
    return "\n".join(L) + "\n"
