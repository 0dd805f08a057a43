"""What travels to the device: a zipapp of the torch-free device-side code, built from the installed
package, and a bootstrap that checks the zipapp's sha256 before running it.

The zipapp holds ``partialdeploy.remote.agent`` and every ``partialdeploy`` module it can reach
(imports at any depth, every runtime's declaration and the runners the backends name as
``"module:Class"``) short of the export side (``NOT_SHIPPED``): profiling, runners, records, integrity, the families'
block names, the TensorRT build — no converters, no torch, no data files. It is built in
memory with fixed timestamps, so the same installed package gives the same sha256.
"""

from __future__ import annotations

import ast
import hashlib
import io
import re
import zipfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent  # the installed partialdeploy package
ROOTS = ("partialdeploy.remote.agent", "partialdeploy.backends.tensorrt.build")
_RUNNER_REF = re.compile(r"^(partialdeploy\.backends\.[a-z_]+\.runner):[A-Za-z_]+$")
MIN_PYTHON = (3, 9)
# The export side, never needed to profile or build an exported artifact: the closure does not follow
# lazy imports into it (the package's PEP 562 API facade, the models, the torch runner, the export, the
# converters, planner, diff and inspect, CLI). The families do ship (torch-free at import): the per-layer
# pass names blocks as the model's family does. The device-side tests run the real thing.
NOT_SHIPPED = ("partialdeploy.api", "partialdeploy.backends.torch.runner", "partialdeploy.backends.target",
               "partialdeploy.models", "partialdeploy.exporting",
               "partialdeploy.planner", "partialdeploy.cli",
               "partialdeploy.analysis.blockdiff", "partialdeploy.analysis.sides", "partialdeploy.analysis.taps",
               "partialdeploy.analysis.inspect")

MAIN = "from partialdeploy.remote.agent import main\nmain()\n"

# Runs first on the device (stdlib only, any Python 3): refuses a zipapp whose sha256 is not the one
# sent, and a Python older than MIN_PYTHON, before any of our code is loaded.
BOOT = (
    "import hashlib,runpy,sys\n"
    f"if sys.version_info<{MIN_PYTHON!r}:\n"
    "    sys.stderr.write('partialdeploy: Python %d.%d on this device is too old (need >= %d.%d)\\n'"
    f" % (sys.version_info[:2]+{MIN_PYTHON!r})); sys.exit(98)\n"
    "p,h=sys.argv[1],sys.argv[2]\n"
    "with open(p,'rb') as f: d=f.read()\n"
    "if hashlib.sha256(d).hexdigest()!=h:\n"
    "    sys.stderr.write('partialdeploy: the code on this device is not what was sent (sha256): refused\\n');"
    " sys.exit(97)\n"
    "sys.argv=[p]+sys.argv[3:]\n"
    "runpy.run_path(p,run_name='__main__')\n"
)
EXIT_TOO_OLD, EXIT_TAMPERED = 98, 97


def _file_of(module: str) -> Path | None:
    rel = module.split(".")[1:]
    if not rel:
        return PKG / "__init__.py"
    p = PKG.joinpath(*rel).with_suffix(".py")
    if p.is_file():
        return p
    p = PKG.joinpath(*rel) / "__init__.py"
    return p if p.is_file() else None


def _imports(module: str, path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("partialdeploy"):
            out.add(node.module)
            out |= {f"{node.module}.{a.name}" for a in node.names if _file_of(f"{node.module}.{a.name}")}
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("partialdeploy")}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            m = _RUNNER_REF.match(node.value)
            if m:
                out.add(m.group(1))
    parts = module.split(".")
    out |= {".".join(parts[:i]) for i in range(1, len(parts))}  # the packages above it
    return out


def modules() -> list[str]:
    """Every module the device side can import (closure over imports, from ``ROOTS`` and every backend)."""
    todo = list(ROOTS) + [f"partialdeploy.backends.{p.parent.name}" for p in (PKG / "backends").glob("*/__init__.py")]
    seen: set[str] = set()
    while todo:
        m = todo.pop()
        if m in seen or any(m == n or m.startswith(n + ".") for n in NOT_SHIPPED):
            continue
        f = _file_of(m)
        if f is None:
            continue
        seen.add(m)
        todo += sorted(_imports(m, f) - seen)
    return sorted(seen)


@dataclass(frozen=True)
class Payload:
    data: bytes
    sha256: str
    modules: tuple[str, ...]


@lru_cache(maxsize=1)
def build() -> Payload:
    """The zipapp (bytes), its sha256 and the modules in it."""
    mods = modules()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        def add(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            z.writestr(info, data)

        add("__main__.py", MAIN.encode())
        for m in mods:
            f = _file_of(m)
            add(f.relative_to(PKG.parent).as_posix(), f.read_bytes())
    data = buf.getvalue()
    return Payload(data, hashlib.sha256(data).hexdigest(), tuple(mods))


def boot_command(python: str, zipapp: str, sha256: str, *args: str) -> list[str]:
    """The device-side argument list that checks and runs the zipapp."""
    return [python, "-c", BOOT, zipapp, sha256, *args]
