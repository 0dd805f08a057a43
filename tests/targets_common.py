"""Shared set-up for tests/test_targets_*.py: the bundled demo checkpoint (a small PartialNet with
every block type, trained on scikit-learn digits, 99.17% held-out accuracy) -> deploy form -> ONNX,
and an ExportContext as the pipeline builds it. INT8 tests need this real signal: on random weights
an accuracy-drop gate means nothing."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import numpy as np

from partialdeploy.backends.target import ExportContext
from partialdeploy.exporting.options import ExportOptions


@functools.lru_cache(maxsize=None)
def _demo():
    from partialdeploy import demo
    from partialdeploy.checkpoint import load_checkpoint, load_model, resolve_spec
    from partialdeploy.images import load_image_folder
    from partialdeploy.reparam import reparameterize, torch_logits

    ck = load_checkpoint(demo.DEMO_CKPT)
    spec, _ = resolve_spec(ck)
    model = load_model(ck, spec)
    deploy = reparameterize(model, spec.img_size)
    ex, ey = demo.eval_set(spec)
    ref = torch_logits(model, ex)
    calib = load_image_folder(demo.DEMO_CALIB, spec.img_size, spec.mean, spec.std, crop_ratio=spec.crop_ratio)
    return spec, deploy, ex, ey, ref, calib


@functools.lru_cache(maxsize=None)
def _onnx(dynamic: bool, batch: int) -> Path:
    from partialdeploy.exporting.onnx import export_onnx

    spec, deploy, *_ = _demo()
    path = Path(tempfile.mkdtemp(prefix="pd-targets-")) / "deploy.onnx"
    export_onnx(deploy, path, spec.img_size, dynamic_batch=dynamic, batch=batch)
    return path


def make_ctx(precision: str, dynamic: bool = True, batch: int = 1, with_eval: bool = True, **options) -> ExportContext:
    spec, deploy, ex, ey, ref, calib = _demo()
    return ExportContext(
        spec=spec, onnx_path=_onnx(dynamic, batch), img_size=spec.img_size, dynamic_batch=dynamic,
        precision=precision, input_name="input", output_name="logits", parity_inputs=ex[:16], reference=ref[:16],
        calib=calib, calib_source="bundled demo calibration images",
        eval_images=ex if with_eval else None, eval_labels=ey if with_eval else None,
        eval_reference=ref if with_eval else None, deploy_model=deploy, parity_raw=_raw(),
        options=ExportOptions.from_fields({"batch": batch, **options}))


@functools.lru_cache(maxsize=None)
def _raw() -> list:
    from partialdeploy import demo

    return demo.eval_raw(16)  # the parity images as stored, before preprocessing


def export(target: str, ctx: ExportContext, out_dir: Path):
    """What the pipeline does per target: convert, then open the artifact in its runtime and gate it."""
    from partialdeploy.backends import get_target
    from partialdeploy.verification import convert_and_verify

    return convert_and_verify(get_target(target), ctx, Path(out_dir))


def eval_result(art):
    """The held-out (labelled) parity entry of an artifact."""
    return next(p for p in art.parity if p.acc is not None)


def acc_drop_points(art) -> float:
    r = eval_result(art)
    return 100 * (r.acc_ref - r.acc)


__all__ = ["make_ctx", "export", "eval_result", "acc_drop_points", "np"]
