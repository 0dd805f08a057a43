"""TensorRT target.

Where ``tensorrt`` imports and an NVIDIA GPU is visible, the engine is built right away through the
TensorRT 10 Python API (``partialdeploy.tensorrt_build.build_engine``) and proven by parity.
Everywhere else (our CI: no GPU) the artifact is a *build bundle*: the TensorRT-ready ONNX, the exact
``trtexec`` line, calibration images (INT8) and a parity reference, to be built on the device with
``partialdeploy build-engine DIR`` or ``sh DIR/build_engine.sh``. Before writing it, the ONNX's
operators and opset are checked against what TensorRT 10's ONNX parser imports.
"""

from __future__ import annotations

from pathlib import Path

from partialdeploy.errors import UserError
from partialdeploy.exporters.base import Artifact, ExportContext, Target
from partialdeploy.tensorrt_build import (DEFAULT_WORKSPACE_MB, ENGINE, ONNX_OPSETS, SIDECAR, batch_range,
                                          build_engine, onnx_ops_report, write_bundle)

BUNDLE_VERIFIED = "bundle (build the engine on the device)"


class TensorRTTarget(Target):
    name = "tensorrt"
    precisions = ("fp32", "fp16", "int8")

    requires = ("onnx",)  # the bundle's operator check; TensorRT itself is only needed on the device

    @classmethod
    def version(cls) -> str | None:
        from partialdeploy.runners.tensorrt import TensorRTRunner

        return TensorRTRunner.runtime_version()

    @classmethod
    def check_env(cls) -> str | None:
        return None if cls.is_available() else "onnx is not installed: pip install 'partialdeploy[torch]'"

    @staticmethod
    def can_build_here() -> bool:
        from partialdeploy.runners.tensorrt import _why_unavailable

        return _why_unavailable() is None

    def export(self, ctx: ExportContext, out_dir: Path) -> Artifact:
        prec = ctx.precision
        if prec not in self.precisions:
            raise UserError(f"tensorrt does not support {prec}; choose {', '.join(self.precisions)}")
        rep = onnx_ops_report(ctx.onnx_path)
        if rep["unsupported"]:
            raise UserError(f"TensorRT 10's ONNX parser does not support {', '.join(rep['unsupported'])} in "
                            f"{ctx.onnx_path.name}: re-export without them (or extend TensorRT with a plugin)")
        if not rep["opset_supported"]:
            raise UserError(f"ONNX opset {rep['opset']} is outside TensorRT 10's {ONNX_OPSETS[0]}-{ONNX_OPSETS[1]}: "
                            "re-export with --opset 17")
        opts = ctx.options
        static_b = int(opts.get("batch") or 1)
        brange = batch_range(opts, ctx.dynamic_batch, static_b)
        ws = int(opts.get("workspace_mb") or DEFAULT_WORKSPACE_MB)
        c = int(getattr(ctx.spec, "in_chans", 3) or 3)
        chw = [c, ctx.img_size, ctx.img_size]
        bundle = write_bundle(
            Path(out_dir), onnx_path=ctx.onnx_path, precision=prec, input_name=ctx.input_name,
            output_name=ctx.output_name, chw=chw, dynamic=ctx.dynamic_batch, batch=brange, workspace_mb=ws,
            parity_inputs=ctx.parity_inputs, reference=ctx.reference, calib=ctx.calib, calib_source=ctx.calib_source,
            eval_images=ctx.eval_images, eval_labels=ctx.eval_labels, eval_reference=ctx.eval_reference,
            tolerance=ctx.tolerances.get(prec), ops_report=rep, model_name=getattr(ctx.spec, "name", ""))
        files = list(bundle["files"])
        inputs = [{"name": ctx.input_name, "shape": bundle["input"]["shape"], "dtype": "float32"}]
        out_shape = [bundle["input"]["shape"][0], getattr(ctx.spec, "num_classes", None)]
        outputs = [{"name": ctx.output_name, "shape": out_shape, "dtype": "float32"}]
        extra = {"trtexec": bundle["trtexec_line"], "batch": brange, "workspace_mb": ws,
                 "onnx_ops_checked": len(rep["ops"]), "onnx_opset": rep["opset"]}
        notes = []
        if prec == "int8":
            notes.append("INT8 uses implicit quantization with IInt8EntropyCalibrator2 (deprecated in TensorRT 10 "
                         "but supported); trtexec needs the calib.cache that build-engine writes")
        if self.can_build_here():
            side = build_engine(Path(out_dir), prec, ws)
            files += [ENGINE, SIDECAR, "timing.cache"] + (["calib.cache"] if prec == "int8" else [])
            return Artifact(target=self.name, precision=prec, path=".", files=files, inputs=inputs, outputs=outputs,
                            parity=side["parity"], verified="parity", runtime_version=side["tensorrt_version"],
                            notes=notes, extra={**extra, "gpu": side["gpu"],
                                                "compute_capability": side["compute_capability"]})
        notes.append("no TensorRT/NVIDIA GPU here: build the engine on the device with "
                     "`partialdeploy build-engine DIR` (parity gate included) or `sh DIR/build_engine.sh`")
        return Artifact(target=self.name, precision=prec, path=".", files=files, inputs=inputs, outputs=outputs,
                        parity=[], verified=BUNDLE_VERIFIED, runtime_version=None, notes=notes, extra=extra)
