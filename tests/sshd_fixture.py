"""A real OpenSSH server for the remote tests: ``/usr/sbin/sshd`` on 127.0.0.1 on a free port, with
throw-away host and client keys, and an ssh_config that points the client at them (the user's own
~/.ssh is never read or written). The "device" is this machine; its TMPDIR (sshd ``SetEnv``) is a
directory of the fixture, so a test can see exactly what the device side left behind."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def why_no_sshd() -> str | None:
    if not os.path.exists(SSHD):
        return f"OpenSSH server not installed ({SSHD} missing): apt-get install -y openssh-server (.ci/run does)"
    if not shutil.which("ssh") or not shutil.which("ssh-keygen"):
        return "OpenSSH client (ssh, ssh-keygen) not installed: apt-get install -y openssh-client"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "partialdeploy-test", "-f", str(path)],
                   check=True, capture_output=True)
    return path


@dataclass
class SSHServer:
    root: Path
    port: int
    user: str
    proc: subprocess.Popen
    client_key: Path
    known_hosts: Path
    remote_tmp: Path  # the device's TMPDIR

    @property
    def host(self) -> str:
        return f"{self.user}@127.0.0.1:{self.port}"

    def ssh_config(self, known: bool = True, name: str = "ssh_config") -> Path:
        """An ssh_config for this server; ``known=False``: an empty known_hosts (host key unknown)."""
        kh = self.known_hosts if known else self.root / f"{name}.known_hosts"
        if not known:
            kh.write_text("")
        p = self.root / name
        p.write_text(f"Host *\n  IdentityFile {self.client_key}\n  IdentitiesOnly yes\n  IdentityAgent none\n"
                     f"  UserKnownHostsFile {kh}\n  GlobalKnownHostsFile /dev/null\n  LogLevel ERROR\n")
        return p

    def logins(self) -> int:
        """How many SSH handshakes (public-key logins) the server has accepted so far."""
        return (self.root / "sshd.log").read_text(errors="replace").count("Accepted publickey")

    def leftovers(self) -> list[str]:
        return sorted(p.name for p in self.remote_tmp.iterdir())

    def device_processes(self) -> list[int]:
        """Processes of this machine whose command line names the device's temporary folder."""
        needle = str(self.remote_tmp).encode()
        pids = []
        for d in Path("/proc").iterdir():
            if d.name.isdigit():
                try:
                    if needle in (d / "cmdline").read_bytes() or needle in os.readlink(d / "cwd").encode():
                        pids.append(int(d.name))
                except OSError:
                    continue
        return pids

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_sshd(root: Path) -> SSHServer:
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o700)
    host_key = keygen(root / "host_ed25519")
    client_key = keygen(root / "client_ed25519")
    auth = root / "authorized_keys"
    auth.write_text((root / "client_ed25519.pub").read_text())
    remote_tmp = root / "device-tmp"
    remote_tmp.mkdir()
    user = getpass.getuser()
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
    # a chatty device: something prints on stdout and stderr before every command (as shell start-up
    # files and banners do); what we read back must not be fooled by it
    chatty = ("ForceCommand echo 'Welcome to the device (start-up output)'; echo 'start-up note' >&2; "
              'eval "$SSH_ORIGINAL_COMMAND"\n')
    port = free_port()
    cfg = root / "sshd_config"
    cfg.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {root / 'sshd.pid'}\n"
                   f"AuthorizedKeysFile {auth}\nPermitRootLogin prohibit-password\nPubkeyAuthentication yes\n"
                   "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                   f"AllowUsers {user}\nPrintMotd no\nLogLevel INFO\nSetEnv TMPDIR={remote_tmp}\n" + chatty +
                   "MaxSessions 20\nMaxStartups 20\n")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=open(root / "sshd.log", "wb"))
    known = root / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {(root / 'host_ed25519.pub').read_text().split(' ', 2)[0]} "
                     f"{(root / 'host_ed25519.pub').read_text().split(' ', 2)[1]}\n")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited: {(root / 'sshd.log').read_text()[-500:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("sshd did not start listening in 15 s")
    return SSHServer(root, port, user, proc, client_key, known, remote_tmp)
