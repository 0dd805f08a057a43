"""What the targets are told beyond the request: one typed record, every field settable by a flag or a
profile field (README, "Target profiles").

The fields every target may read are typed here and checked when the record is made; the fields one
runtime reads (``ort_calibration``, ``openvino_preset``, ``workspace_mb``, ``compute_units``...) are
declared with their types and choices by that runtime's backend (``Backend.options``), checked by
``profiles.validate``, and read with :meth:`ExportOptions.runtime_option`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from partialdeploy.errors import UserError

DEFAULT_TUNE_BUDGET_S = 5.0
DEFAULT_MAX_FLOAT_BLOCKS = 8


@dataclass(frozen=True)
class ExportOptions:
    batch: int = 1  # the static batch (the profile's batch, or the opt of its range)
    batch_range: Mapping[str, int] | None = None  # {min, opt, max} of a dynamic batch (profile ``batch``)
    threads: int | None = None  # runtime threads of the gates (profile ``threads``)
    tune_budget: float = DEFAULT_TUNE_BUDGET_S  # seconds of measured selection per artifact; 0: off
    tune_on: Any = None  # remote.tune.TuneDevice (or a host): the measured selection times there (--tune-on)
    int8_fallback: bool = True  # INT8: keep the most sensitive blocks in float until the gate holds
    int8_max_float_blocks: int = DEFAULT_MAX_FLOAT_BLOCKS  # ... at most this many
    int8_exclude: tuple[str, ...] = ()  # INT8: blocks kept in float from the start (official block names)
    profile: str | None = None  # the target profile's name (a TensorRT bundle records it)
    runtime: Mapping[str, Any] = field(default_factory=dict)  # fields a backend declares (Backend.options)

    def __post_init__(self):
        b = self.tune_budget
        try:
            b = float(b)
        except (TypeError, ValueError):
            raise UserError(f"--tune-budget {b!r} must be a number of seconds (0 turns tuning off)") from None
        if not (b >= 0 and math.isfinite(b)):
            raise UserError(f"--tune-budget {b} must be ≥ 0 seconds (0 turns tuning off)")
        object.__setattr__(self, "tune_budget", b)
        if self.tune_on is not None:
            object.__setattr__(self, "tune_on", _tune_device(self.tune_on, b))
        if isinstance(self.int8_max_float_blocks, bool) or not isinstance(self.int8_max_float_blocks, int) \
                or self.int8_max_float_blocks < 0:
            raise UserError(f"int8_max_float_blocks {self.int8_max_float_blocks!r} must be an integer ≥ 0")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise UserError(f"threads {self.threads!r} must be an integer ≥ 1")
        object.__setattr__(self, "int8_exclude", parse_blocks(self.int8_exclude))

    @classmethod
    def from_fields(cls, values: Mapping[str, Any]) -> "ExportOptions":
        """From flat fields (a validated profile's, flags merged over it): the typed ones by name, the
        rest a runtime's own; a field no one declares is refused (one line, exit 2)."""
        from partialdeploy import backends

        mine = {f.name for f in fields(cls)} - {"runtime"}
        declared = backends.profile_fields()
        unknown = [k for k in values if k not in mine and k not in declared]
        if unknown:
            raise UserError(f"unknown export option(s) {', '.join(sorted(unknown))}; known: "
                            f"{', '.join(sorted(mine | set(declared)))}")
        return cls(**{k: v for k, v in values.items() if k in mine},
                   runtime={k: v for k, v in values.items() if k not in mine})

    def runtime_option(self, name: str, default=None):
        """A field a runtime's backend declares (``Backend.options``), or ``default`` when not set."""
        v = self.runtime.get(name)
        return default if v is None else v

    def with_batch(self, batch: int) -> "ExportOptions":
        return replace(self, batch=int(batch))


def _tune_device(value, budget: float):
    """``tune_on`` checked (host syntax, --remote-python, --ssh-config) before any work or connection."""
    from partialdeploy.remote.tune import TuneDevice

    dev = TuneDevice(value) if isinstance(value, str) else value
    if not isinstance(dev, TuneDevice):
        raise UserError(f"tune_on {value!r} must be a host (e.g. jetson, pi@10.0.0.7) or a remote.tune.TuneDevice")
    if budget == 0:
        raise UserError("--tune-on times the forms on the device within --tune-budget, which is 0: give a budget "
                        "(e.g. --tune-budget 5) or drop --tune-on")
    dev.check()
    return dev


def parse_blocks(value) -> tuple[str, ...]:
    """``"a,b"`` or a list of names -> ("a", "b") (blank parts dropped, order kept, no repeats)."""
    if value is None:
        return ()
    parts = value.split(",") if isinstance(value, str) else list(value)
    if not all(isinstance(p, str) for p in parts):
        raise UserError(f"int8_exclude {value!r} must be block names (text), e.g. stages.1.blocks.0")
    return tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))


def check_blocks(names: tuple[str, ...], known: list[str], model: str) -> None:
    """Every name in ``names`` must be one of the model's blocks (UserError naming them otherwise)."""
    bad = [n for n in names if n not in known]
    if bad:
        raise UserError(f"--int8-exclude {','.join(bad)}: not a block of {model}; its blocks are "
                        f"{', '.join(known)}")
