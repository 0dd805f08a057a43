"""The host argument of ``--remote``: ``alias`` (from ~/.ssh/config), ``host``, ``user@host``,
``host:port``, ``user@[::1]:2222``. Anything that could be read by ssh as an option, or that holds
whitespace or control characters, is refused before ssh is started (exit 2)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from partialdeploy.errors import UserError

_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,252}$")  # DNS name, IPv4, or an ssh_config alias
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+(%[A-Za-z0-9_.-]+)?$")
_PATH = re.compile(r"^[A-Za-z0-9_./+-]+$")


@dataclass(frozen=True)
class Host:
    """A validated destination: ``name`` goes to ssh after ``--``; ``user``/``port`` as ``-l``/``-p``."""

    text: str  # as the user wrote it (the report's device label starts with it)
    name: str
    user: str | None = None
    port: int | None = None

    def ssh_args(self) -> list[str]:
        return (["-l", self.user] if self.user else []) + (["-p", str(self.port)] if self.port else [])

    @property
    def label(self) -> str:
        return self.text


def _bad(text: str, why: str, flag: str = "--remote") -> UserError:
    return UserError(f"{flag} {text!r}: {why}; write an ~/.ssh/config alias or [user@]host[:port]")


def parse_host(text, flag: str = "--remote") -> Host:
    """A ``Host`` from the command line (``flag``: the option that gave it, for the message), or
    UserError (exit 2)."""
    try:
        return _parse(text)
    except UserError as e:
        raise _bad(str(text), str(e), flag) from None


def _parse(text) -> Host:
    if not isinstance(text, str) or not text:
        raise UserError("empty host")
    if text.startswith("-"):
        raise UserError("a host cannot start with '-' (it would be read as an ssh option)")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in text):
        raise UserError("a host cannot hold whitespace or control characters")
    user = None
    rest = text
    if "@" in text:
        user, _, rest = text.rpartition("@")
        if not _USER.match(user):
            raise UserError(f"user {user!r} is not a user name")
    port = None
    if rest.startswith("["):  # [ipv6]:port
        m = re.match(r"^\[([^\]]+)\](?::(\d+))?$", rest)
        if not m or not _IPV6.match(m.group(1)):
            raise UserError("not a bracketed IPv6 address")
        name, port = m.group(1), m.group(2)
    elif rest.count(":") == 1:
        name, port = rest.split(":")
    elif rest.count(":") > 1:
        if not _IPV6.match(rest):
            raise UserError("not a host name or address")
        name = rest
    else:
        name = rest
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise UserError(f"port {port!r} is not a port number")
        port = int(port)
    if ":" not in name and not _NAME.match(name):
        raise UserError(f"{name!r} is not a host name")
    return Host(text=text, name=name, user=user, port=port)


def check_remote_python(path: str) -> str:
    """``--remote-python``: a command name or path on the device (quoted anyway; refused when odd)."""
    if not path or path.startswith("-") or not _PATH.match(path):
        raise UserError(f"--remote-python {path!r}: give a path like /opt/venv/bin/python or a name like python3")
    return path
