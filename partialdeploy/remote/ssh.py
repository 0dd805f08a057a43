"""The transport: the system OpenSSH client, as subprocesses with argument lists (no local shell).

One ControlMaster connection per device (a private control-socket directory, mode 0700), so a run
costs one handshake; every later command rides on it. ``BatchMode=yes`` (never a password prompt),
host keys checked (``StrictHostKeyChecking=yes``; ``accept-new`` only with
``--accept-new-host-key``), no agent/X11/port forwarding to the device. The user's ``~/.ssh/config``
(aliases, ``ProxyJump``, ``IdentityFile``) applies, or ``--ssh-config FILE`` instead of it.

A command for the device is an argument list joined with POSIX quoting (``shlex.join``): the login
shell of the device reads it as exactly those words.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from partialdeploy.errors import PartialDeployError, UserError
from partialdeploy.remote.hosts import Host

SSH_ERROR = 255  # ssh's own failures; anything else is the remote command's exit code


class RemoteError(PartialDeployError):
    """The device's side failed (a crash, a lost connection): exit 1, with what it said."""

    exit_code = 1


class ConnectionLost(RemoteError):
    pass


@dataclass(frozen=True)
class SSHOptions:
    config: Path | None = None  # --ssh-config FILE (instead of ~/.ssh/config)
    accept_new_host_key: bool = False
    connect_timeout: int = 10
    alive_interval: int = 5  # ServerAliveInterval: a dead link is noticed after 3 silent intervals
    job_timeout_s: float | None = None  # --remote-timeout: the whole job on the device (None: a default)

    def check(self) -> "SSHOptions":
        if self.config is not None and not Path(self.config).is_file():
            raise UserError(f"--ssh-config {self.config}: no such file")
        if self.job_timeout_s is not None and not self.job_timeout_s > 0:
            raise UserError(f"--remote-timeout must be a positive duration, got {self.job_timeout_s}")
        return self


def ssh_binary() -> str:
    exe = shutil.which("ssh")
    if not exe:
        raise UserError("the OpenSSH client (ssh) is not installed here: apt install openssh-client "
                        "(or your system's package)")
    return exe


def explain(host: Host, stderr: str, rc: int | None = None) -> UserError:
    """One line from ssh's stderr: what went wrong and what to do (exit 2)."""
    s = stderr or ""
    low = s.lower()
    h = host.text
    if "remote host identification has changed" in low:
        return UserError(f"{h}: its host key CHANGED since it was recorded in known_hosts (a re-installed "
                         f"device or someone in between); check it, then remove the old key with "
                         f"ssh-keygen -R {host.name}")
    if "host key verification failed" in low or "host key is known" in low:
        return UserError(f"{h}: its host key is not known here, refused; check the key's fingerprint on the "
                         f"device, then accept it once with --accept-new-host-key (or run: ssh {h} true)")
    if "permission denied" in low:
        return UserError(f"{h} refused the login: no password prompts here (BatchMode); set up a key: "
                         f"ssh-keygen -t ed25519 && ssh-copy-id {h}")
    if "connection refused" in low:
        return UserError(f"{h}: connection refused (is sshd running on the device, and the port right?)")
    if "timed out" in low:
        return UserError(f"{h}: connection timed out (device off, wrong address or a firewall?)")
    if "could not resolve hostname" in low or "name or service not known" in low:
        return UserError(f"{h}: cannot resolve the host name (an ~/.ssh/config alias, or pass --ssh-config FILE)")
    if "no route to host" in low or "network is unreachable" in low:
        return UserError(f"{h}: no route to the device (network unreachable)")
    last = [ln for ln in s.strip().splitlines() if ln.strip()]
    return UserError(f"{h}: ssh failed (exit {rc}): {last[-1][:200] if last else 'no message'}")


