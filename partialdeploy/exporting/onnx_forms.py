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



GELU_OPSET = 20  # the first opset with a standard Gelu operator


def _scalar(consts: dict, name: str, value: float) -> bool:
    v = consts.get(name)
    return v is not None and v.size == 1 and abs(float(v.reshape(-1)[0]) - value) < 1e-6 * max(1.0, abs(value))


def _gelu_groups(g) -> list[tuple[list, str, object]]:
    """Every exact GELU as torch exports it at opset 17, ``x * (1 + erf(x / sqrt 2)) * 0.5``:
    Div -> Erf -> Add -> Mul(x, ·) -> Mul(·, 0.5), nothing else reading its inner tensors. Returns
    [(the first four nodes, x, the last Mul)]."""
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
    producer = {o: n for n in g.node for o in n.output}
    users: dict = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)

    def only_user(name, op):
        u = users.get(name, [])
        return u[0] if len(u) == 1 and u[0].op_type == op else None

    out = []
    for erf in (n for n in g.node if n.op_type == "Erf"):
        div = producer.get(erf.input[0])
        if div is None or div.op_type != "Div" or not _scalar(consts, div.input[1], 2 ** 0.5):
            continue
        x = div.input[0]
        add = only_user(erf.output[0], "Add") if only_user(div.output[0], "Erf") else None
        if add is None or not _scalar(consts, next((i for i in add.input if i != erf.output[0]), ""), 1.0):
            continue
        mul = only_user(add.output[0], "Mul")
        if mul is None or x not in mul.input:
            continue
        half = only_user(mul.output[0], "Mul")
        if half is not None and _scalar(consts, next((i for i in half.input if i != mul.output[0]), ""), 0.5):
            out.append(([div, erf, add, mul], x, half))
    return out


def gelu_as_op(src: Path, dst: Path) -> int:
    """Every exact GELU of ``src`` as one standard ``Gelu`` operator (ONNX opset 20; the model is
    converted to opset 20 by onnx's version converter first). Exact: the same function, one kernel.
    Why: ONNX Runtime fuses the five-node GELU into one kernel at session creation — but not in a Q/DQ
    model, where every consumer of a DequantizeLinear gets its own copy and the pattern no longer
    matches, so a quantized GELU model ran five element-wise kernels per GELU. The ``Gelu`` node is named
    in the scope of the nodes it replaces (a block keeps its name prefix). Writes ``dst`` and returns
    the number of GELUs replaced (0: ``dst`` not written)."""
    import onnx
    from onnx import helper, version_converter

    m = onnx.load(str(src))
    groups = _gelu_groups(m.graph)
    if not groups:
        return 0
    m = version_converter.convert_version(m, GELU_OPSET)
    g = m.graph
    groups = _gelu_groups(g)  # again: the converter rebuilds the graph
    drop = {id(n) for nodes, _, _ in groups for n in nodes}
    names = {n.name for n in g.node}
    new = {}
    for _, x, half in groups:
        scope = half.name.rsplit("/", 1)[0] if "/" in half.name else ""
        name = f"{scope}/Gelu" if scope else f"{half.name or 'gelu'}_gelu"
        while name in names:  # unique, still in the scope
            name += "_"
        names.add(name)
        new[id(half)] = helper.make_node("Gelu", [x], [half.output[0]], name=name)
    nodes = [new.get(id(n), n) for n in g.node if id(n) not in drop]
    used = {i for n in nodes for i in n.input} | {o.name for o in g.output}
    nodes = [n for n in nodes if n.op_type != "Constant" or n.output[0] in used]  # the GELUs' own constants
    del g.node[:]
    g.node.extend(nodes)
    keep = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep)
    onnx.checker.check_model(m)
    onnx.save(m, str(dst))
    return len(groups)
