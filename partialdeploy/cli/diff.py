"""`partialdeploy diff`: the first block where two models part."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from partialdeploy.cli.app import app, emit_json, err, fail, out
from partialdeploy.errors import PartialDeployError


@app.command("diff", epilog="Examples:\n\n  partialdeploy diff ckpt.pth dist/openvino/int8/model.xml\n\n"
             "  partialdeploy diff ckpt.pth dist/ --target onnxruntime --precision int8 --images photos/\n\n"
             "  partialdeploy diff dist/onnx/fp32/model.onnx dist/openvino/fp32/model.xml --json")
def diff_cmd(
    ref: Path = typer.Argument(..., help="Reference: checkpoint (train form), .onnx, OpenVINO .xml or export dir."),
    cand: Path = typer.Argument(..., help="Candidate: the same kinds as REF."),
    images: Optional[Path] = typer.Option(None, "--images", help="Folder of real images (default: the demo's "
                                          "held-out digits for the demo model, else bundled photographs)."),
    count: int = typer.Option(16, "--count", help="How many images."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Artifact of an export dir: onnx, "
                                         "onnxruntime, openvino or tensorrt (its ONNX, run in ONNX Runtime)."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="Artifact of an export dir: fp32, "
                                            "fp16 or int8."),
    ref_target: Optional[str] = typer.Option(None, "--ref-target", help="Artifact of REF when it is an export "
                                             "dir (default: --target)."),
    ref_precision: Optional[str] = typer.Option(None, "--ref-precision", help="Precision of REF's artifact."),
    cosine: Optional[float] = typer.Option(None, "--cosine-min", help="Per-block cosine tolerance (default by "
                                           "CAND precision: fp32 0.9999, fp16 0.999, int8 0.98)."),
    rel: Optional[float] = typer.Option(None, "--rel-max", help="Per-block max|Δ| / range tolerance (fp32 1e-3, "
                                        "fp16 1e-2, int8 0.5)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="Runtime threads."),
    variant: Optional[str] = typer.Option(None, "--variant", help="For checkpoints: what the weights cannot tell."),
    as_json: bool = typer.Option(False, "--json", help='{"first_divergent": ..., "blocks": [...]} on stdout.'),
):
    """Run REF and CAND on the same real images with every block boundary of the model's family
    exposed (the checkpoint's own names, e.g. patch_embed, stages.N.blocks.M, layerN.M, head) and name
    the first block whose output leaves the tolerance.

    Exit codes: 0 they agree, 1 they part, 2 bad input."""
    from partialdeploy import api

    try:
        res = api.diff(ref, cand, images=images, count=count, target=target, precision=precision,
                       ref_target=ref_target, ref_precision=ref_precision, cosine_min=cosine, rel_max=rel,
                       threads=threads, variant=variant)
    except PartialDeployError as e:
        fail(e)
    if as_json:
        emit_json(res.to_dict())
        raise typer.Exit(res.exit_code)
    from rich.markup import escape
    from rich.table import Table

    for n in res.notes:
        err.print(f"[dim]note: {escape(n)}[/]", soft_wrap=True)
    tol = res.tolerance
    t = Table(title=f"REF {escape(res.ref['input'])} ({res.ref['runtime']}) vs CAND {escape(res.cand['input'])} "
              f"({res.cand['runtime']}, {res.cand['precision']}) on {escape(res.image_source)}",
              title_justify="left")
    for c in ("block", "cosine min", "cosine mean", "rel max|Δ|", ""):
        t.add_column(c, no_wrap=c == "block")
    flt = set(res.float_blocks)
    for b in res.blocks:
        mark = "" if b.within else ("[red]← first to leave the per-block tolerance[/]"
                                    if b.block == res.first_divergent else "[red]out[/]")
        name = f"{b.block} [cyan](float)[/]" if b.block in flt else b.block  # kept in float by the INT8 fallback
        t.add_row(name, f"{b.cosine_min:.6f}", f"{b.cosine_mean:.6f}", f"{b.rel_max:.3g}", mark)
    out.print(t)
    if flt:
        out.print(f"(float) = kept in float by the INT8 fallback: {', '.join(sorted(flt))}")
    out.print(f"per block: cosine ≥ {tol['cosine_min']:g}, rel max|Δ| ≤ {tol['rel_max']:g}"
              + (" (told stricter: every block decides)" if res.strict else " (locates where they part)"))
    g = res.gate
    if g is not None:
        out.print(f"logits under the export gate's tolerance: {escape(g.cell())} — "
                  + ("[green]within[/]" if g.passed else f"[{'yellow' if res.agree else 'red'}]{escape(g.reason)}[/]"),
                  soft_wrap=True)
    if res.agree:
        out.print("[green]they agree[/]" + (" at every block boundary" if res.strict or not res.first_divergent
                                            else f" within the export gate (blocks drift from "
                                            f"{res.first_divergent} on, within what the gate allows)"))
    elif res.first_divergent:
        out.print(f"[red]they part at {res.first_divergent}[/]")
    else:
        out.print("[red]they part[/]: every block within tolerance but the logits miss the gate")
    raise typer.Exit(res.exit_code)
