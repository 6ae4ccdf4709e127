"""Build the IR from a shape-inferred ONNX model."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper

from splitc.errors import ModelError, ShapeError
from splitc.ir.flops import node_flops
from splitc.ir.graph import Graph, Node, Value
from splitc.frontend.shapes import real_inputs


def subgraph_captures(proto: onnx.NodeProto) -> list[str]:
    """Outer-scope tensor names read by the subgraphs of a control-flow node."""
    captured: list[str] = []
    for attr in proto.attribute:
        graphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
        for graph in graphs:
            for name in _graph_captures(graph):
                if name not in captured:
                    captured.append(name)
    return captured


def _graph_captures(graph: onnx.GraphProto) -> list[str]:
    defined = {i.name for i in graph.input} | {t.name for t in graph.initializer}
    defined |= {t.name for t in graph.sparse_initializer}
    captured: list[str] = []
    for node in graph.node:
        used = [name for name in node.input if name] + subgraph_captures(node)
        for name in used:
            if name not in defined and name not in captured:
                captured.append(name)
        defined.update(name for name in node.output if name)
    return captured


def _type_table(model: onnx.ModelProto) -> dict[str, tuple[tuple[int, ...] | None, np.dtype | None]]:
    table = {}
    graph = model.graph
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if not info.type.HasField("tensor_type"):
            continue
        tensor = info.type.tensor_type
        dtype = _np_dtype(tensor.elem_type)
        shape = None
        if tensor.HasField("shape"):
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
            shape = None if any(d < 0 for d in dims) else tuple(dims)
        old_shape, old_dtype = table.get(info.name, (None, None))
        table[info.name] = (shape if shape is not None else old_shape, dtype if dtype is not None else old_dtype)
    for init in graph.initializer:
        table[init.name] = (tuple(init.dims), _np_dtype(init.data_type))
    return table


def _np_dtype(elem_type: int) -> np.dtype | None:
    if not elem_type:
        return None
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return None


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name, in place: unnamed or repeated ones get ``OpType_index``."""
    seen: set[str] = set()
    for index, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{index}"
            while node.name in seen:
                node.name += "_"
        seen.add(node.name)


def build_graph(model: onnx.ModelProto, name: str = "model", sha256: str = "", shape_report=None) -> Graph:
    """Lower a shape-inferred model to the IR; data tensors must have static shapes."""
    types = _type_table(model)
    values: dict[str, Value] = {}

    def new_value(tensor: str, **flags) -> Value:
        shape, dtype = types.get(tensor, (None, None))
        value = Value(tensor, shape, dtype, **flags)
        values[tensor] = value
        return value

    inputs = [new_value(i.name, is_graph_input=True) for i in real_inputs(model)]
    for init in model.graph.initializer:
        new_value(init.name, is_initializer=True)
    nodes = [_build_node(proto, values, new_value) for proto in model.graph.node]
    outputs = []
    for out in model.graph.output:
        if out.name not in values:
            raise ModelError(f"graph output {out.name!r} is not produced by any node")
        values[out.name].is_graph_output = True
        outputs.append(values[out.name])
    graph = Graph(model, nodes, values, inputs, outputs, name=name, sha256=sha256)
    graph.shape_report = shape_report
    _check_static_shapes(graph)
    for node in graph.nodes:
        node.flops = node_flops(node)
    return graph


def _build_node(proto, values, new_value) -> Node:
    def lookup(tensor: str) -> Value:
        if tensor not in values:
            raise ModelError(f"node {proto.name!r} reads {tensor!r}, which is not defined before it")
        return values[tensor]

    inputs = [lookup(t) if t else None for t in proto.input]
    implicit = [lookup(t) for t in subgraph_captures(proto)]
    outputs = [new_value(t) for t in proto.output if t]
    return Node(proto, inputs, outputs, implicit)


def _check_static_shapes(graph: Graph) -> None:
    for node in graph.data_nodes:
        for value in node.outputs:
            if value.shape is None or value.dtype is None:
                if not value.consumers and not value.is_graph_output:
                    continue
                raise ShapeError(
                    f"cannot infer the shape of {value.name!r} (output of node {node.name!r}, op "
                    f"{node.domain + '.' if node.domain else ''}{node.op_type}); "
                    "fix every input shape with --input-shape"
                )
