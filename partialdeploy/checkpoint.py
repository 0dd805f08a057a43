"""Safe checkpoint loading, format detection and architecture inference.

Loading never executes code from the file: pickles go through ``torch.load(weights_only=True)``
(an allow-list unpickler) with only ``argparse.Namespace`` and stand-ins for Lightning's
``AttributeDict`` added, so a Lightning checkpoint loads without Lightning installed;
``.safetensors`` holds no code at all.
"""

from __future__ import annotations

import argparse
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from partialdeploy.errors import UserError, first_line
from partialdeploy import families
from partialdeploy.families.partialnet import infer_from_weights  # noqa: F401  (re-exported)
from partialdeploy.spec import ArchSpec
from partialdeploy.integrity import file_sha256
from partialdeploy.weights import check_against_model, check_tensors


_ATTRDICT_NAMES = (
    "lightning.fabric.utilities.data.AttributeDict",
    "lightning_fabric.utilities.data.AttributeDict",
    "pytorch_lightning.utilities.parsing.AttributeDict",
    "lightning.pytorch.utilities.parsing.AttributeDict",
)

SPEC_METADATA_KEY = "partialdeploy.spec"


@dataclass
class Checkpoint:
    path: Path
    format: str  # "lightning", "state_dict", "wrapped:<key>", "safetensors"
    state_dict: dict
    hyper_parameters: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)  # safetensors metadata
    sha256: str = ""
    dropped_prefixes: list[str] = field(default_factory=list)


def _torch_load(path: Path) -> Any:
    import pickle

    import torch

    # AttributeDict is rebuilt as a plain dict (the allow-list unpickler only fills real dicts)
    safe = [argparse.Namespace] + [(dict, n) for n in _ATTRDICT_NAMES]
    try:
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        m = re.search(r"GLOBAL ([\w.]+)|Unsupported global: GLOBAL ([\w.]+)", msg)
        if m or "Can only" in msg or "Unsupported class" in msg:
            what = next((g for g in (m.groups() if m else ()) if g), "a non-tensor object")
            raise UserError(
                f"refusing to load {path.name}: it contains code or objects ({what}) that loading would "
                "execute; only tensors and plain containers are accepted. Re-save the state_dict "
                "(torch.save(model.state_dict(), ...)) or convert it to .safetensors") from None
        raise UserError(f"{path.name} is corrupt or not a PyTorch checkpoint (unreadable pickle); "
                        "re-download or re-export it") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AttributeError, TypeError,
            IndexError, KeyError) as e:
        raise UserError(f"{path.name} is corrupt or truncated ({first_line(e, 240)}); "
                        "re-download or re-export it") from None


def _load_safetensors(path: Path) -> tuple[dict, dict]:
    try:
        from safetensors import safe_open

        tensors, meta = {}, {}
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
        return tensors, meta
    except ImportError:
        raise UserError("reading .safetensors needs the safetensors package: pip install safetensors") from None
    except Exception as e:
        raise UserError(f"{path.name} is not a valid safetensors file ({first_line(e, 240)}); re-export it") from None


def _as_dict(obj) -> dict:
    if isinstance(obj, argparse.Namespace):
        return dict(vars(obj))
    if isinstance(obj, dict):
        return dict(obj)
    return {}


def _is_tensor_dict(d) -> bool:
    import torch

    return isinstance(d, dict) and len(d) > 0 and all(isinstance(v, torch.Tensor) for v in d.values())


def _exported_model_kind(p: Path) -> str | None:
    """'an ONNX model' etc. when ``p`` is an artifact of a runtime (by its suffix), else None."""
    from partialdeploy.backends import runtime_for_path

    if p.suffix.lower() in (".ckpt", ".pth", ".pt", ".bin", ".safetensors"):
        return None
    try:
        rt = runtime_for_path(p)
    except UserError:  # not a known artifact suffix
        return None
    return f"an exported model ({p.suffix}, run by {rt})" if rt else None


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read any supported checkpoint and return the model's state_dict with official key names."""
    p = Path(path)
    if not p.exists():
        raise UserError(f"checkpoint {path} does not exist: check the path")
    if p.is_dir():
        raise UserError(f"{path} is a directory: pass a checkpoint file (.ckpt, .pth, .pt, .safetensors)")
    if not p.is_file():  # a FIFO, a device (/dev/zero), a socket: reading it could block or never end
        raise UserError(f"{path} is not a regular file (a pipe, device or socket): pass the checkpoint file itself "
                        "(.ckpt, .pth, .pt, .safetensors)")
    exported = _exported_model_kind(p)
    if exported:
        raise UserError(f"{path} is {exported}, not a checkpoint: `inspect` and `export` read training checkpoints "
                        f"(.ckpt, .pth, .pt, .safetensors); `partialdeploy profile {path}` times it, "
                        f"`partialdeploy diff CHECKPOINT {path}` compares it with its checkpoint")
    if p.stat().st_size == 0:
        raise UserError(f"{path} is empty: re-download or re-export it")
    with open(p, "rb") as f:
        head = f.read(16)
    hp: dict = {}
    meta: dict = {}
    if p.suffix == ".safetensors" or (head[8:9] == b"{" and p.suffix not in (".ckpt", ".pth", ".pt", ".bin")):
        sd, meta = _load_safetensors(p)
        fmt = "safetensors"
    else:
        obj = _torch_load(p)
        fmt = "state_dict"
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            hp = _as_dict(obj.get("hyper_parameters") or obj.get("hparams") or {})
            fmt = "lightning" if ("pytorch-lightning_version" in obj or hp or "epoch" in obj) else "wrapped:state_dict"
            sd = obj["state_dict"]
        elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
            sd, fmt = obj["model"], "wrapped:model"
        elif isinstance(obj, dict) and "model_state_dict" in obj and isinstance(obj["model_state_dict"], dict):
            sd, fmt = obj["model_state_dict"], "wrapped:model_state_dict"
        elif isinstance(obj, dict):
            sd = obj
        else:
            raise UserError(f"{p.name} holds a {type(obj).__name__}, not a state_dict; save model.state_dict()")
    sd, dropped = _normalize_keys(sd)
    if not _is_tensor_dict(sd):
        raise UserError(f"{p.name} has no tensors under the expected keys; is it a PartialNet/FasterNet checkpoint?")
    check_tensors(sd, p.name)  # dtype, layout, finite, BatchNorm variances: before anything is built
    return Checkpoint(p, fmt, sd, hp, meta, file_sha256(p), dropped)


