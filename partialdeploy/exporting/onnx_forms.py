"""Runtime-specific forms of the verified ONNX: exact graph rewrites a target applies before it
converts or quantizes, each gated afterwards like any artifact.

The deploy form keeps the attention block's q, k and v as three projections because OpenVINO's CPU
plugin miscomputed the fused static-shape attention in float (its MHA fusion; see the deploy form).
Three small projections cost more than one, in ONNX Runtime (three Gemms: about twice the fused one)
and in INT8 (three quantized FullyConnected layers, each with its own requantization, where NNCF's
quantization of the naive export has one), so the ``onnx`` and ONNX Runtime targets and every INT8
quantizer (ONNX Runtime, OpenVINO/NNCF, TensorRT's Q/DQ ONNX) fuse them back
(:func:`fuse_sibling_matmuls`). This MatMul + Add + Split form also runs exact in OpenVINO's float CPU
plugin (the miscomputed one was qkv + Gather; the ``onnx`` target's test checks it), but OpenVINO's
float IRs are still converted from the separate form.
"""

from __future__ import annotations

from pathlib import Path


def _scope(name: str) -> str:
    """The name scope of a projection's MatMul (``blk/attn/q/MatMul`` -> ``blk/attn``); "" when unscoped."""
    return name.rsplit("/", 2)[0] if "/" in name else ""


def fuse_sibling_matmuls(src: Path, dst: Path) -> int:
    """One projection where the deploy form has several: MatMul(+Add bias) nodes that read the same
    tensor with constant weights (the separate q/k/v of the attention block) become one MatMul + Add
    over the concatenated weights and a Split. Exact (the same products, concatenated); standard ONNX
    ops only. Only nodes of one name scope (``stages.6.blocks.0/mixing/q/MatMul`` ->
    ``stages.6.blocks.0/mixing``) are fused together and the fused nodes are named in that scope, so a
    block's fused nodes keep its name prefix (the INT8 fallback's and ``--int8-exclude``'s block
    exclusion, ``block_nodes``, and the boundary taps still find them). Writes ``dst`` and returns the
    number of groups fused (0: unchanged)."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.load(str(src))
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    graph_outputs = {o.name for o in g.output}

    def const(name):
        return numpy_helper.to_array(inits[name]) if name in inits else None

    groups: dict = {}
    for n in g.node:
        if n.op_type != "MatMul" or n.output[0] in graph_outputs:
            continue
        w = const(n.input[1])
        users = consumers.get(n.output[0], [])
        if w is None or w.ndim != 2 or len(users) != 1 or users[0].op_type != "Add":
            continue
        add = users[0]
        other = add.input[1] if add.input[0] == n.output[0] else add.input[0]
        b = const(other)
        if b is None or b.shape != (w.shape[1],):
            continue
        groups.setdefault((n.input[0], _scope(n.name)), []).append((n, add, w, b))
    drop, fused = set(), 0
    new_nodes: dict = {}  # id of the first MatMul of a group -> its replacement nodes
    for (x, scope), members in groups.items():
        if len(members) < 2 or len({w.shape[0] for _, _, w, _ in members}) != 1:
            continue
        fused += 1
        base = f"{scope}/fused_matmul_{fused}" if scope else f"fused_matmul_{fused}"
        w = np.concatenate([w for _, _, w, _ in members], 1).astype(np.float32)
        b = np.concatenate([b for _, _, _, b in members]).astype(np.float32)
        sizes = np.array([mw.shape[1] for _, _, mw, _ in members], np.int64)
        g.initializer.extend([numpy_helper.from_array(w, base + "/weight"), numpy_helper.from_array(b, base + "/bias"),
                              numpy_helper.from_array(sizes, base + "/split")])
        new_nodes[id(members[0][0])] = [
            helper.make_node("MatMul", [x, base + "/weight"], [base + "/mm"], name=base + "/MatMul"),
            helper.make_node("Add", [base + "/mm", base + "/bias"], [base + "/out"], name=base + "/Add"),
            helper.make_node("Split", [base + "/out", base + "/split"], [add.output[0] for _, add, _, _ in members],
                             name=base + "/Split", axis=-1)]
        for mm, add, _, _ in members:
            drop.update({id(mm), id(add)})
    if fused:
        nodes = []
        for n in g.node:
            if id(n) in new_nodes:
                nodes += new_nodes[id(n)]
            if id(n) not in drop:
                nodes.append(n)
        del g.node[:]
        g.node.extend(nodes)
        used = {i for n in g.node for i in n.input}
        keep = [i for i in g.initializer if i.name in used]
        del g.initializer[:]
        g.initializer.extend(keep)
        onnx.checker.check_model(m)
    onnx.save(m, str(dst))
    return fused


def int8_source(onnx_path: Path, fused: Path, extra: dict, notes: list[str]) -> tuple[Path, int]:
    """The ONNX an INT8 quantizer starts from: the verified ``onnx_path`` with the attention's q/k/v
    projections fused (one MatMul + Split; exact, and the INT8 gate still judges the result), written to
    ``fused`` (the caller removes it) when there is something to fuse; else ``onnx_path`` itself.
    Records the form in ``extra["deploy_form"]``. Returns (path, number of groups fused)."""
    from partialdeploy.errors import first_line

    try:
        n = fuse_sibling_matmuls(onnx_path, fused)
    except Exception as e:  # keep the verified ONNX as it is
        notes.append(f"q/k/v projections left separate: {first_line(e, 120)}")
        n = 0
    extra["deploy_form"] = {"attention_projections": "fused qkv" if n else "as exported"}
    if not n:
        Path(fused).unlink(missing_ok=True)
        return Path(onnx_path), 0
    return Path(fused), n

