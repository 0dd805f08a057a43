"""`partialdeploy report` show / compare / merge."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from rich.markup import escape
from typer.core import TyperGroup

from partialdeploy.cli.app import app, emit_json, err, fail, out

from partialdeploy.cli.render import print_profile
from partialdeploy.errors import PartialDeployError


class _ReportGroup(TyperGroup):
    """``partialdeploy report PROFILE.json ...`` runs ``report show``; ``report compare`` and
    ``report merge`` are subcommands."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["show", *args]
        return super().parse_args(ctx, args)


report_app = typer.Typer(
    cls=_ReportGroup, no_args_is_help=True, add_completion=False,
    help="Render, compare and merge profile reports.\n\n"
         "  partialdeploy report dist/profile.json --html report.html --md report.md\n\n"
         "  partialdeploy report compare baseline.json new.json --max-regression 10%   # exit 1 on regression\n\n"
         "  partialdeploy report merge a.json b.json -o merged.json")
app.add_typer(report_app, name="report")


@report_app.command("show")
def report_show(
    profile_json: Path = typer.Argument(..., metavar="PROFILE.json", help="Report from `partialdeploy profile`."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write a self-contained HTML page with plots."),
    md_out: Optional[Path] = typer.Option(None, "--md", help="Write a Markdown report."),
):
    """Print a report as a table; optionally write HTML and Markdown (the default subcommand:
    `partialdeploy report PROFILE.json` is `partialdeploy report show PROFILE.json`)."""
    from partialdeploy.report import schema
    from partialdeploy.report.html import to_html
    from partialdeploy.report.markdown import to_markdown

    try:
        data = schema.load(profile_json)
        if html_out:
            html_out.parent.mkdir(parents=True, exist_ok=True)
            html_out.write_text(to_html(data), encoding="utf-8")
        if md_out:
            md_out.parent.mkdir(parents=True, exist_ok=True)
            md_out.write_text(to_markdown(data), encoding="utf-8")
    except PartialDeployError as e:
        fail(e)
    except OSError as e:
        from partialdeploy.errors import UserError

        fail(UserError(f"cannot write the report: {e}"))
    print_profile(data)
    for p in (html_out, md_out):
        if p:
            out.print(f"wrote {p}")


@report_app.command("compare", epilog="Examples:\n\n  partialdeploy report compare base.json new.json "
                    "--max-regression 10% --junit gate.xml --md summary.md\n\n"
                    "  partialdeploy report compare base.json new.json --allow-missing --strict")
def report_compare(
    baseline: Path = typer.Argument(..., help="Baseline report JSON."),
    new: Path = typer.Argument(..., help="New report JSON."),
    max_regression: str = typer.Option("10%", "--max-regression", help="Allowed p50 increase (10% or 0.1)."),
    metric: str = typer.Option("p50", "--metric", help="p50, p90, p99 or mean."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Accept baseline cases the new report did "
                                       "not measure (default: each one fails the gate)."),
    strict: bool = typer.Option(False, "--strict", help="Also fail when the reports come from different devices "
                                "or the baseline is noisy (default: a warning)."),
    md_out: Optional[Path] = typer.Option(None, "--md", help="Write the comparison and its verdict as Markdown "
                                          "(e.g. $GITHUB_STEP_SUMMARY)."),
    junit_out: Optional[Path] = typer.Option(None, "--junit", help="Write JUnit XML for CI test reporters (one "
                                             "test case per target x precision x batch)."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
):
    """Compare latency per target/precision/batch. Fails closed: exit 1 when a case got slower than
    allowed, a baseline case was not measured, a report measured nothing, a number is not a positive
    latency, or the reports are of different models or input shapes; 2 for a malformed report."""
    from partialdeploy.report import junit
    from partialdeploy.report import regression, schema
    from partialdeploy.report.text import parse_threshold
    from partialdeploy.errors import UserError

    try:
        if metric not in ("p50", "p90", "p99", "mean"):
            raise UserError(f"--metric must be p50, p90, p99 or mean, got {metric!r}")
        cmp = regression.compare(schema.load(baseline), schema.load(new), parse_threshold(max_regression), metric,
                         allow_missing=allow_missing, strict=strict)
        try:
            if md_out:
                md_out.write_text(regression.to_markdown(cmp), encoding="utf-8")
            if junit_out:
                junit.write([junit.comparison_suite(cmp, str(baseline), str(new))], junit_out)
        except OSError as e:
            raise UserError(f"cannot write {e.filename}: {e.strerror}") from None
        if as_json:
            emit_json(cmp)
        else:
            out.print(comparison_table(cmp, f"{new} vs {baseline}"))
            for w in cmp["warnings"]:
                out.print(f"[yellow]warning:[/] {escape(w)}", soft_wrap=True)  # stderr keeps the one error line
        regression.check(cmp)
    except PartialDeployError as e:
        fail(e)


def comparison_table(cmp: dict, title: str):
    from rich.table import Table

    t = Table(title=f"{escape(title)} ({cmp['metric']}, max regression {100 * cmp['max_regression']:.0f}%)",
              title_justify="left")
    for c in ("device", "target", "precision", "batch", "base ms", "new ms", "change", "status"):
        t.add_column(c, justify="right" if c in ("batch", "base ms", "new ms", "change") else "left")
    styled = {"regression": "red", "improved": "green", "missing": "red", "invalid": "red", "shape differs": "red"}
    for r in cmp["rows"]:
        st = f"[{styled[r['status']]}]{r['status']}[/]" if r["status"] in styled else r["status"]
        t.add_row(escape(r["device"] or ""), escape(str(r["target"])), escape(str(r["precision"])), str(r["batch"]),
                  "–" if r["base_ms"] is None else f"{r['base_ms']:.3f}",
                  "–" if r["new_ms"] is None else f"{r['new_ms']:.3f}",
                  "–" if r["change"] is None else f"{100 * r['change']:+.1f}%", st)
    return t


@report_app.command("merge")
def report_merge(
    reports: list[Path] = typer.Argument(..., help="Reports to merge (e.g. one per device)."),
    output: Path = typer.Option(..., "--output", "-o", help="Merged report JSON."),
    name: Optional[list[str]] = typer.Option(None, "--name", help="Device label per input, in order (default: the "
                                             "label stored in each report)."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Also write the merged HTML page."),
):
    """Join reports from several devices into one report (and one table)."""
    from partialdeploy.report import schema
    from partialdeploy.report.html import to_html
    from partialdeploy.report.merge import merge, save

    try:
        merged = merge([(str(p), schema.load(p)) for p in reports], list(name) if name else None)
        save(merged, output)
        if html_out:
            html_out.write_text(to_html(merged), encoding="utf-8")
    except PartialDeployError as e:
        fail(e)
    print_profile({**merged, "device": ", ".join(merged["environments"])})
    for w in merged.get("warnings", []):
        err.print(f"[yellow]warning:[/] {w}")
    out.print(f"merged {len(reports)} reports -> {output}")
