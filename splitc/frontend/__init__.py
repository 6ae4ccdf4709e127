"""ONNX → IR: load, validate, fix shapes, shape-infer, and build the graph."""

from __future__ import annotations

from pathlib import Path

import onnx

from splitc.frontend.build import build_graph, name_nodes, subgraph_captures
from splitc.frontend.loader import file_sha256, load_model
from splitc.frontend.resolve import ShapeReport, resolve_shapes
from splitc.frontend.shapes import fix_input_shapes, infer_shapes, real_inputs
from splitc.ir.graph import Graph


def import_model(
    model: str | Path | onnx.ModelProto,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
) -> Graph:
    """Load a model (a path or a ``ModelProto``) and lower it to the IR."""
    if isinstance(model, onnx.ModelProto):
        proto, name = onnx.ModelProto(), model.graph.name or "model"
        proto.CopyFrom(model)
        sha = _proto_sha256(proto)
    else:
        path = Path(model)
        proto, name, sha = load_model(path), path.stem, file_sha256(path)
    name_nodes(proto)
    fix_input_shapes(proto, input_shapes)
    inferred, report = resolve_shapes(proto)
    graph = build_graph(inferred, name=name, sha256=sha, shape_report=report)
    return graph


def _proto_sha256(model: onnx.ModelProto) -> str:
    import hashlib

    return hashlib.sha256(model.SerializeToString()).hexdigest()


__all__ = [
    "import_model",
    "load_model",
    "build_graph",
    "fix_input_shapes",
    "infer_shapes",
    "resolve_shapes",
    "ShapeReport",
    "real_inputs",
    "subgraph_captures",
    "file_sha256",
]