class Connection:
    """One multiplexed SSH connection to ``host``; use as a context manager."""

    def __init__(self, host: Host, options: SSHOptions | None = None):
        self.host = host
        self.options = (options or SSHOptions()).check()
        self.exe = ssh_binary()
        self.ctl_dir: str | None = None
        self.master: subprocess.Popen | None = None
        self.notes: list[str] = []  # what ssh told us that the user should know (a key accepted)

    # ------------------------------------------------------------------ argv
    def _base(self) -> list[str]:
        o = self.options
        args = [self.exe]
        if o.config is not None:
            args += ["-F", str(o.config)]
        for kv in ("BatchMode=yes", f"ConnectTimeout={o.connect_timeout}",
                   f"StrictHostKeyChecking={'accept-new' if o.accept_new_host_key else 'yes'}",
                   f"ServerAliveInterval={o.alive_interval}", "ServerAliveCountMax=3",
                   "ForwardAgent=no", "ForwardX11=no", "ClearAllForwardings=yes", "PermitLocalCommand=no",
                   "RequestTTY=no"):
            args += ["-o", kv]
        if self.ctl_dir:
            args += ["-o", f"ControlPath={self.ctl_dir}/cm"]
        return args + self.host.ssh_args()

    def argv(self, command: list[str] | str) -> list[str]:
        """The local argument list that runs ``command`` (a list of words, or a fixed shell snippet
        of ours) on the device over the master connection."""
        text = command if isinstance(command, str) else shlex.join(command)
        return self._base() + ["-o", "ControlMaster=no", "--", self.host.name, text]

    # ------------------------------------------------------------------ lifetime
    def open(self) -> "Connection":
        self.ctl_dir = tempfile.mkdtemp(prefix="pd-ssh-")  # 0700: nobody else can use the socket
        err_path = os.path.join(self.ctl_dir, "master.err")
        with open(err_path, "wb") as err:
            # LogLevel INFO on the master only: ssh says "Permanently added" at that level (a note for the user)
            loud = ["-o", "LogLevel=INFO"] if self.options.accept_new_host_key else []
            self.master = subprocess.Popen(self._base() + loud + ["-M", "-N", "-o", "ControlPersist=no", "--",
                                                                  self.host.name],
                                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                           start_new_session=True)
        deadline = time.monotonic() + self.options.connect_timeout + 20
        sock = os.path.join(self.ctl_dir, "cm")
        while True:
            rc = self.master.poll()
            if rc is not None:
                msg = Path(err_path).read_text(errors="replace")
                self.close()
                raise explain(self.host, msg, rc)
            if os.path.exists(sock) and self._check():
                break
            if time.monotonic() > deadline:
                self.close()
                raise UserError(f"{self.host.text}: connection timed out (no answer in "
                                f"{self.options.connect_timeout + 20} s)")
            time.sleep(0.05)
        msg = Path(err_path).read_text(errors="replace")
        if "permanently added" in msg.lower():
            self.notes.append(f"accepted the new host key of {self.host.text} (--accept-new-host-key); "
                              "it is now in known_hosts")
        return self

    def _check(self) -> bool:
        r = subprocess.run(self._base() + ["-O", "check", "--", self.host.name], capture_output=True, timeout=10)
        return r.returncode == 0

    def alive(self) -> bool:
        return self.master is not None and self.master.poll() is None

    def close(self) -> None:
        if self.master is not None:
            if self.master.poll() is None:
                try:
                    subprocess.run(self._base() + ["-O", "exit", "--", self.host.name], capture_output=True,
                                   timeout=10)
                except (OSError, subprocess.SubprocessError):
                    pass
                try:
                    self.master.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    self.master.kill()
                    self.master.wait()
            self.master = None
        if self.ctl_dir:
            shutil.rmtree(self.ctl_dir, ignore_errors=True)
            self.ctl_dir = None

    def __enter__(self) -> "Connection":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ commands
    def run(self, command: list[str] | str, stdin=None, timeout: float | None = 120,
            check: bool = True) -> subprocess.CompletedProcess:
        """Run a command on the device; ``stdin``: bytes or an open file. UserError when ssh itself
        failed (exit 255), the CompletedProcess otherwise (``check``: RemoteError on a non-zero exit)."""
        kw = {"input": stdin} if isinstance(stdin, (bytes, type(None))) else {"stdin": stdin}
        try:
            r = subprocess.run(self.argv(command), capture_output=True, timeout=timeout, start_new_session=True,
                               **kw)
        except subprocess.TimeoutExpired:
            raise RemoteError(f"{self.host.text}: a command did not finish in {timeout:.0f} s") from None
        if r.returncode == SSH_ERROR and not self.alive():
            raise ConnectionLost(f"{self.host.text}: the connection was lost")
        if r.returncode == SSH_ERROR:
            raise explain(self.host, r.stderr.decode(errors="replace"), r.returncode)
        if check and r.returncode != 0:
            raise RemoteError(f"{self.host.text}: `{shlex.join(command) if isinstance(command, list) else 'sh'}` "
                              f"failed (exit {r.returncode}): {tail(r.stderr)}")
        return r

    def popen(self, command: list[str] | str, **kw) -> subprocess.Popen:
        """A long-running command with pipes; in its own process group so a terminal's Ctrl-C reaches
        only us (we stop the device's side in order)."""
        return subprocess.Popen(self.argv(command), start_new_session=True, **kw)


def tail(data: bytes | str, lines: int = 8, chars: int = 1500) -> str:
    """The last lines of a device's stderr, as one line."""
    s = data.decode(errors="replace") if isinstance(data, bytes) else data
    t = " | ".join(ln.strip() for ln in s.strip().splitlines()[-lines:] if ln.strip())
    return t[-chars:] if t else "(no output on stderr)"
