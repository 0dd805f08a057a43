"""Command line: one module per command, each a thin layer (parse flags, call one library function,
render). `app` is the Typer application, `main` the console entry point.

Exit codes: 0 ok, 1 parity/verification failure, 2 bad input or usage.
"""

from __future__ import annotations

import signal
import sys

# importing a command module registers its command on `app` (the order is the order in --help)
from partialdeploy.cli import export, inspect, profile, report, build_engine, diff, plan, remote  # noqa: E402,F401
from partialdeploy.cli.app import app, err
from partialdeploy.errors import PartialDeployError, first_line

__all__ = ["app", "main"]


def main() -> None:
    from partialdeploy import safety

    safety.install_signal_handlers()  # SIGTERM/SIGHUP (CI cancel, timeout) are handled like Ctrl-C
    try:
        try:
            app()
        except SystemExit as e:  # typer turns any KeyboardInterrupt into exit 130: a SIGTERM exits 143
            sig = safety.received()
            if e.code == 130 and sig not in (None, signal.SIGINT):
                raise safety.Terminated(sig) from None
            raise
    except PartialDeployError as e:  # pragma: no cover - commands catch their own
        err.print(f"error: {e}")
        sys.exit(e.exit_code)
    except safety.Terminated as e:
        err.print(f"terminated by {e}: stopped cleanly, nothing half-written was kept")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as e:  # a bug, not bad input: still one line unless asked for the traceback
        import os

        if os.environ.get("PARTIALDEPLOY_DEBUG"):
            raise
        err.print(f"internal error: {type(e).__name__}: {first_line(e)} "
                  "(set PARTIALDEPLOY_DEBUG=1 for the traceback and please report it)", soft_wrap=True, markup=False)
        sys.exit(3)
