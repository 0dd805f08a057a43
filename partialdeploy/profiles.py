"""Named target profiles: a YAML file per deployment situation (target, precision, shapes, threads,
workspace, calibration size, tolerance overrides, CoreML deployment target...).

``load_profile(name_or_path)`` takes a path to a YAML file, or a name looked up in, in order:
the directories in ``$PARTIALDEPLOY_PROFILES`` (os.pathsep-separated), ``./profiles/`` in the
current directory (your own profiles), and the profiles shipped inside the package
(``partialdeploy/profiles_data/``; the repository's top-level ``profiles/`` points there, so there is
one source). An invalid profile raises UserError naming the field.

The result is a flat dict the export command merges under its explicit flags (flags win):
  target, precision, img_size, dynamic_batch, batch (int, or the optimization-profile opt batch when
  ranges were given), batch_range {min, opt, max} (dynamic batch), threads, workspace_mb,
  calib_images, tensorrt (10/11), tolerances (as written) and tolerances_obj {precision: parity.Tolerance} (defaults
  updated by the overrides), plus the target-specific fields, and ``profile`` (its name).
"""

from __future__ import annotations

import os
from dataclasses import asdict, fields
from pathlib import Path

from partialdeploy.errors import UserError, first_line
from partialdeploy.parity import PRECISIONS

PACKAGE_DIR = Path(__file__).parent / "profiles_data"

# field -> (python type(s), description); checked strictly, unknown fields are errors. The fields
# one runtime reads are declared by its backend (partialdeploy/backends/) and added in _fields().
_COMMON: dict[str, tuple[tuple[type, ...], str]] = {
    "description": ((str,), "free text"),
    "target": ((str,), "an export target"),
    "precision": ((str,), "fp32, fp16, bf16 or int8"),
    "img_size": ((int,), "input size, a multiple of 32"),
    "dynamic_batch": ((bool,), "true or false"),
    "batch": ((int, dict), "an int (static batch) or {min, opt, max} (dynamic batch)"),
    "threads": ((int,), "runtime threads"),
    "calib_images": ((int,), "number of calibration images for INT8"),
    "tune_budget": ((int, float), "seconds the export may spend timing an artifact's correct forms on this "
                                  "machine (and INT8 against fp32); 0 turns it off"),
    "tolerances": ((dict,), "{precision: {rel_max, cosine_min, top1_min, acc_drop_max}}"),
    "int8_fallback": ((bool,), "INT8: keep the most sensitive blocks in float until the gate holds (default true)"),
    "int8_max_float_blocks": ((int,), "INT8 fallback: at most this many blocks kept in float (default 8)"),
    "int8_exclude": ((str, list), "INT8: blocks kept in float from the start (official block names, e.g. "
                                  "stages.1.blocks.0; a list or comma-separated)"),
}


def _fields() -> tuple[dict, dict]:
    """(field -> (types, description), field -> choices), the backends' fields included."""
    from partialdeploy import backends

    names = backends.target_names()
    fields_ = {**_COMMON, "target": ((str,), f"one of {', '.join(names)}")}
    choices = {"target": names, "precision": PRECISIONS}
    for key, decl in backends.profile_fields().items():
        fields_[key] = (decl[0], decl[1])
        if len(decl) > 2:
            choices[key] = decl[2]
    return fields_, choices


def search_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get("PARTIALDEPLOY_PROFILES", "").split(os.pathsep) if p]
    return dirs + [Path.cwd() / "profiles", PACKAGE_DIR]


def available_profiles() -> dict[str, Path]:
    """name -> file, earlier search directories win."""
    found: dict[str, Path] = {}
    for d in search_dirs():
        if d.is_dir():
            for f in sorted(d.glob("*.yaml")) + sorted(d.glob("*.yml")):
                found.setdefault(f.stem, f)
    return found


def find_profile(name_or_path: str | os.PathLike) -> Path:
    s = str(name_or_path)
    p = Path(s).expanduser()
    if p.suffix.lower() in (".yaml", ".yml") or os.sep in s or "/" in s:
        if not p.is_file():
            raise UserError(f"profile file {s} does not exist")
        return p
    prof = available_profiles().get(s)
    if prof is None:
        names = ", ".join(sorted(available_profiles())) or "none"
        raise UserError(f"unknown profile {s!r}: choose one of {names}, or pass a YAML path")
    return prof


def _type_name(types: tuple[type, ...]) -> str:
    return " or ".join({int: "integer", float: "number", bool: "boolean", str: "string", dict: "mapping",
                        list: "list"}[t] for t in types)