def _normalize_keys(sd: dict) -> tuple[dict, list[str]]:
    """Take the ``model.`` subset of a Lightning state_dict (drops e.g. a distillation teacher under
    ``criterion.``) and strip ``module.`` (DataParallel) / ``_orig_mod.`` (torch.compile) prefixes."""
    import torch

    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    dropped: list[str] = []
    if any(k.startswith("model.") for k in sd) and not any(k.startswith("patch_embed.") for k in sd):
        others = sorted({k.split(".", 1)[0] + "." for k in sd if not k.startswith("model.")})
        dropped = others
        sd = {k[len("model."):]: v for k, v in sd.items() if k.startswith("model.")}
    for prefix in ("module.", "_orig_mod.", "model."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd, dropped


# ------------------------------------------------------------------------------------------------
# architecture inference (each family reads its own weights: partialdeploy.families)


def resolve_spec(ckpt: Checkpoint, variant: str | None = None, act: str | None = None,
                 family: str | None = None, img_size: int | None = None) -> tuple[ArchSpec, list[str]]:
    """ArchSpec for a checkpoint: hyper_parameters first, then tensor shapes, then the official
    variant table; ``variant``/``act``/``family`` override what cannot be inferred. Returns the spec
    and a list of notes saying where each undetermined field came from."""
    notes: list[str] = []
    if SPEC_METADATA_KEY in ckpt.metadata:  # our own checkpoints carry their spec
        spec = _spec_from_metadata(ckpt)
        notes.append("architecture from the checkpoint's partialdeploy metadata")
        return _apply_overrides(spec, act, img_size), notes
    requested, var = families.parse_variant(variant) if variant else (None, None)
    if family:
        requested = families.get(family)
    fam = families.choose(ckpt.state_dict, ckpt.hyper_parameters, requested, notes)
    try:
        spec = fam.infer(ckpt.state_dict, ckpt.hyper_parameters or {}, var, act, notes)
    except (ValueError, RuntimeError, ZeroDivisionError, TypeError, IndexError, KeyError, AttributeError) as e:
        raise UserError(f"cannot read the architecture from the weights ({first_line(e, 160)}): the checkpoint "
                        f"is damaged or not a {fam.title}") from None
    return _apply_overrides(spec, act, img_size), notes


def _spec_from_metadata(ckpt: Checkpoint) -> ArchSpec:
    """Our own metadata, read as untrusted: valid JSON, known fields of the right types."""
    try:
        spec = ArchSpec.from_json(ckpt.metadata[SPEC_METADATA_KEY])  # validates every field
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise UserError(f"{ckpt.path.name}: its {SPEC_METADATA_KEY} metadata is damaged ({first_line(e, 120)}); "
                        "re-save the checkpoint") from None
    return spec


def _apply_overrides(spec: ArchSpec, act: str | None, img_size: int | None) -> ArchSpec:
    if act:
        a = act.upper()
        acts = families.get(spec.family).acts
        if a not in acts:
            raise UserError(f"--act {act!r} is not supported for {families.get(spec.family).title}: use "
                            + " or ".join(x.lower() for x in acts))
        spec = spec.replace(act=a)
    if img_size:
        spec = spec.replace(img_size=int(img_size))
    return spec


def load_model(ckpt: Checkpoint, spec: ArchSpec):
    """Build the train-form model and load the weights with strict=True; a mismatch names the
    offending keys and shapes in one line."""
    from partialdeploy.models import build_model

    try:
        model = build_model(spec)
    except (ValueError, RuntimeError, ZeroDivisionError, TypeError, IndexError) as e:
        raise UserError(f"the weights describe an architecture that cannot be built ({first_line(e, 160)}): "
                        "the checkpoint is damaged or not a PartialNet/FasterNet") from None
    own = model.state_dict()
    sd = ckpt.state_dict
    check_against_model(sd, own, spec.name)  # keys, shapes, dtype kinds (names the offending keys)
    sd = {k: (v.to(own[k].dtype) if v.is_floating_point() and own[k].is_floating_point() else v) for k, v in sd.items()}
    model.load_state_dict(sd, strict=True)
    return model.eval()


def save_safetensors(model, spec: ArchSpec, path: str | Path) -> None:
    """Write a state_dict + our spec as metadata (how the bundled demo checkpoint is stored)."""
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(path), metadata={SPEC_METADATA_KEY: spec.to_json()})
