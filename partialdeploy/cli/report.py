"""`partialdeploy report` show / compare / merge."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from partialdeploy.cli.app import app, emit_json, err, fail, out
from typer.core import TyperGroup

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
    from partialdeploy import report as rp

    try:
        data = rp.load(profile_json)
        if html_out:
            html_out.parent.mkdir(parents=True, exist_ok=True)
            html_out.write_text(rp.to_html(data), encoding="utf-8")
        if md_out:
            md_out.parent.mkdir(parents=True, exist_ok=True)
            md_out.write_text(rp.to_markdown(data), encoding="utf-8")
    except PartialDeployError as e:
        fail(e)
    except OSError as e:
        from partialdeploy.errors import UserError

        fail(UserError(f"cannot write the report: {e}"))
    print_profile(data)
    for p in (html_out, md_out):
        if p:
            out.print(f"wrote {p}")


@report_app.command("compare")
def report_compare(
    baseline: Path = typer.Argument(..., help="Baseline report JSON."),
    new: Path = typer.Argument(..., help="New report JSON."),
    max_regression: str = typer.Option("10%", "--max-regression", help="Allowed p50 increase (10% or 0.1)."),
    metric: str = typer.Option("p50", "--metric", help="p50, p90, p99 or mean."),
    md_out: Optional[Path] = typer.Option(None, "--md", help="Write the comparison as Markdown."),
    as_json: bool = typer.Option(False, "--json", help="Print the comparison as JSON."),
):
    """Compare latency per target/precision/batch; exit 1 when any got slower than allowed."""
    from partialdeploy import report as rp
    from partialdeploy.errors import UserError

    try:
        if metric not in ("p50", "p90", "p99", "mean"):
            raise UserError(f"--metric must be p50, p90, p99 or mean, got {metric!r}")
        cmp = rp.compare(rp.load(baseline), rp.load(new), rp.parse_threshold(max_regression), metric)
        if md_out:
            md_out.write_text(rp.comparison_markdown(cmp), encoding="utf-8")
        if as_json:
            emit_json(cmp)
        else:
            from rich.table import Table

            t = Table(title=f"{new} vs {baseline} ({metric}, max regression {100 * cmp['max_regression']:.0f}%)",
                      title_justify="left")
            for c in ("device", "target", "precision", "batch", "base ms", "new ms", "change", "status"):
                t.add_column(c, justify="right" if c in ("batch", "base ms", "new ms", "change") else "left")
            for r in cmp["rows"]:
                styled = {"regression": "[red]regression[/]", "improved": "[green]improved[/]"}
                st = styled.get(r["status"], r["status"])
                t.add_row(r["device"] or "", str(r["target"]), str(r["precision"]), str(r["batch"]),
                          "–" if r["base_ms"] is None else f"{r['base_ms']:.3f}",
                          "–" if r["new_ms"] is None else f"{r['new_ms']:.3f}",
                          "–" if r["change"] is None else f"{100 * r['change']:+.1f}%", st)
            out.print(t)
        rp.check_comparison(cmp)
    except PartialDeployError as e:
        fail(e)


@report_app.command("merge")
def report_merge(
    reports: list[Path] = typer.Argument(..., help="Reports to merge (e.g. one per device)."),
    output: Path = typer.Option(..., "--output", "-o", help="Merged report JSON."),
    name: Optional[list[str]] = typer.Option(None, "--name", help="Device label per input, in order (default: the "
                                             "label stored in each report)."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Also write the merged HTML page."),
):
    """Join reports from several devices into one report (and one table)."""
    from partialdeploy import report as rp

    try:
        merged = rp.merge([(str(p), rp.load(p)) for p in reports], list(name) if name else None)
        rp.save(merged, output)
        if html_out:
            html_out.write_text(rp.to_html(merged), encoding="utf-8")
    except PartialDeployError as e:
        fail(e)
    print_profile({**merged, "device": ", ".join(merged["environments"])})
    for w in merged.get("warnings", []):
        err.print(f"[yellow]warning:[/] {w}")
    out.print(f"merged {len(reports)} reports -> {output}")
