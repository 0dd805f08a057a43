"""``partialdeploy plan``: which variant × target × precision meets a latency budget on a device.

* :mod:`~partialdeploy.planner.candidates` — profile rows joined to their export manifests (lineage,
  accuracy), rows that cannot be trusted excluded with a reason;
* :mod:`~partialdeploy.planner.constraints` — the budget, limits and objective, parsed and checked;
* :mod:`~partialdeploy.planner.decide` — statuses, Pareto set and recommendation per device;
* :mod:`~partialdeploy.planner.render` — Markdown and the terminal table's rows; ``html`` — the page;
* :mod:`~partialdeploy.planner.sweep` — export and profile a checkpoint × target × precision matrix.

No torch and no runtime is imported to plan from existing reports.
"""

from __future__ import annotations

from pathlib import Path

from partialdeploy.planner.candidates import Candidate, candidates
from partialdeploy.planner.constraints import Constraints
from partialdeploy.planner.decide import Plan, decide

__all__ = ["Candidate", "Constraints", "Plan", "make_plan", "write_outputs"]


def make_plan(reports, constraints: Constraints, exports=()) -> Plan:
    """The plan over the rows of ``reports`` (profile.json paths or export directories holding one);
    ``exports``: more export directories whose manifests the rows may come from."""
    return decide(candidates([Path(r) for r in reports], exports), constraints)


def write_outputs(plan: Plan, json_path=None, md_path=None, html_path=None) -> list[Path]:
    """Write the plan as JSON / Markdown / HTML (each atomically: a failure leaves the old file)."""
    import json

    import partialdeploy.planner.html as html
    import partialdeploy.planner.render as render
    from partialdeploy.safety import write_json_atomic

    written = []
    for path, make in ((json_path, lambda: json.dumps(plan.to_dict(), indent=1, default=str) + "\n"),
                       (md_path, lambda: render.to_markdown(plan)), (html_path, lambda: html.to_html(plan))):
        if path:
            p = Path(path)
            p.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(p, make())
            written.append(p)
    return written
