"""The per-layer pass: each artifact opened again with its runtime's profiler on (profiling slows
inference, so it never touches the timed runs), warm-up counters dropped, and the layers mapped to
the block names the model's family gives them."""

from __future__ import annotations

import tempfile
from pathlib import Path

from partialdeploy.errors import first_line
from partialdeploy.profiling.settings import Settings, runner_options


def block_of(name: str, model=None) -> str:
    """Map an ONNX / OpenVINO / TensorRT layer name to the official block it came from, as the
    model's family names it (``model``: an ArchSpec or a manifest's ``model`` dict; without one,
    whichever family recognises the name). ``/stages/stages.0/blocks/blocks.1/mlp/mlp.0/Conv`` ->
    ``stages.0.blocks.1``; ``node_Conv_12_layer2_1_conv1`` -> ``layer2.1``; deploy-form
    ``/body/body.5/fc1/Conv`` -> that body block's official name; anything else -> ``other``. Fused
    layers (``a + b``) take the first name that maps."""
    from partialdeploy import families

    return families.block_of_layer(name, model)


def layer_breakdown(rows: list[dict], top: int = 10, model=None) -> dict:
    """Top-N layers, time per block (``model``: see :func:`block_of`) and per op type. ``rows`` come in execution order:
    a layer whose name does not map (fused or renamed by the runtime, e.g. ``Gelu``) is counted in
    the block of the layer before it and flagged ``block_inferred``."""
    rows = [dict(r) for r in rows if r.get("time_ms", 0) > 0]
    total = sum(r["time_ms"] for r in rows)
    blocks: dict[str, float] = {}
    ops: dict[str, float] = {}
    prev = None
    from partialdeploy import families

    fam = families.family_of(model) if model is not None else None
    spec = families.spec_of(model) if fam is not None else None
    for r in rows:
        b = (fam.block_of_layer(r["name"], spec) or "other") if fam is not None else block_of(r["name"])
        if b == "other" and prev is not None:
            b, r["block_inferred"] = prev, True
        r["block"] = prev = b
        blocks[r["block"]] = blocks.get(r["block"], 0.0) + r["time_ms"]
        ops[r.get("op") or "?"] = ops.get(r.get("op") or "?", 0.0) + r["time_ms"]
    rows.sort(key=lambda r: -r["time_ms"])

    def pct(v):
        return 100.0 * v / total if total else 0.0

    return {
        "total_ms": total,
        "layer_count": len(rows),
        "top": [{**r, "pct": pct(r["time_ms"])} for r in rows[:top]],
        "blocks": [{"block": k, "time_ms": v, "pct": pct(v)} for k, v in sorted(blocks.items(), key=lambda kv: -kv[1])],
        "ops": [{"op": k, "time_ms": v, "pct": pct(v)} for k, v in sorted(ops.items(), key=lambda kv: -kv[1])],
    }


def layer_pass(case, art, base: Path, settings: Settings, model=None) -> None:
    """Per-layer times of one measured case (its artifact ``art``, its feed) into ``case.result.layers``
    (or the reason into ``layers_error``): a fresh runner with the profiler on, a short warm-up whose
    counters are dropped (``reset_layer_times``), then ``layer_runs`` inferences."""
    from partialdeploy.backends.runner import runner_for

    s, tgt = settings, case.result.runtime
    with tempfile.TemporaryDirectory(prefix="pd-layers-") as tmp:
        try:
            cls = runner_for(tgt)
            r = cls(base / art.path, threads=s.threads, **runner_options(cls, s, art, layers=True, scratch=tmp))
            r.load()
            for _ in range(max(2, min(s.warmup, 5))):
                r.infer(case.feed)
            r.reset_layer_times()  # counters of the warm-up runs are not wanted
            for _ in range(s.layer_runs):
                r.infer(case.feed)
            rows = r.layer_times()
            r.close()
        except KeyboardInterrupt:
            raise
        except Exception as e:
            case.result.layers_error = first_line(e, 200)
            return
    if rows:
        lb = layer_breakdown(rows, s.top, model)
        lb.update({"batch": case.batch, "runs": s.layer_runs, "source": cls.layer_source or tgt})
        case.result.layers = lb
