"""Synthetic exports and profile reports for the planner tests: real files with real sha256s in a
manifest, profile rows tied to them, numbers chosen by the test (no runtime, no torch)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def make_export(d: Path, checkpoint: str, arts: list[dict], params: int | None = 100_000) -> dict:
    """An export directory: one artifact file per entry of ``arts`` (target, precision, size, and
    ``acc``/``acc_ref`` for a labelled-set accuracy or ``agree`` for top-1 agreement only)."""
    d.mkdir(parents=True, exist_ok=True)
    entries = []
    for a in arts:
        rel = f"{a['target']}/{a['precision']}/model.bin"
        blob = (checkpoint + rel).encode() * max(1, a.get("size", 1000) // 40)
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_bytes(blob)
        parity = [{"stage": f"ONNX -> x {a['precision']} (16 parity images)", "n": 16, "max_abs": 0.0,
                   "rel_max": 0.0, "cosine_min": 1.0, "top1_agree": a.get("agree", 1.0)}]
        if "acc" in a:
            parity.append({"stage": f"ONNX -> x {a['precision']} (360 held-out test images)", "n": 360,
                           "max_abs": 0.1, "rel_max": 0.1, "cosine_min": 0.99, "top1_agree": 0.99,
                           "acc": a["acc"], "acc_ref": a.get("acc_ref", a["acc"])})
        entries.append({"target": a["target"], "precision": a["precision"], "path": rel, "files": [rel],
                        "sha256": _sha(blob), "files_sha256": {rel: _sha(blob)}, "size_bytes": len(blob),
                        "parity": parity, "verified": "parity", "command": f"partialdeploy export {checkpoint}"})
    m = {"schema": "partialdeploy.manifest/1", "command": f"partialdeploy export {checkpoint}",
         "model": {"name": f"Net({checkpoint})", "checkpoint": f"{checkpoint}.safetensors",
                   "checkpoint_sha256": _sha(checkpoint.encode()), "params": params, "flops": 10 * (params or 0)},
         "preprocessing": {}, "artifacts": entries}
    (d / "manifest.json").write_text(json.dumps(m))
    return m


def row(entry: dict, batch: int, p50: float, p90: float | None = None, ips: float | None = None,
        mem: float = 100.0, status: str = "ok", device: str | None = None) -> dict:
    p90 = p50 * 1.2 if p90 is None else p90
    r = {"target": entry["target"], "runtime": entry["target"], "precision": entry["precision"],
         "artifact": entry["path"], "mode": "latency", "threads": None, "batch": batch, "status": status,
         "sha256": entry["sha256"]}
    if device:
        r["device"] = device
    if status == "ok":
        r.update({"latency_ms": {"p50": p50, "p90": p90, "p99": p90 * 1.5, "mean": p50, "std": 0.01, "min": p50 * 0.9,
                                 "max": p90 * 2}, "runs": 50, "throughput_ips": ips or 1000.0 * batch / p50,
                  "memory": {"peak_rss_mb": mem}})
    else:
        r["reason"] = "needs an NVIDIA GPU"
    return r


def write_report(path: Path, device: str, rows: list[dict], source: str | None = None) -> Path:
    rep = {"schema": "partialdeploy.profile/1", "device": device, "source": source or str(path.parent),
           "model": {}, "settings": {}, "environment": {}, "results": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rep))
    return path


def three_variants(tmp: Path) -> dict:
    """Three checkpoints (narrow, base, wide) × (ort fp32, ov int8), profiled on two devices: a fast
    box and a slow board. Returns {name: report path}."""
    spec = {"narrow": (0.975, 0.972, 50_000, 1.0), "base": (0.990, 0.988, 200_000, 2.0),
            "wide": (0.994, 0.990, 400_000, 3.5)}
    out = {}
    for name, (acc32, acc8, params, lat) in spec.items():
        d = tmp / name
        m = make_export(d, name, [{"target": "onnxruntime", "precision": "fp32", "size": params * 4, "acc": acc32},
                                  {"target": "openvino", "precision": "int8", "size": params, "acc": acc8,
                                   "acc_ref": acc32}], params=params)
        fp32, int8 = m["artifacts"]
        out[name] = write_report(d / "profile.json", "box", [row(fp32, 1, lat), row(int8, 1, lat / 2)])
        out[name + "@board"] = write_report(tmp / f"{name}-board" / "profile.json", "board",
                                            [row(fp32, 1, 4 * lat), row(int8, 1, 2 * lat)], source=str(d))
    return out
