"""ONNX: export the deploy form (static spatial size, static or dynamic batch), simplify with onnxsim,
check with onnx.checker + shape inference, write metadata; and the ``onnx`` target that publishes it
(with the attention's q/k/v projections fused when it has any).

Opset 17 through the TorchScript-based exporter: ONNX Runtime, OpenVINO and TensorRT 10 all accept
it, and it has LayerNormalization. (torch 2.13's dynamo exporter silently raises any opset < 18.)
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from partialdeploy.version import __version__
from partialdeploy.errors import UserError, VerificationError, first_line
from partialdeploy.backends.target import ExportContext, Target, quiet
from partialdeploy.records import Artifact

DEFAULT_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


@dataclass
class OnnxInfo:
    path: Path
    opset: int
    nodes: int
    ops: dict
    simplified: bool
    warnings: list[str] = field(default_factory=list)



def op_histogram(model) -> dict:
    return dict(Counter(n.op_type for n in model.graph.node).most_common())


def export_onnx(model, path: Path, img_size: int, dynamic_batch: bool = False, batch: int = 1,
                opset: int = DEFAULT_OPSET, metadata: dict | None = None, simplify: bool = True,
                in_chans: int = 3) -> OnnxInfo:
    """torch module -> checked ONNX file. ``model`` should be the deploy form."""
    import onnx
    import torch

    path = Path(path)
    dummy = torch.zeros(batch, in_chans, img_size, img_size)
    dyn = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic_batch else None
    notes: list[str] = []
    try:
        with quiet(), torch.no_grad():
            torch.onnx.export(model.eval(), (dummy,), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dyn,
                              do_constant_folding=True)
    except Exception as e:
        raise UserError(f"ONNX export failed: {first_line(e, 200)}") from e
    m = onnx.load(str(path))
    simplified = False
    if simplify:
        try:
            import onnxsim

            # constant folding + shape inference only: onnxsim's fusion passes fold GELU's trailing
            # Mul(0.5) into the next conv, which breaks ONNX Runtime's Gelu fusion (measured: 14 -> 1
            # fused Gelu on T0, and slower); our deploy form has already done the useful folding.
            with quiet():
                sm, ok = onnxsim.simplify(m, perform_optimization=False)
            if ok:
                m, simplified = sm, True
            else:
                notes.append("onnxsim could not validate the simplified graph; kept the unsimplified one")
        except Exception as e:  # keep going with the unsimplified graph; parity still gates it
            notes.append(f"onnxsim failed ({type(e).__name__}: {first_line(e, 120)}); "
                         "kept the unsimplified graph")
    from partialdeploy.analysis.blocknames import name_onnx_blocks

    spec = getattr(model, "spec", None)
    blocks: list[str] = []
    if spec is not None:  # official block names (stages.N.blocks.M, layer2.1, ...), the family's
        from partialdeploy import families

        fam = families.get(spec.family)
        blocks = name_onnx_blocks(m, fam.body_names(spec) or [], fam.stem_name)
    try:
        onnx.checker.check_model(m, full_check=False)
        m = onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
    except Exception as e:
        raise UserError(f"exported ONNX failed onnx.checker: {first_line(e, 200)}") from e
    meta = {"producer": "partialdeploy", "partialdeploy.version": __version__, **(metadata or {})}
    if blocks:
        meta["block_outputs"] = json.dumps(blocks)
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = str(k), str(v)
    m.producer_name, m.producer_version = "partialdeploy", __version__
    m.doc_string = f"{meta.get('model', 'PartialNet')} deploy form (BN folded, attention constants baked)"
    onnx.save(m, str(path))
    return OnnxInfo(path, opset, len(m.graph.node), op_histogram(m), simplified, notes)


def naive_export(model, path: Path, img_size: int, opset: int = DEFAULT_OPSET) -> OnnxInfo:
    """What a user gets from a plain ``torch.onnx.export`` of the train form (for the benchmark and
    ``inspect``): no folding, no simplification."""
    import onnx
    import torch

    with quiet(), torch.no_grad():
        torch.onnx.export(model.eval(), (torch.zeros(1, 3, img_size, img_size),), str(path), dynamo=False,
                          opset_version=opset, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME])
    m = onnx.load(str(path))
    return OnnxInfo(Path(path), opset, len(m.graph.node), op_histogram(m), False)


def io_meta(path: Path) -> tuple[list[dict], list[dict]]:
    import onnx
    from onnx import helper

    m = onnx.load(str(path), load_external_data=False)

    def meta(vis):
        out = []
        for v in vis:
            t = v.type.tensor_type
            shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
            out.append({"name": v.name, "shape": shape, "dtype": helper.tensor_dtype_to_np_dtype(t.elem_type).name})
        return out

    inits = {i.name for i in m.graph.initializer}
    return meta([i for i in m.graph.input if i.name not in inits]), meta(m.graph.output)


class OnnxTarget(Target):
    """The verified deploy-form ONNX (fp32) for any ONNX consumer, with the attention's q/k/v
    projections fused into one MatMul + Split when the model has any (exact, standard ops:
    ``onnx_forms.fuse_sibling_matmuls``; one Gemm instead of three for ONNX Runtime). The
    fused file is gated on its own; a model without attention gets the deploy ONNX byte for byte,
    certified by the deploy ONNX's gate."""

    name = "onnx"
    requires = ("onnx",)
    precisions = ("fp32",)
    unsupported = {p: f"--target onnx is the fp32 interchange model; for {p} use --target onnxruntime, openvino, "
                      "tensorrt or coreml" for p in ("fp16", "int8")}

    def export(self, ctx: ExportContext, out_dir: Path) -> Artifact:
        if ctx.precision != "fp32":
            raise UserError(f"--target onnx is the fp32 interchange model; for {ctx.precision} use "
                            "--target onnxruntime, openvino, tensorrt or coreml")
        dst = Path(out_dir) / "model.onnx"
        notes: list[str] = []
        fused = self._fuse(ctx, dst, notes)
        if not fused:
            shutil.copyfile(ctx.onnx_path, dst)
        ins, outs = io_meta(dst)
        art = Artifact(target=self.name, precision="fp32", path="model.onnx", files=["model.onnx"], inputs=ins,
                       outputs=outs, runtime_version=self.version(), notes=notes,
                       extra={"deploy_form": {"attention_projections": "fused qkv" if fused else "as exported"}})
        if fused and not self._gate_fused(ctx, dst, art):  # missed its gate: the deploy ONNX as exported
            shutil.copyfile(ctx.onnx_path, dst)
            art.extra["deploy_form"]["attention_projections"] = "as exported"
        if art.extra["deploy_form"]["attention_projections"] == "as exported":
            art.proof = self._proof(ctx, dst)
        return art

    @staticmethod
    def _fuse(ctx: ExportContext, dst: Path, notes: list[str]) -> int:
        """Write the fused-q/k/v form of the deploy ONNX to ``dst``; the number of groups fused (0:
        nothing to fuse, or the rewrite failed — said in ``notes`` — and ``dst`` is not written)."""
        from partialdeploy.exporting.onnx_forms import fuse_sibling_matmuls

        try:
            n = fuse_sibling_matmuls(ctx.onnx_path, dst)
        except Exception as e:  # keep the verified ONNX as it is
            notes.append(f"q/k/v projections left separate (the deploy ONNX as exported): fusing them failed: "
                         f"{first_line(e, 120)}")
            n = 0
        if n:
            notes.append(f"{n} group(s) of q/k/v projections fused into one MatMul + Split (exact, standard ONNX "
                         "ops; one Gemm instead of three for ONNX Runtime); gated on its own")
        else:
            dst.unlink(missing_ok=True)
        return n

    @staticmethod
    def _gate_fused(ctx: ExportContext, dst: Path, art: Artifact) -> bool:
        """Gate the fused file through the one run-and-gate path, opened as the artifact will be; its
        results become the artifact's ``Proof``. False (with a note) when it misses the gate: the
        caller falls back to the deploy ONNX as exported. True without a proof when ONNX Runtime
        cannot run here (the pipeline's verification says so)."""
        from partialdeploy.backends.onnxruntime.runner import OnnxRuntimeRunner
        from partialdeploy.verification import Proof, open_options, stage_name, verify_file

        if not OnnxRuntimeRunner.is_available():
            return True
        opts = open_options(OnnxRuntimeRunner, ctx, art)
        try:
            results = verify_file(ctx, OnnxRuntimeRunner, dst, stage_name("onnx", "fp32"), "fp32", opts)
        except VerificationError as e:
            art.notes[:] = [f"the fused q/k/v form missed its parity gate ({first_line(e, 200)}); "
                            "kept the deploy ONNX as exported"]
            return False
        art.proof = Proof.of(ctx, dst, opts, results)
        return True

    def _proof(self, ctx: ExportContext, dst: Path):
        """The deploy ONNX's own gate certifies this copy of it (one gate per artifact) — when it ran
        on exactly the images this artifact is judged on (no held-out set to add) and passed;
        verification checks the file's sha256 and the runner options before it relies on it."""
        gate = ctx.onnx_gate
        if gate is None or ctx.onnx_gate_options is None or ctx.eval_images is not None or not gate.passed:
            return None
        from dataclasses import replace

        from partialdeploy.verification import Proof, stage_name

        res = replace(gate, stage=f"{stage_name(self.name, 'fp32')} ({len(ctx.parity_inputs)} parity images)")
        return Proof.of(ctx, dst, ctx.onnx_gate_options, [res])
