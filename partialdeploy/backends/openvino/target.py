"""OpenVINO target: IR (model.xml + model.bin) from the verified ONNX.

fp32: ``convert_model`` + ``save_model(compress_to_fp16=False)``.
fp16: the same IR with weights compressed to fp16 (``compress_to_fp16=True``). The CPU plugin
      decompresses them and computes in f32 (no native fp16 arithmetic on this CPU); GPU/NPU plugins
      compute in fp16. Parity is measured on what this machine runs.
bf16: the fp32 IR plus the runtime config INFERENCE_PRECISION_HINT=bf16 (extra.runtime_config): the
      CPU plugin then computes in bf16 on CPUs with bf16 units (AVX512_BF16 / AMX). Refused (exit 2)
      on a CPU whose OPTIMIZATION_CAPABILITIES lack BF16; the precision the compiled model reports is
      read back and must be bf16. Parity gate: cosine + top-1 agreement (like fp16).
int8: NNCF post-training quantization over the calibration images (MIXED preset: symmetric weights,
      asymmetric activations — GELU/hard-sigmoid outputs are not ReLU-positive), every calibration
      image used, non-quantized parts kept fp32. Quantized from the ONNX with the attention's q/k/v
      projections fused into one (exporting/onnx_forms.py): one int8 FullyConnected instead of three.
      Measured selection at export (partialdeploy.exporting.tuning) also times NNCF's PERFORMANCE preset
      (symmetric activations, what ``nncf.quantize`` does by default), each with the float parts in
      f32 and, on a CPU with bf16 units, in bf16; it keeps the fastest that passes the INT8 gate.
fp32/fp16/int8 parity runs with INFERENCE_PRECISION_HINT=f32 (on a bf16-capable CPU the plugin would
otherwise compute an fp32 IR in bf16); the precision read back from the compiled model is recorded
(extra.compute_precision).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from partialdeploy.errors import RuntimeUnavailable, UserError
from partialdeploy.backends.target import ExportContext, Target
from partialdeploy.records import Artifact
from partialdeploy.errors import first_line
from partialdeploy.verification import Alternative, pad_batch, run_padded

INSTALL = "pip install openvino nncf"
# CPU compile config that turns off the snippets (MHA) fusion; see OpenVINOTarget.export
RUNTIME_FALLBACK = {"SNIPPETS_MODE": "DISABLE"}
# OpenVINO element-type names of INFERENCE_PRECISION_HINT per artifact precision
HINTS = {"fp32": "f32", "fp16": "f32", "int8": "f32", "bf16": "bf16"}


def cpu_capabilities() -> list[str]:
    """OpenVINO's CPU OPTIMIZATION_CAPABILITIES (e.g. FP32, INT8, BF16, FP16, EXPORT_IMPORT)."""
    import openvino as ov

    return [str(c).upper() for c in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")]


def bf16_error() -> str | None:
    """None when this CPU computes bf16 in OpenVINO, else the one-line reason."""
    caps = cpu_capabilities()
    if "BF16" in caps:
        return None
    return ("--precision bf16: this CPU has no bf16 units (OpenVINO CPU capabilities: " + ", ".join(caps)
            + "); export bf16 on a CPU with AVX512_BF16 or AMX, or use fp32/int8 here")


class OpenVINOTarget(Target):
    name = "openvino"
    requires = ("openvino",)
    precisions = ("fp32", "fp16", "bf16", "int8")

    @classmethod
    def check_env(cls) -> str | None:
        return None if cls.is_available() else f"openvino is not installed: {INSTALL}"

    @classmethod
    def check_precision(cls, precision: str) -> str | None:
        """Why ``precision`` cannot be produced on this machine (checked before any work), or None."""
        return bf16_error() if precision == "bf16" and cls.is_available() else None

    def export(self, ctx: ExportContext, out_dir: Path) -> Artifact:
        prec = ctx.precision  # one this CPU can make (Target.refusal, at the request)
        try:
            import openvino as ov
        except ImportError as e:
            raise RuntimeUnavailable(f"openvino is not installed: {INSTALL}") from e
        out_dir = Path(out_dir)
        notes: list[str] = []
        hint = HINTS[prec]
        extra: dict = {"inference_precision_hint": hint, "device": "CPU"}
        if prec == "bf16":  # the IR is fp32; the precision is the runtime's, recorded for whoever loads it
            extra["runtime_config"] = {"INFERENCE_PRECISION_HINT": "bf16"}
            notes.append("bf16: fp32 IR compiled with INFERENCE_PRECISION_HINT=bf16 (extra.runtime_config); "
                         "the CPU plugin computes matmuls/convs in bf16")
        t0 = time.perf_counter()
        src = self._int8_source(ctx, out_dir, extra, notes) if prec == "int8" else ctx.onnx_path
        try:
            model = ov.convert_model(str(src))
        except Exception as e:
            raise UserError(f"OpenVINO cannot convert {ctx.onnx_path.name}: {first_line(e)}") from e
        finally:
            if src != ctx.onnx_path:
                Path(src).unlink(missing_ok=True)
        forms: list = []
        if prec == "int8":
            model = self._int8(ctx, model, extra, notes, forms)
            notes.append(f"INT8 by NNCF post-training quantization on {extra['calibration_images']} calibration "
                         f"images ({ctx.calib_source or 'given'}), preset {extra['preset']}")
        elif prec == "fp16":
            notes.append("fp16 weights; the CPU plugin computes in f32 here (parity measured on that), "
                         "GPU/NPU plugins compute in fp16")
        xml = out_dir / "model.xml"
        ov.save_model(model, str(xml), compress_to_fp16=(prec == "fp16"))
        extra["convert_seconds"] = round(time.perf_counter() - t0, 3)

        extra["compute_precision"] = hint  # the pipeline's verification refuses the IR if OpenVINO computes otherwise
        if prec == "int8":
            extra["weight_types"] = _weight_types(xml)
        # Measured with OpenVINO 2026.4: the CPU plugin's snippets MHA fusion miscomputed the static-shape
        # attention (MatMul-Add(bias)-Softmax-MatMul) of PAT_sf (cos 0.996 vs 1.0); compiled with
        # SNIPPETS_MODE=DISABLE it is exact. Verification tries that only when the default compilation
        # misses the gate, and records it in extra.runtime_config for whoever loads the IR.
        fallback = Alternative(
            extra={"runtime_config": {**extra.get("runtime_config", {}), **RUNTIME_FALLBACK}},
            note="OpenVINO CPU: default compilation failed parity ({failed}); exact with SNIPPETS_MODE=DISABLE — "
                 "compile this IR with extra.runtime_config (or export with --dynamic-batch, which does not "
                 "trigger the faulty fusion)")
        # inputs/outputs: verification records what the compiled model reports
        return Artifact(target=self.name, precision=prec, path="model.xml", files=["model.xml", "model.bin"],
                        runtime_version=self.version(), notes=notes, extra=extra, alternatives=[fallback],
                        forms=forms)

    @staticmethod
    def _int8_source(ctx: ExportContext, out_dir: Path, extra: dict, notes: list[str]) -> Path:
        """The ONNX to quantize: the verified one with the attention's q/k/v projections fused (one
        int8 FullyConnected instead of three; exact, and the INT8 gate still judges the result)."""
        from partialdeploy.exporting.onnx_forms import int8_source

        src, n = int8_source(ctx.onnx_path, out_dir / "model.fused.tmp.onnx", extra, notes)
        if n:
            notes.append(f"INT8 quantized with {n} group(s) of q/k/v projections fused into one MatMul + Split")
        return src

    def _int8(self, ctx: ExportContext, model, extra: dict, notes: list[str], forms: list):
        """NNCF PTQ; when it misses the INT8 gate, blocks kept in float through NNCF's ignored scope
        until the gate holds (partialdeploy.exporting.int8fallback)."""
        import openvino as ov

        from partialdeploy.exporting.int8fallback import Quantizer, quantize_until_gate
        from partialdeploy.analysis.taps import collector

        threads = ctx.options.threads
        cfg = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            cfg["INFERENCE_NUM_THREADS"] = int(threads)
        shape = model.inputs[0].get_partial_shape()
        bs = shape[0].get_length() if shape[0].is_static else 1
        core = ov.Core()

        def logits(q):
            req = core.compile_model(q, "CPU", cfg).create_infer_request()
            return lambda x: run_padded(lambda b: np.array(req.infer({0: b})[0]), x, bs)

        def timer(q):
            req = core.compile_model(q, "CPU", cfg).create_infer_request()
            x = np.ascontiguousarray(ctx.parity_inputs[:1].repeat(bs, 0), np.float32)
            return lambda: req.infer({0: x})

        t_q = time.perf_counter()
        quantizer = Quantizer(
            name="openvino",
            quantize=lambda floats: self._quantize(ctx, model.clone(), extra, floats),
            logits=logits,
            boundaries=lambda q: collector(None, "openvino", threads, model=q),
            reference=collector(None, "openvino", threads, model=model),
            timer=timer)
        fb = quantize_until_gate(ctx, quantizer, "ONNX -> OpenVINO int8 (CPU)",
                                 enabled=ctx.options.int8_fallback)
        extra["int8_fallback"] = fb.to_dict()
        if fb.note():
            notes.append(fb.note())
        cost = (time.perf_counter() - t_q) / max(len(fb.attempts), 1)  # one quantization, about
        asked = ctx.options.runtime_option("openvino_preset") is not None  # the user chose the preset
        forms.extend(int8_forms(lambda preset: self._quantize(ctx, model.clone(), {}, fb.float_blocks, preset),
                                extra["preset"], user_preset=asked, cost_s=cost))
        return fb.handle

    @staticmethod
    def _quantize(ctx: ExportContext, model, extra: dict, float_blocks=(), preset: str | None = None):
        if ctx.calib is None or len(ctx.calib) == 0:
            raise UserError("INT8 needs calibration images: pass --calib DIR (100-500 representative images)")
        try:
            import nncf
        except ImportError as e:
            raise RuntimeUnavailable(f"INT8 for OpenVINO needs nncf: {INSTALL}") from e
        shape = model.inputs[0].get_partial_shape()
        bs = shape[0].get_length() if shape[0].is_static else 1
        calib = np.asarray(ctx.calib, np.float32)
        n = (len(calib) // bs) * bs or bs
        if len(calib) < bs:
            calib = pad_batch(calib, bs)
        batches = [calib[i:i + bs] for i in range(0, n, bs)]
        name = ctx.input_name
        ds = nncf.Dataset(batches, lambda b: {name: b})
        preset = str(preset or ctx.options.runtime_option("openvino_preset", "mixed")).upper()
        if preset not in ("MIXED", "PERFORMANCE"):
            raise UserError(f"openvino_preset {preset.lower()!r} must be mixed or performance")
        import contextlib
        import io
        import logging

        nncf_log = logging.getLogger("nncf")
        old = nncf_log.level
        nncf_log.setLevel(logging.ERROR)
        try:  # NNCF draws progress bars on stdout: keep stdout clean for --json
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                ignored = None
                if float_blocks:  # official block names prefix every op of the block (analysis/blocknames.py)
                    import re

                    ignored = nncf.IgnoredScope(patterns=[f"^{re.escape(b)}/.*" for b in float_blocks],
                                                validate=False)
                q = nncf.quantize(model, ds, preset=getattr(nncf.QuantizationPreset, preset),
                                  subset_size=len(batches), model_type=None, ignored_scope=ignored)
        except Exception as e:
            raise UserError(f"NNCF quantization failed: {first_line(e)}") from e
        finally:
            nncf_log.setLevel(old)
        extra.update(calibration_images=len(batches) * bs, preset=preset.lower(), quantizer="nncf "
                     + getattr(nncf, "__version__", "?"))
        return q


BF16_PARTS = {"runtime_config": {"INFERENCE_PRECISION_HINT": "bf16"}, "compute_precision": "bf16",
              "inference_precision_hint": "bf16"}


def int8_forms(requantize=None, preset: str = "mixed", user_preset: bool = False, cost_s: float = 0.0) -> list:
    """The other correct ways to run an INT8 model, timed at export (partialdeploy.exporting.tuning), each kept only
    when it is faster here and passes the INT8 gate:

    * on a CPU with bf16 units, the layers NNCF left in float computed in bf16 (what OpenVINO's default
      hints do);
    * unless the user chose the preset, the IR quantized with NNCF's other preset (``requantize(preset)``
      -> model, the same blocks kept in float; built only within the budget, ``cost_s`` being what one
      quantization took): PERFORMANCE quantizes activations symmetrically (signed int8, no zero point),
      NNCF's default for CNNs; MIXED (ours) asymmetrically — which one runs faster and which holds the
      gate depends on the model and the CPU, so both are measured."""
    from partialdeploy.exporting.tuning import Form, built_once

    bf16 = bf16_error() is None
    forms = [Form("float parts in bf16", BF16_PARTS,
                  "the layers left in float compute in bf16 (INFERENCE_PRECISION_HINT=bf16 in extra.runtime_config)")
             ] if bf16 else []
    if requantize is None or user_preset:
        return forms
    other = "performance" if preset == "mixed" else "mixed"

    def build(art_dir: Path) -> str:
        import openvino as ov

        name = f"model.{other}.part.xml"
        ov.save_model(requantize(other), str(Path(art_dir) / name), compress_to_fp16=False)
        return name
    build = built_once(build)
    note = f"NNCF preset {other} (measured faster here)"
    forms.append(Form(f"preset {other}", {"preset": other}, note, build=build, cost_s=cost_s))
    if bf16:
        forms.append(Form(f"preset {other}, float parts in bf16", {"preset": other, **BF16_PARTS},
                          note + "; the layers left in float compute in bf16", build=build, cost_s=cost_s))
    return forms


def _weight_types(xml: Path) -> dict:
    """Histogram of Constant element types in the IR (shows the int8 weights are really int8)."""
    import re
    from collections import Counter

    text = xml.read_text(errors="replace")
    return dict(Counter(re.findall(r'type="Const"[^>]*>\s*<data[^>]*element_type="(\w+)"', text)))
