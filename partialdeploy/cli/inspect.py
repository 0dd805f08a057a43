"""`partialdeploy inspect`: what is inside a checkpoint and what the deploy rewrite folds."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from partialdeploy.cli.app import CKPT_HELP, app, emit_json, fail, out
from partialdeploy.errors import PartialDeployError


def fmt_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


@app.command(epilog="Examples:\n\n  partialdeploy inspect ckpt.ckpt\n\n"
             "  partialdeploy inspect model.pth --variant fasternet-t0 --json")
def inspect(
    checkpoint: Optional[Path] = typer.Argument(None, help=CKPT_HELP, show_default=False),
    variant: Optional[str] = typer.Option(None, "--variant", help="e.g. partialnet-t0, fasternet-s."),
    act: Optional[str] = typer.Option(None, "--act", help="gelu or relu."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="Input size for FLOPs and the iRPE bias."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable result on stdout."),
):
    """What is inside a checkpoint: architecture, what folds and what stays (and why), params/FLOPs
    before → after the deploy rewrite."""
    from partialdeploy import api

    try:
        r = api.inspect(checkpoint, variant=variant, act=act, img_size=img_size).data
    except PartialDeployError as e:
        fail(e)
    if as_json:
        emit_json(r)
        return
    from rich.markup import escape
    from rich.table import Table

    a = r["architecture"]
    out.print(f"[bold]{a['name']}[/]  ({r['format']}, sha256 {r['sha256'][:12]}…)")
    out.print(f"{r['summary']}, input {r['img_size']}²")
    for n in r["notes"]:
        out.print(f"[dim]note: {n}[/]")
    if r["dropped_prefixes"]:
        out.print(f"[dim]ignored non-model weights under: {', '.join(r['dropped_prefixes'])}[/]")
    if r["dpconv_splits"]:
        out.print("DPConv learned splits: " + ", ".join(f"{k}={v}" for k, v in r["dpconv_splits"].items()))
    t = Table(title="deploy rewrite per block type", title_justify="left")
    for c in ("block", "count", "folds", "stays (why)"):
        t.add_column(c, overflow="fold")
    for b in r["blocks"]:
        t.add_row(b["kind"], str(b["count"]), escape(b["folds"]), escape(b["stays"]))
    out.print(t)
    p, f, bn = r["params"], r["flops"], r["batchnorm"]
    out.print(f"params {fmt_count(p['before'])} → {fmt_count(p['after'])}   "
              f"FLOPs {fmt_count(f['before'])} → {fmt_count(f['after'])}   "
              f"BatchNorm {bn['before']} → {bn['after']}")
