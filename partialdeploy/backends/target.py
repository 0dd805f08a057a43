"""The target interface.

A target turns the verified deploy-form ONNX (and, where needed, the deploy-form torch model) into
an artifact in ``out_dir``; the pipeline then proves it with a parity gate in its own runtime where it
can run here (partialdeploy.verification).
The pipeline gives each target a fresh temporary directory and renames it into place only when the
target succeeded, so a failed target leaves nothing claimed.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


from partialdeploy.exporting.options import ExportOptions
from partialdeploy.parity import PRECISIONS
from partialdeploy.records import Artifact
from partialdeploy.spec import ArchSpec


@dataclass
class ExportContext:
    spec: ArchSpec
    onnx_path: Path  # deploy-form fp32 ONNX (static H×W, batch static or dynamic), verified in ORT
    img_size: int
    dynamic_batch: bool
    precision: str
    input_name: str
    output_name: str
    parity_inputs: np.ndarray  # (N,3,H,W) float32, preprocessed real images
    reference: np.ndarray  # train-form logits for parity_inputs
    calib: np.ndarray | None = None  # (N,3,H,W) float32 preprocessed calibration images (INT8)
    calib_source: str | None = None
    eval_images: np.ndarray | None = None  # held-out real test images (preprocessed) for INT8 accuracy
    eval_labels: np.ndarray | None = None
    eval_reference: np.ndarray | None = None  # train-form logits on eval_images
    parity_raw: list | None = None  # the parity images as decoded (uint8), before preprocessing
    deploy_model: Any = None  # deploy-form torch.nn.Module (CoreML converts from it); None without torch
    options: ExportOptions = field(default_factory=ExportOptions)  # flags and profile fields, typed
    tolerances: dict = field(default_factory=dict)  # precision -> parity.Tolerance overrides
    # the deploy ONNX's own gate in ONNX Runtime (train form -> ONNX) and the runner options it ran with:
    # the `onnx` target ships that very file, so this gate is its certificate (verification.Proof)
    onnx_gate: Any = None
    onnx_gate_options: dict | None = None


class Target(ABC):
    name: str = ""
    precisions: tuple[str, ...] = PRECISIONS
    unsupported: dict = {}  # precision -> one-line advice when it is not in ``precisions``

    @classmethod
    def precision_error(cls, precision: str) -> str:
        return cls.unsupported.get(precision) or (f"target {cls.name} does not support {precision}; it supports "
                                                   f"{', '.join(cls.precisions)}")

    @classmethod
    def refusal(cls, precision: str) -> str | None:
        """Why this target cannot make ``precision`` here — not one of its ``precisions``, or the machine
        lacks what it needs (``check_precision``) — else None. The one check, made once at the request
        (``exporting.request.check_request``: an error for a single target, a skip among several); ``export``
        trusts it."""
        if precision not in cls.precisions:
            return cls.precision_error(precision)
        return cls.check_precision(precision)
    needs_torch_model: bool = False  # CoreML converts from the torch deploy model
    # its artifact carries the check and calibration images (a TensorRT bundle gates on the device): the
    # export hands it the images as decoded (``ExportContext.parity_raw``), and the disk estimate counts them
    carries_images: bool = False
    int8_calibrates: bool = True  # its INT8 quantizes activations from calibration images (CoreML: weights only)
    source: str = "ONNX"  # what it converts from (names the verification stage: "ONNX -> OpenVINO fp16")

    requires: tuple[str, ...] = ()  # modules the converter needs (running is the backend's business)

    @classmethod
    def is_available(cls) -> bool:
        """Can this target *produce* its artifact here (the converter is importable)?"""
        from partialdeploy.lazy import installed

        return installed(*cls.requires)

    @classmethod
    def version(cls) -> str | None:
        """The version of the runtime this target's artifacts run in (its backend's; one place)."""
        from partialdeploy import backends

        return backends.backend_of_target(cls.name).version()

    @classmethod
    def check_env(cls) -> str | None:
        """None if usable, else a one-line reason with what to install."""
        return None if cls.is_available() else f"{cls.name} is not installed"

    @classmethod
    def check_precision(cls, precision: str) -> str | None:
        """None if ``precision`` can be produced and verified on this machine, else a one-line reason
        (e.g. bf16 on a CPU without bf16 units). Checked before any work."""
        return None

    @abstractmethod
    def export(self, ctx: ExportContext, out_dir: Path) -> Artifact:
        """Write the artifact into ``out_dir`` (a fresh temp dir owned by the pipeline) and return it.
        Only convert: the pipeline opens the artifact through its runtime's runner and gates it
        (partialdeploy.verification). Raise UserError on bad input, VerificationError when a check the
        conversion itself needs fails."""


@contextlib.contextmanager
def quiet():
    """Silence converters while they work: warnings, stdout/stderr chatter (torch.onnx prints whole
    graphs on failure, coremltools prints version warnings and progress bars), log records below ERROR."""
    root = logging.getLogger()
    old = root.level
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        root.setLevel(logging.ERROR)
        try:
            yield
        finally:
            root.setLevel(old)

