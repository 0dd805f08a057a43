"""Weight checks, run before anything is built or exported (generic: any state_dict, any family).

``check_tensors(sd)`` looks at the tensors alone: strided CPU tensors only (sparse, meta,
quantized, complex and boolean tensors are refused), finite floating values, BatchNorm running
variances ≥ 0. ``check_against_model(sd, own)`` compares them with the state_dict of the model
built from the inferred architecture: the same keys (missing and unknown extra keys named), the
same shapes, and the same kind of dtype (a floating parameter stored as integers is refused: it
would be silently cast and then "certified" by a parity gate that compares the damaged model with
its own deploy form). Every refusal is a UserError (exit 2) naming the key.
"""

from __future__ import annotations

from partialdeploy.errors import UserError

_MAX_NAMED = 3


def _few(items: list[str]) -> str:
    return ", ".join(items[:_MAX_NAMED]) + (f" (+{len(items) - _MAX_NAMED} more)" if len(items) > _MAX_NAMED else "")


def _kind(dtype) -> str:
    import torch

    if dtype.is_complex:
        return "complex"
    if dtype.is_floating_point:
        return "floating"
    if dtype == torch.bool:
        return "boolean"
    return "integer"


def check_tensors(sd: dict, name: str = "checkpoint") -> None:
    """Refuse tensors no trained network holds (see module doc). Raises UserError naming the key."""
    import torch

    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            raise UserError(f"{name}: {k} is a {type(v).__name__}, not a tensor: the file is damaged")
        if v.layout != torch.strided:
            raise UserError(f"{name}: {k} is a sparse tensor ({v.layout}); weights must be dense: "
                            "re-save with tensor.to_dense()")
        if v.device.type == "meta":
            raise UserError(f"{name}: {k} is a meta tensor (shape only, no values): the checkpoint was saved "
                            "before its weights were materialized; re-save it from a loaded model")
        if v.is_quantized:
            raise UserError(f"{name}: {k} is a quantized tensor ({v.dtype}); export from the float checkpoint "
                            "(use --precision int8 to quantize)")
        kind = _kind(v.dtype)
        if kind in ("complex", "boolean"):
            raise UserError(f"{name}: {k} has dtype {str(v.dtype).replace('torch.', '')}; weights must be "
                            "floating point: the checkpoint is damaged")
    bad = [k for k, v in sd.items() if v.is_floating_point() and v.numel() and not bool(torch.isfinite(v).all())]
    if bad:
        raise UserError(f"{name} has non-finite values (NaN/inf) in {_few(bad)}: it is corrupt; use an earlier "
                        "checkpoint")
    neg = [k for k, v in sd.items() if k.endswith("running_var") and v.is_floating_point() and v.numel()
           and bool((v < 0).any())]
    if neg:
        raise UserError(f"{name} has negative BatchNorm variances in {_few(neg)}: it is corrupt (a variance "
                        "cannot be below 0); use an earlier checkpoint")


def check_against_model(sd: dict, own: dict, model_name: str) -> None:
    """Keys, shapes and dtype kinds of ``sd`` against ``own`` (the state_dict of the model built from
    the inferred architecture)."""
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    shape = [f"{k} {tuple(sd[k].shape)}≠{tuple(own[k].shape)}" for k in own
             if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shape:
        parts = [f"{label}: {_few(items)}" for label, items in
                 (("shape mismatch", shape), ("missing", missing), ("unknown extra keys", unexpected)) if items]
        raise UserError(f"weights do not fit {model_name}: " + "; ".join(parts) + " — check --variant")
    wrong = [f"{k} ({str(sd[k].dtype).replace('torch.', '')})" for k in own
             if _kind(sd[k].dtype) != _kind(own[k].dtype)]
    if wrong:
        want = {_kind(own[k.split(' ')[0]].dtype) for k in wrong}
        raise UserError(f"weights of the wrong dtype: {_few(wrong)} should be {' or '.join(sorted(want))}: "
                        "the checkpoint is damaged (re-save it from the trained model)")
