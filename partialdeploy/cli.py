"""Command line: parse, call the library, render. No logic of its own.

Exit codes: 0 ok, 1 parity/verification failure, 2 bad input or usage.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from partialdeploy import __version__
from partialdeploy.errors import PartialDeployError

app = typer.Typer(
    name="partialdeploy",
    help=(
        "Deploy PartialNet / PATNet / FasterNet checkpoints: deploy-form rewrite, ONNX, ONNX Runtime, "
        "OpenVINO, TensorRT, CoreML; every step proven by parity; latency reports.\n\n"
        "Examples:\n\n"
        "  partialdeploy inspect ckpt.ckpt\n\n"
        "  partialdeploy export --target onnx ckpt.ckpt -o dist/\n\n"
        "  partialdeploy export --target all --precision int8 --calib images/ ckpt.ckpt\n\n"
        "  partialdeploy profile dist/ --batch 1,8\n\n"
        "Exit codes: 0 ok, 1 parity/verification failure, 2 bad input or usage."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)


def _version(value: bool):
    if value:
        out.print(f"partialdeploy {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")):
    pass


def fail(e: PartialDeployError) -> None:
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
    raise typer.Exit(e.exit_code)


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# ---- commands are registered below; each one: parse -> call library -> render ----


# === export / inspect (issue 2) ===

CKPT_HELP = "Checkpoint (.ckpt Lightning, .pth/.pt state_dict, .safetensors). Default: the bundled demo."


def _fmt_count(n: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


@app.command(epilog="Examples:\n\n  partialdeploy export                      # the bundled demo -> dist/\n\n"
             "  partialdeploy export --target onnx ckpt.ckpt -o dist/\n\n"
             "  partialdeploy export --target all --precision int8 --calib images/ ckpt.pth\n\n"
             "  partialdeploy export --profile tensorrt-jetson-orin-fp16 ckpt.pth")
def export(
    checkpoint: Optional[Path] = typer.Argument(None, help=CKPT_HELP, show_default=False),
    target: Optional[list[str]] = typer.Option(None, "--target", "-t", help="onnx, onnxruntime, openvino, coreml, "
                                               "tensorrt or all (repeat or comma-separate). Default: onnx."),
    precision: Optional[str] = typer.Option(None, "--precision", "-p", help="fp32, fp16 or int8. Default: fp32."),
    output: Path = typer.Option(Path("dist"), "--output", "-o", help="Export directory (gets manifest.json)."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="Static input size (multiple of 32). "
                                           "Default: from the checkpoint, else 224."),
    dynamic_batch: Optional[bool] = typer.Option(None, "--dynamic-batch/--static-batch",
                                                 help="Dynamic batch dimension (default static)."),
    batch: Optional[int] = typer.Option(None, "--batch", help="Static batch size (default 1)."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Folder of calibration images for INT8 "
                                         "(default for the demo: its bundled images)."),
    calib_count: Optional[int] = typer.Option(None, "--calib-count", help="Max calibration images (default 100)."),
    variant: Optional[str] = typer.Option(None, "--variant", help="e.g. partialnet-t0, fasternet-s: what the weights "
                                          "cannot tell."),
    act: Optional[str] = typer.Option(None, "--act", help="gelu or relu (not stored in the weights)."),
    profile: Optional[str] = typer.Option(None, "--profile", help="Target profile name (see profiles/) or YAML path; "
                                          "explicit flags override it."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (13-20)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable result on stdout."),
):
    """Checkpoint -> deploy form -> ONNX -> target artifacts, each proven by a parity gate.

    Exit codes: 0 ok, 1 a parity gate failed, 2 bad input / unavailable runtime."""
    from partialdeploy.pipeline import ExportRequest, command_line, run_export

    try:
        prof: dict = {}
        if profile:
            from partialdeploy.profiles import load_profile

            prof = dict(load_profile(profile))
        if not 13 <= opset <= 20:
            from partialdeploy.errors import UserError

            raise UserError(f"--opset {opset} is outside 13-20 (what the exporter and TensorRT 10 accept)")
        tgt = target or ([prof.pop("target")] if prof.get("target") else ["onnx"])
        prof.pop("target", None)
        req = ExportRequest(
            checkpoint=checkpoint,
            targets=tuple(tgt),
            precision=(precision or prof.pop("precision", None) or "fp32").lower(),
            out_dir=output,
            img_size=img_size if img_size is not None else prof.pop("img_size", None),
            dynamic_batch=bool(dynamic_batch if dynamic_batch is not None else prof.pop("dynamic_batch", False)),
            batch=int(batch if batch is not None else prof.pop("batch", 1) if not isinstance(prof.get("batch"), dict)
                      else prof["batch"].get("opt", 1)),
            calib=calib,
            calib_count=int(calib_count or prof.pop("calib_images", 100)),
            variant=variant, act=act, opset=opset,
            options=prof, tolerances=prof.pop("tolerances_obj", {}) if prof else {},
            command=command_line(),
        )
        if as_json:
            res = run_export(req)
        else:
            from rich.markup import escape

            with err.status("exporting…") as st:
                def progress(stage: str, msg: str):
                    st.update(f"{stage}…")
                    mark = "[red]✗[/]" if "FAILED" in msg else "[yellow]–[/]" if msg.startswith("skipped") else "[green]✓[/]"
                    err.print(f"{mark} [bold]{stage}[/]: {escape(msg)}", soft_wrap=True)
                res = run_export(req, progress)
    except PartialDeployError as e:
        fail(e)
    if as_json:
        emit_json({"exit_code": res.exit_code, "model": res.spec.to_dict(), "notes": res.notes,
                   "stages": [vars(s) for s in res.stages], "onnx": res.onnx_info,
                   "artifacts": [vars(a) for a in res.artifacts], "failures": res.failures, "skipped": res.skipped,
                   "manifest": str(res.manifest_path) if res.manifest_path else None})
    else:
        from rich.markup import escape
        from rich.table import Table

        for n in res.notes:
            err.print(f"[dim]note: {n}[/]", soft_wrap=True)
        t = Table(title=f"{res.spec.name} → {res.out_dir}", title_justify="left")
        for c in ("target", "precision", "artifact", "verified", "parity"):
            t.add_column(c)
        for a in res.artifacts:
            par = a.parity[-1] if a.parity else None
            ps = (f"cos {par['cosine_min']:.6f}, rel {par['rel_max']:.2g}, top-1 {100 * par['top1_agree']:.1f}%"
                  + (f", acc {100 * par['acc_ref']:.2f}→{100 * par['acc']:.2f}%" if par.get("acc") is not None else "")
                  ) if par else "–"
            t.add_row(a.target, a.precision, a.path, a.verified, ps)
        for f in res.failures:
            t.add_row(f["target"], f["precision"], "[red]failed[/]", f["kind"], escape(f["error"][:160]))
        for s in res.skipped:
            t.add_row(s["target"], s["precision"], "[yellow]skipped[/]", "", escape(s["reason"][:160]))
        out.print(t)
        if res.manifest_path:
            out.print(f"manifest: {res.manifest_path}")
    raise typer.Exit(res.exit_code)


@app.command(epilog="Examples:\n\n  partialdeploy inspect ckpt.ckpt\n\n  partialdeploy inspect model.pth --variant fasternet-t0 --json")
def inspect(
    checkpoint: Optional[Path] = typer.Argument(None, help=CKPT_HELP, show_default=False),
    variant: Optional[str] = typer.Option(None, "--variant", help="e.g. partialnet-t0, fasternet-s."),
    act: Optional[str] = typer.Option(None, "--act", help="gelu or relu."),
    img_size: Optional[int] = typer.Option(None, "--img-size", help="Input size for FLOPs and the iRPE bias."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable result on stdout."),
):
    """What is inside a checkpoint: architecture, what folds and what stays (and why), params/FLOPs
    before → after the deploy rewrite."""
    from partialdeploy.analysis import inspect_checkpoint

    try:
        r = inspect_checkpoint(checkpoint, variant=variant, act=act, img_size=img_size)
    except PartialDeployError as e:
        fail(e)
    if as_json:
        emit_json(r)
        return
    from rich.markup import escape
    from rich.table import Table

    a = r["architecture"]
    out.print(f"[bold]{a['name']}[/]  ({r['format']}, sha256 {r['sha256'][:12]}…)")
    out.print(f"embed_dim {a['embed_dim']}, depths {a['depths']}, act {a['act']}, n_div {a['n_div']}, "
              f"heads {a['num_heads']}, classes {a['num_classes']}, channel attn {a['use_channel_attn']}, "
              f"spatial attn {a['use_spatial_attn']}, DPConv {a['auto_div']}, input {r['img_size']}²")
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
    out.print(f"params {_fmt_count(p['before'])} → {_fmt_count(p['after'])}   "
              f"FLOPs {_fmt_count(f['before'])} → {_fmt_count(f['after'])}   "
              f"BatchNorm {bn['before']} → {bn['after']}")



def main() -> None:
    try:
        app()
    except PartialDeployError as e:  # pragma: no cover - commands catch their own
        err.print(f"error: {e}")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as e:  # a bug, not bad input: still one line unless asked for the traceback
        import os

        if os.environ.get("PARTIALDEPLOY_DEBUG"):
            raise
        err.print(f"internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                  "(set PARTIALDEPLOY_DEBUG=1 for the traceback and please report it)", soft_wrap=True, markup=False)
        sys.exit(3)
