"""Which ONNX nodes TVM 0.27's Relax ONNX importer can translate, checked before importing.

The importer's own check stops at the first unknown op type and names no node;
this one walks every node (subgraphs included) and reports them all.
"""

from __future__ import annotations

import onnx

STANDARD_DOMAINS = ("", "ai.onnx")
CONTRIB_DOMAINS = ("com.microsoft",)

# Op types the importer maps but gets wrong, found by running them against onnxruntime.
KNOWN_BROKEN = {
    "Upsample": "the importer reads the opset-7 'scales' attribute: opset >= 9 fails, opset 7 "
    "disagrees with onnxruntime (Resize works)",
    "Attention": "the importer implements com.microsoft Attention, not ONNX opset-23 Attention",
}
# Handled inside the importer rather than through its converter table.
DIRECT = {"Constant", "If"}


def convert_map() -> dict:
    """The installed importer's table of op type -> converter (imports TVM)."""
    from tvm.relax.frontend.onnx.onnx_frontend import _get_convert_map

    return _get_convert_map()


def _reason(node: onnx.NodeProto, known: dict) -> str | None:
    if node.domain not in STANDARD_DOMAINS + CONTRIB_DOMAINS:
        return f"custom domain {node.domain!r}"
    if node.domain in STANDARD_DOMAINS and node.op_type in KNOWN_BROKEN:
        return KNOWN_BROKEN[node.op_type]
    if node.op_type in DIRECT or node.op_type in known:
        return None
    return "no converter in TVM's ONNX importer"


def _walk(graph: onnx.GraphProto):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs):
                yield from _walk(sub)


def unsupported_nodes(model: onnx.ModelProto, known: dict | None = None) -> list[tuple[str, str, str]]:
    """Every node the importer cannot translate, as ``(op_type, node name, reason)``, in graph order."""
    known = convert_map() if known is None else known
    found = []
    for index, node in enumerate(_walk(model.graph)):
        why = _reason(node, known)
        if why is not None:
            found.append((node.op_type, node.name or f"#{index}", why))
    return found
