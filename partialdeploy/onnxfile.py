"""An ONNX file's external data stays inside its folder: checked before any runtime opens it.

A tensor stored outside the ``.onnx`` names its file by a ``location`` relative to the model. A
location that is absolute or climbs out of the model's folder (``../secret``) would make the runtime
read an arbitrary file; ONNX Runtime and ``onnx.load`` refuse it with their own exception types (an
"internal error" or a "runtime failure" to the user). This says what is wrong in one line (exit 2).
"""

from __future__ import annotations

import os
from pathlib import Path

from partialdeploy.errors import UserError, first_line


def _tensors(graph):
    yield from graph.initializer
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t
            yield from a.tensors
            for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _tensors(g)


def check_external_data(path: str | Path) -> None:
    """UserError when the file at ``path`` is not a readable ONNX model, or a tensor of it keeps its
    data outside the model's folder or in a file that is missing."""
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ImportError:  # the runtime's own check still applies
        return
    p = Path(path)
    try:
        model = onnx.load(str(p), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as e:
        raise UserError(f"cannot load {p}: not a readable ONNX model ({first_line(e, 120)}); re-export it "
                        "or check the path") from None
    except OSError as e:
        raise UserError(f"cannot read {p}: {e.strerror}") from None
    base = p.resolve().parent
    for t in _tensors(model.graph):
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        loc = {e.key: e.value for e in t.external_data}.get("location", "")
        target = (base / loc).resolve()
        if not loc or os.path.isabs(loc) or not target.is_relative_to(base):
            raise UserError(f"{p}: tensor {t.name[:80]!r} keeps its data in {loc[:120]!r}, outside the model's "
                            "folder: refusing to read it (put the data file next to the model and re-save it)")
        if not target.is_file():
            raise UserError(f"{p}: the external data file {loc[:120]!r} of tensor {t.name[:80]!r} is missing "
                            "(copy it next to the model)")
