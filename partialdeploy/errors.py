"""Errors that the CLI turns into one line and an exit code (no traceback)."""


def first_line(e: BaseException, n: int = 200) -> str:
    """The first line of an exception's message (its type name when the message is empty), at most
    ``n`` characters: what one-line errors quote from a runtime's multi-line exceptions."""
    s = str(e).strip()
    return s.splitlines()[0][:n] if s else type(e).__name__


class PartialDeployError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code = 2


class UserError(PartialDeployError):
    """Bad input or usage: missing/corrupt/hostile file, wrong architecture, impossible option,
    missing runtime. Exit code 2. The message says what to do."""

    exit_code = 2


class VerificationError(PartialDeployError):
    """A parity gate or a verification check failed. Exit code 1. The message gives the numbers."""

    exit_code = 1


class ParityError(VerificationError):
    """A parity gate failed. Exit code 1. ``parity`` holds the numbers of the failed gate(s)
    (``records.ParityResult``, or the API's ``ParityNumbers``); ``result`` what was exported anyway
    (the API's ExportResult), when anything was."""

    def __init__(self, message: str, parity=(), result=None):
        super().__init__(message)
        self.parity = tuple(parity)
        self.result = result


class RuntimeUnavailable(UserError):
    """The runtime a target needs is not installed (or needs hardware this machine lacks)."""
