"""Official block names in exported graphs and runtime layer names (no torch, no family knowledge).

The deploy form of every family flattens the network into ``stem``, ``body.N`` and ``head``;
``torch.onnx`` scope names then read ``/body/body.5/fc1/Conv``. :func:`name_onnx_blocks` renames
every node to the block it belongs to under its official (train-form, state-dict) name — for
PartialNet ``stages.4.blocks.1/fc1/Conv``, ``stages.3/Conv`` (a merging layer),
``patch_embed/Conv``, ``head/fc/Gemm``; for ECA-ResNet ``layer2.1/...`` — and renames the tensor
that leaves each block to the block's name (``stages.4.blocks.1``), so Netron, per-layer profiles,
``partialdeploy diff`` and the INT8 fallback all speak the names of the user's checkpoint. The
tensor names survive ONNX Runtime quantization and OpenVINO conversion (both keep tensor names), so
every artifact derived from this ONNX exposes the same block boundaries; the list of boundaries is
also stored in the ONNX metadata (``block_outputs``, kept by OpenVINO in ``rt_info["framework"]``).

Which names are a family's blocks is the family's (``Family.body_names``, ``Family.block_pattern``
in :mod:`partialdeploy.families`); this module only has the name mechanics they share.
"""

from __future__ import annotations

import re

HEAD = "head"  # every family's last boundary: the logits

_BODY = re.compile(r"^/?body/body\.(\d+)(/|$)")
_DEPLOY_TOP = ("stem", "head")
_PARTS = re.compile(r"\s*(?:\+|\|\||,)\s*")  # fused layer names: "a + b", "a || b", "a, b"
_BODY_N = re.compile(r"(?:^|\.)body\.(\d+)(?=\.|$)")


def block_of_node(name: str, bodies: list[str], stem: str = "stem") -> tuple[str | None, str]:
    """(official block, rest of the scope) for a deploy-form torch.onnx node name, (None, name) if
    unscoped. ``bodies``: the official name of each ``body.N``; ``stem``: the stem's."""
    m = _BODY.match(name)
    if m:
        k = int(m.group(1))
        blk = bodies[k] if k < len(bodies) else f"body.{k}"
        return blk, name[m.end():]
    parts = name.lstrip("/").split("/", 1)
    if parts[0] in _DEPLOY_TOP:
        return (stem if parts[0] == "stem" else HEAD), parts[1] if len(parts) > 1 else ""
    return None, name


def normalize(name: str) -> str:
    """A runtime's layer name as dotted lower-case tokens, repeated tokens once:
    ``/stages/stages.0/blocks/blocks.1/mlp`` and ``node_Conv_3_stages_0_blocks_1_mlp`` both contain
    ``stages.0.blocks.1``; ``input_abcd_/patch_embed/Conv`` contains ``patch.embed``."""
    toks = [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]
    return ".".join(t for i, t in enumerate(toks) if i == 0 or t != toks[i - 1])


def find_block(name: str, pattern: re.Pattern, canonical, bodies: list[str] | None = None) -> str | None:
    """The block a layer name belongs to: the first part of a fused name (``a + b``) in which
    ``pattern`` (over :func:`normalize`'d names, group 1 = the block) or a deploy-form ``body.N``
    is found; ``canonical`` turns the normalized match into the official name. None if no part maps."""
    for part in _PARTS.split(name):
        n = normalize(part)
        m = pattern.search(n)
        if m:
            return canonical(m.group(1))
        m = _BODY_N.search(n)
        if m:
            k = int(m.group(1))
            return bodies[k] if bodies and k < len(bodies) else f"body.{k}"
    return None


def name_onnx_blocks(model, bodies: list[str], stem: str = "stem") -> list[str]:
    """Rename nodes and block-output tensors of an ``onnx.ModelProto`` in place (see module doc).
    ``bodies``: the family's official name of each deploy-form ``body.N``; ``stem``: its stem's name.
    Returns the block boundaries found, in execution order (``head`` is the graph output)."""
    g = model.graph
    graph_outputs = {o.name for o in g.output}
    last: dict[str, object] = {}  # block -> its last computing node (the graph is topologically sorted)
    order: list[str] = []
    used = {n.name for n in g.node}
    for node in g.node:
        blk, rest = block_of_node(node.name, bodies, stem)
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
        blk, rest = block_of_node(t, bodies, stem)
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
