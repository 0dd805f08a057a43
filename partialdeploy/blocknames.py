"""Official PartialNet block names in exported graphs (no torch).

The deploy form flattens the network into ``stem``, ``body.N`` and ``head``; ``torch.onnx`` scope
names then read ``/body/body.5/fc1/Conv``. :func:`name_onnx_blocks` renames every node to the block
it belongs to under its official (train-form, state-dict) name — ``stages.4.blocks.1/fc1/Conv``,
``stages.3/Conv`` (a merging layer), ``patch_embed/Conv``, ``head/fc/Gemm`` — and renames the tensor
that leaves each block to the block's name (``stages.4.blocks.1``), so Netron, per-layer profiles,
``partialdeploy diff`` and the INT8 fallback all speak the names of the user's checkpoint. The
tensor names survive ONNX Runtime quantization and OpenVINO conversion (both keep tensor names), so
every artifact derived from this ONNX exposes the same block boundaries.
"""

from __future__ import annotations

import re

HEAD = "head"
STEM = "patch_embed"

_BODY = re.compile(r"^/?body/body\.(\d+)(/|$)")
_TRAIN_BLOCK = re.compile(r"^/?stages/stages\.(\d+)/blocks/blocks\.(\d+)(/|$)")
_TRAIN_STAGE = re.compile(r"^/?stages/stages\.(\d+)(/|$)")
_TOP = {"stem": STEM, "patch_embed": STEM, "head": HEAD, "avgpool_pre_head": HEAD}
BOUNDARY = re.compile(r"^(patch_embed|stages\.\d+(\.blocks\.\d+)?|head)$")


def body_names(depths) -> list[str]:
    """Official name of each deploy-form ``body.N``: the blocks of stage 0, the merging layer
    (``stages.1``), the blocks of stage 1 (``stages.2.blocks.*``), ..."""
    names: list[str] = []
    for i, d in enumerate(depths or []):
        if i:
            names.append(f"stages.{2 * i - 1}")
        names += [f"stages.{2 * i}.blocks.{j}" for j in range(int(d))]
    return names


def boundary_names(depths) -> list[str]:
    """Every block boundary in execution order: patch_embed, stages..., head."""
    return [STEM, *body_names(depths), HEAD]


def block_of_node(name: str, bodies: list[str]) -> tuple[str | None, str]:
    """(official block, rest of the scope) for a torch.onnx node name, (None, name) if unscoped."""
    m = _BODY.match(name)
    if m:
        k = int(m.group(1))
        blk = bodies[k] if k < len(bodies) else f"body.{k}"
        return blk, name[m.end():]
    m = _TRAIN_BLOCK.match(name)
    if m:
        return f"stages.{m.group(1)}.blocks.{m.group(2)}", name[m.end():]
    m = _TRAIN_STAGE.match(name)
    if m:
        return f"stages.{m.group(1)}", name[m.end():]
    parts = name.lstrip("/").split("/", 1)
    if parts[0] in _TOP:
        return _TOP[parts[0]], parts[1] if len(parts) > 1 else ""
    return None, name


def name_onnx_blocks(model, depths, bodies: list[str] | None = None) -> list[str]:
    """Rename nodes and block-output tensors of an ``onnx.ModelProto`` in place (see module doc).
    ``bodies`` (the family's official name of each ``body.N``) overrides the PartialNet naming
    derived from ``depths``. Returns the block boundaries found, in execution order (``head`` is the
    graph output)."""
    g = model.graph
    bodies = bodies if bodies is not None else body_names(depths)
    graph_outputs = {o.name for o in g.output}
    last: dict[str, object] = {}  # block -> its last computing node (the graph is topologically sorted)
    order: list[str] = []
    used = {n.name for n in g.node}
    for node in g.node:
        blk, rest = block_of_node(node.name, bodies)
        if blk is None:
            continue
        new = f"{blk}/{rest}" if rest else blk
        if new != node.name and new in used:
            new = f"{new}_{len(used)}"
        used.add(new)
        node.name = new
        if node.op_type == "Constant":
            continue
        if blk not in last:
            order.append(blk)
        last[blk] = node
    rename: dict[str, str] = {}
    existing = {t for n in g.node for t in list(n.input) + list(n.output)}
    keep = graph_outputs | {i.name for i in g.input}
    for t in existing - keep:  # intermediate tensors: /body/body.5/fc1/Conv_output_0 -> stages.4.blocks.1/...
        blk, rest = block_of_node(t, bodies)
        if blk is not None and rest:
            rename[t] = f"{blk}/{rest}"
    taken = existing | set(rename.values())
    for blk, node in last.items():
        if blk == HEAD or not node.output:
            continue
        t = node.output[0]
        if t in keep or blk in taken:
            continue
        rename[t] = blk
    if rename:
        for node in g.node:
            for i, t in enumerate(node.input):
                if t in rename:
                    node.input[i] = rename[t]
            for i, t in enumerate(node.output):
                if t in rename:
                    node.output[i] = rename[t]
        for vi in g.value_info:
            if vi.name in rename:
                vi.name = rename[vi.name]
    final = set(rename.values()) | existing
    found = [b for b in order if b != HEAD and b in final]
    return found + ([HEAD] if HEAD in last else [])
