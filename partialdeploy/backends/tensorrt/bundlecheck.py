"""The fields of a TensorRT bundle's ``bundle.json`` that building an engine reads, checked for type
before any is used: a damaged or hand-edited bundle is refused in one line (exit 2) instead of
failing somewhere inside the build with a Python error."""

from __future__ import annotations


def _int(v, lo: int = 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def problem(b: dict) -> str | None:
    """What is wrong with the bundle description ``b`` (None when building can read it)."""
    checks = [
        ("onnx", isinstance(b.get("onnx"), str) and b.get("onnx"), "a file name"),
        ("precision", isinstance(b.get("precision"), str), "text"),
        ("tensorrt", isinstance(b.get("tensorrt") or {}, dict), "a mapping"),
        ("workspace_mb", b.get("workspace_mb") is None or _int(b.get("workspace_mb")), "a positive integer"),
        ("timing_cache", isinstance(b.get("timing_cache", "timing.cache"), str), "a file name"),
        ("dynamic_batch", isinstance(b.get("dynamic_batch"), bool), "true or false"),
        ("parity", isinstance(b.get("parity"), dict)
         and isinstance(b["parity"].get("tolerance") or {}, (dict, str)), "a mapping with a tolerance"),
    ]
    inp, bat = b.get("input"), b.get("batch")
    checks.append(("input", isinstance(inp, dict) and isinstance(inp.get("name"), str)
                   and isinstance(inp.get("shape"), list) and len(inp["shape"]) == 4
                   and all(_int(d) for d in inp["shape"][1:]), "{name, shape: [N, C, H, W]}"))
    checks.append(("batch", isinstance(bat, dict) and all(_int(bat.get(k)) for k in ("min", "opt", "max"))
                   and bat["min"] <= bat["opt"] <= bat["max"], "{min <= opt <= max, positive integers}"))
    t = b.get("tensorrt") or {}
    if isinstance(t, dict):
        checks.append(("tensorrt.expected", t.get("expected") is None or _int(t.get("expected")), "an integer"))
        bw = t.get("builds_with")
        checks.append(("tensorrt.builds_with", bw is None or (isinstance(bw, list) and all(_int(g) for g in bw)),
                       "a list of integers"))
        tol = (b.get("parity") or {}).get("tolerance") if isinstance(b.get("parity"), dict) else None
        if isinstance(tol, dict):
            from dataclasses import fields

            from partialdeploy.parity import Tolerance

            names = {f.name for f in fields(Tolerance)}
            checks.append(("parity.tolerance", all(k in names and (v is None or (isinstance(v, (int, float))
                                                                              and not isinstance(v, bool)))
                                                   for k, v in tol.items()), f"numbers for {', '.join(sorted(names))}"))
    for key, ok, what in checks:
        if not ok:
            return f"field {key!r} is not {what}"
    return None
