"""``remote check HOST``: connect, probe every runtime, say what the device has, what it can run and,
in one line, what is missing with the ``pip install`` that fixes it."""

from __future__ import annotations

from dataclasses import dataclass, field

from partialdeploy.remote import probe as probes
from partialdeploy.remote.hosts import check_remote_python, parse_host
from partialdeploy.remote.session import Session
from partialdeploy.remote.ssh import SSHOptions


@dataclass
class CheckResult:
    host: str
    label: str
    probe: dict
    lines: list  # what the device has, one line per item
    missing: str | None  # one line when the device cannot run anything (exit 2)
    notes: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"host": self.host, "device": self.label, "probe": self.probe, "missing": self.missing,
                "notes": self.notes}


def check_device(host: str, python: str = "python3", options: SSHOptions | None = None) -> CheckResult:
    from partialdeploy.remote.profile import device_label

    h = parse_host(host)
    check_remote_python(python)
    notes: list = []
    with Session(h, python, options or SSHOptions(), notes=notes.append) as s:
        p = s.probe()
    ident = p.get("identity") if isinstance(p.get("identity"), dict) else {}
    lines = [f"device: {device_label(h, p)}; {ident.get('cores', '?')} cores, {ident.get('memory_gb', '?')} GB, "
             f"{ident.get('machine', '?')}"] + probes.summary(p)
    return CheckResult(h.text, device_label(h, p), p, lines, probes.missing(p, h.text, python), notes)
