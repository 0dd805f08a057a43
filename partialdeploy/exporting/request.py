"""The export request: what to export, checked before any work (one line, exit 2 on bad input).

``ExportRequest.from_flags`` builds it from command-line flags or API arguments over an optional target
profile (flags win); ``check_request`` refuses bad input before anything is loaded or written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from partialdeploy.backends import target_names
from partialdeploy.errors import UserError
from partialdeploy.backends import get_target
from partialdeploy.parity import PRECISIONS
from partialdeploy.exporting import export_dir
from partialdeploy.exporting.options import ExportOptions


@dataclass
class ExportRequest:
    checkpoint: Path | None = None  # None -> the bundled demo checkpoint
    targets: tuple[str, ...] = ("onnx",)
    precision: str = "fp32"
    out_dir: Path = Path("dist")
    img_size: int | None = None
    dynamic_batch: bool = False
    batch: int = 1
    calib: Path | None = None
    calib_count: int = 100
    calib_seed: int = 0  # the calibration subset is drawn with this seed (recorded in the manifest)
    eval_dir: Path | None = None  # ImageFolder with labels: the INT8 gate becomes an accuracy drop
    check_images: Path | None = None  # the user's images the gates judge on (else held out of calib)
    variant: str | None = None
    act: str | None = None
    opset: int = 17
    parity_images: int = 16
    options: ExportOptions = field(default_factory=ExportOptions)  # what the targets are told (typed)
    tolerances: dict = field(default_factory=dict)  # precision -> parity.Tolerance
    command: str = ""

    # profile fields that are request fields; every other profile field is a target option
    _PROFILE_FIELDS = {"target": "targets", "precision": "precision", "img_size": "img_size",
                       "dynamic_batch": "dynamic_batch", "batch": "batch", "calib_images": "calib_count"}
    # flags that set a target option (ExportOptions), like the profile field of the same name
    _OPTION_FLAGS = ("tune_budget", "tune_on", "int8_exclude", "int8_max_float_blocks", "bundle_wheel")
    _NOT_OPTIONS = ("description", "tolerances")  # profile fields that tell the targets nothing

    @classmethod
    def from_flags(cls, profile: str | None = None, fallback: bool = True, **flags) -> "ExportRequest":
        """The request from command-line flags over an optional target profile (name or YAML path):
        a flag that is not None wins over the profile (``profiles.apply_overrides``), then defaults."""
        from partialdeploy.profiles import apply_overrides, load_profile

        prof = dict(load_profile(profile)) if profile else {}
        opset = flags.get("opset", 17)
        if not 13 <= opset <= 20:
            raise UserError(f"--opset {opset} is outside 13-20 (what the exporter and TensorRT 10 accept)")
        tolerances = prof.pop("tolerances_obj", {})
        from_prof = {field_: prof.pop(key) for key, field_ in cls._PROFILE_FIELDS.items() if key in prof}
        if "targets" in from_prof:
            from_prof["targets"] = (from_prof["targets"],)
        for key in cls._NOT_OPTIONS:
            prof.pop(key, None)
        if not fallback:
            prof["int8_fallback"] = False
        for key in cls._OPTION_FLAGS:
            value = flags.pop(key, None)
            if value is not None:
                prof[key] = str(value) if key == "bundle_wheel" else value
        if flags.get("targets") == ():
            flags["targets"] = None
        merged = apply_overrides(from_prof, **flags)
        merged.setdefault("targets", ("onnx",))
        merged["targets"] = tuple(merged["targets"])
        merged["precision"] = str(merged.get("precision") or "fp32").lower()
        merged["dynamic_batch"] = bool(merged.get("dynamic_batch", False))
        merged["batch"] = int(merged.get("batch", 1))
        merged["calib_count"] = int(merged.get("calib_count") or 100)
        return cls(**merged, options=ExportOptions.from_fields(prof), tolerances=tolerances)


def expand_targets(names) -> tuple[str, ...]:
    known = target_names()
    out: list[str] = []
    for n in names:
        for part in str(n).split(","):
            part = part.strip().lower()
            if not part:
                continue
            if part == "all":
                out += [t for t in known if t not in out]
            elif part not in known:
                raise UserError(f"unknown target {part!r}; choose from {', '.join(known)} or all")
            elif part not in out:
                out.append(part)
    if not out:
        raise UserError(f"no target given: use --target {'|'.join(known)}|all")
    return tuple(out)


def check_request(req: ExportRequest) -> tuple[str, ...]:
    """Bad input is refused before any work (one line, exit 2); returns the expanded target list."""
    if req.precision not in PRECISIONS:
        raise UserError(f"--precision {req.precision!r} is not supported; choose {', '.join(PRECISIONS)}")
    targets = expand_targets(req.targets)
    if req.batch < 1:
        raise UserError("--batch must be ≥ 1")
    if req.img_size is not None and (req.img_size < 32 or req.img_size % 32):
        raise UserError(f"--img-size {req.img_size} must be a multiple of 32 (the network downsamples 32×) and ≥ 32")
    if req.check_images is not None:
        from partialdeploy.exporting.check_images import require_folder

        require_folder(req.check_images)  # refused before any work
    if req.out_dir.exists() and not req.out_dir.is_dir():
        raise UserError(f"output {req.out_dir} exists and is not a directory: choose another -o")
    export_dir.check_owned(req.out_dir, targets, req.precision)  # never write into a folder that is not ours
    # optional runtimes must exist before any work when a single target was asked for explicitly
    if len(targets) == 1:
        t = get_target(targets[0])
        why = t.check_env()
        if why:
            raise UserError(f"target {targets[0]} unavailable: {why}")
        why = t.refusal(req.precision)
        if why:
            raise UserError(why)
    return targets
