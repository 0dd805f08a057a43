"""The command-line application: the Typer app, the consoles and the helpers every command uses.

Each command lives in its own module of this package (parse flags, call one library function, render).
Exit codes: 0 ok, 1 parity/verification failure, 2 bad input or usage.
"""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from typer.core import TyperGroup

from partialdeploy.version import __version__
from partialdeploy.errors import PartialDeployError

class _OneLineErrors(TyperGroup):
    """Usage errors (an unknown option, a missing argument) as one line on stderr, exit 2, like every
    other bad input — not Click's usage box. Help asked for (or no arguments) still prints the help."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        from typer._click.exceptions import ClickException
        from typer.exceptions import Abort

        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except ClickException as e:
            ctx = getattr(e, "ctx", None)
            if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
                out.print(ctx.get_help(), markup=False, highlight=False)
                sys.exit(2)
            where = ctx.command_path.replace("python -m ", "") if ctx is not None else "partialdeploy"
            err.print(f"error: {e.format_message()} (see `{where} --help`)", soft_wrap=True, markup=False)
            sys.exit(e.exit_code)
        except Abort:
            err.print("error: aborted", markup=False)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=_OneLineErrors,
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


def command_line() -> str:
    """This command line, quoted (what a manifest records as its command)."""
    import shlex

    return "partialdeploy " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def emit_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


# ---- commands are registered below; each one: parse -> call library -> render ----


CKPT_HELP = "Checkpoint (.ckpt Lightning, .pth/.pt state_dict, .safetensors). Default: the bundled demo."