def validate(data, where: str = "profile") -> dict:
    """Strict check of a profile mapping; returns the normalized flat dict (see module doc)."""
    from partialdeploy.parity import DEFAULT_TOLERANCES, Tolerance

    if not isinstance(data, dict):
        raise UserError(f"{where}: a profile must be a YAML mapping of fields, got {type(data).__name__}")
    from partialdeploy import backends

    known, choices = _fields()
    out: dict = {}
    for key, val in data.items():
        if key not in known:
            raise UserError(f"{where}: unknown field {key!r}; known fields: {', '.join(known)}")
        types, desc = known[key]
        if val is None:
            continue
        # bool is an int subclass in Python: refuse true/false where a number is expected
        if not isinstance(val, types) or (isinstance(val, bool) and bool not in types):
            raise UserError(f"{where}: field {key!r} must be {_type_name(types)} ({desc}), "
                            f"got {type(val).__name__} {val!r}")
        if key in choices:  # case-insensitive, normalized to the declared spelling
            v = next((c for c in choices[key] if c.lower() == val.lower()), None)
            if v is None:
                raise UserError(f"{where}: field {key!r} is {val!r}; choose one of {', '.join(choices[key])}")
            val = v
        out[key] = val
    for key in ("img_size", "threads", "calib_images"):
        if key in out and out[key] < 1:
            raise UserError(f"{where}: field {key!r} must be ≥ 1, got {out[key]}")
    if "img_size" in out and out["img_size"] % 32:
        raise UserError(f"{where}: field 'img_size' must be a multiple of 32, got {out['img_size']}")
    backends.check_profile(out, where)
    b = out.get("batch")
    if isinstance(b, dict):
        bad = set(b) - {"min", "opt", "max"}
        if bad:
            raise UserError(f"{where}: field 'batch' has unknown keys {sorted(bad)}; use min, opt, max")
        if not all(isinstance(b.get(k), int) and not isinstance(b.get(k), bool) for k in ("min", "opt", "max")):
            raise UserError(f"{where}: field 'batch' needs integer min, opt and max, got {b}")
        if not 1 <= b["min"] <= b["opt"] <= b["max"]:
            raise UserError(f"{where}: field 'batch' must satisfy 1 <= min <= opt <= max, got {b}")
        if out.get("dynamic_batch") is False:
            raise UserError(f"{where}: field 'batch' gives a range but dynamic_batch is false; "
                            "use an integer batch or dynamic_batch: true")
        out["dynamic_batch"] = True
        out["batch_range"] = {k: b[k] for k in ("min", "opt", "max")}
        out["batch"] = b["opt"]
    elif isinstance(b, int) and b < 1:
        raise UserError(f"{where}: field 'batch' must be ≥ 1, got {b}")
    tol_objs = {}
    tol_fields = {f.name for f in fields(Tolerance)}
    for prec, over in (out.get("tolerances") or {}).items():
        if prec not in PRECISIONS:
            raise UserError(f"{where}: tolerances.{prec}: unknown precision; use fp32, fp16, bf16 or int8")
        if not isinstance(over, dict):
            raise UserError(f"{where}: tolerances.{prec} must be a mapping of {', '.join(sorted(tol_fields))}")
        for k, v in over.items():
            if k not in tol_fields:
                raise UserError(f"{where}: tolerances.{prec}.{k}: unknown; use {', '.join(sorted(tol_fields))}")
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise UserError(f"{where}: tolerances.{prec}.{k} must be a number, got {v!r}")
        tol_objs[prec] = Tolerance(**{**asdict(DEFAULT_TOLERANCES[prec]), **over})
    out["tolerances_obj"] = tol_objs
    return out


MAX_PROFILE_BYTES = 64 << 10  # a profile is a few hundred bytes
MAX_PROFILE_NODES = 2000  # after alias expansion ("billion laughs" stays a refusal, not a hang)


def _expanded_nodes(node, limit: int) -> int:
    """Nodes of a composed YAML document with every alias expanded (shared nodes counted each time),
    stopping at ``limit``; a node that contains itself counts as unbounded."""
    import yaml

    memo: dict[int, int] = {}
    active: set[int] = set()

    def count(n) -> int:
        if id(n) in memo:
            return memo[id(n)]
        if id(n) in active:
            return limit + 1
        active.add(id(n))
        total = 1
        if isinstance(n, yaml.SequenceNode):
            for c in n.value:
                total += count(c)
                if total > limit:
                    break
        elif isinstance(n, yaml.MappingNode):
            for k, v in n.value:
                total += count(k) + count(v)
                if total > limit:
                    break
        active.discard(id(n))
        memo[id(n)] = min(total, limit + 1)
        return memo[id(n)]

    return count(node) if node is not None else 0


def load_profile(name_or_path: str | os.PathLike) -> dict:
    """Read a profile with YAML's safe loader (no Python objects), bounded in size and in alias
    expansion."""
    import yaml

    path = find_profile(name_or_path)
    try:
        if path.stat().st_size > MAX_PROFILE_BYTES:
            raise UserError(f"profile {path} is larger than {MAX_PROFILE_BYTES >> 10} kB: not a target profile")
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if _expanded_nodes(node, MAX_PROFILE_NODES) > MAX_PROFILE_NODES:
            raise UserError(f"profile {path} expands to more than {MAX_PROFILE_NODES} values (aliases nested "
                            "or recursive): write the fields out")
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as e:
        raise UserError(f"cannot read profile {path}: {first_line(e)}") from None
    out = validate(data if data is not None else {}, where=f"profile {path.name}")
    out["profile"] = path.stem
    return out


def apply_overrides(profile: dict, **flags) -> dict:
    """Profile values under explicit flags: every flag that is not None wins."""
    merged = dict(profile)
    merged.update({k: v for k, v in flags.items() if v is not None})
    return merged
