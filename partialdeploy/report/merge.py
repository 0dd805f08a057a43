"""Reports from several devices joined into one (``report merge``, ``profile --remote`` with several
hosts): every row carries its device, each device's environment is kept."""

from __future__ import annotations

import json
from pathlib import Path

from partialdeploy.errors import UserError
from partialdeploy.report.schema import SCHEMA, results


def merge(reports: list[tuple[str, dict]], device_names: list[str] | None = None) -> dict:
    """Join reports (from several devices) into one: every result carries its ``device``; each
    device's environment is kept under ``environments``."""
    if not reports:
        raise UserError("merge needs at least one report")
    out = {"schema": SCHEMA, "tool": reports[0][1].get("tool"),
           "created": max(r.get("created", "") for _, r in reports), "merged_from": [],
           "model": reports[0][1].get("model", {}), "settings": reports[0][1].get("settings", {}),
           "environments": {}, "complete": all(r.get("complete", True) for _, r in reports),
           "interrupted": any(r.get("interrupted") for _, r in reports), "results": []}
    for i, (src, r) in enumerate(reports):
        models = {r.get("model", {}).get("name"), out["model"].get("name")}
        if len(models) > 1:
            out.setdefault("warnings", []).append(f"{src} profiles model {r.get('model', {}).get('name')!r}, not "
                                                  f"{out['model'].get('name')!r}")
        envs = r.get("environments") or {r.get("device", src): r.get("environment") or {}}
        for res in results(r):
            dev = (device_names[i] if device_names and i < len(device_names) else None) or res.device \
                or r.get("device") or src
            env = envs.get(res.device or r.get("device"), r.get("environment") or {})
            res.device = dev
            out["results"].append(res.to_dict())
            out["environments"].setdefault(dev, env)
        out["merged_from"].append({"source": src, "device": r.get("device"), "created": r.get("created")})
    return out


def save(report: dict, path: str | Path) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(report, indent=1, default=str))
    return p
