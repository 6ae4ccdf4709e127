"""Emit the edge and cloud halves as ONNX models.

Each half keeps the original node and tensor names and carries only the
weights (initializers and constant subgraphs) that its own nodes use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnx

from splitc.ir.proto import larger_than
from onnx import helper

from splitc.frontend.build import subgraph_captures
from splitc.frontend.shapes import real_inputs
from splitc.passes.base import check_half  # noqa: F401 (re-exported: the full check of a half)
from splitc.ir.graph import Graph

_TWO_GB = 2**31 - 1


@dataclass
class HalfSpec:
    """What one half computes: its data nodes, inputs and outputs (by name)."""

    nodes: list[str]
    inputs: list[str]
    outputs: list[str]


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    infos = {}
    for info in [*model.graph.value_info, *model.graph.input, *model.graph.output]:
        infos[info.name] = info
    return infos


def _info_for(graph: Graph, infos: dict, name: str) -> onnx.ValueInfoProto:
    value = graph.values[name]
    if value.shape is not None and value.dtype is not None:
        elem = helper.np_dtype_to_tensor_dtype(value.dtype)
        return helper.make_tensor_value_info(name, elem, list(value.shape))
    info = onnx.ValueInfoProto()
    info.CopyFrom(infos[name])
    return info


def _closure(graph: Graph, node_names: set[str], outputs: list[str]) -> tuple[set[str], set[str]]:
    """The constant nodes and initializers needed by the given nodes and outputs."""
    producers = {v.name: v.producer for v in graph.values.values() if v.producer is not None}
    initializers = {t.name for t in graph.model.graph.initializer}
    keep_nodes, keep_inits = set(node_names), set()
    stack = [t for n in graph.nodes if n.name in node_names for t in [*n.proto.input, *subgraph_captures(n.proto)]]
    stack += outputs
    while stack:
        tensor = stack.pop()
        if not tensor:
            continue
        if tensor in initializers:
            keep_inits.add(tensor)
            continue
        producer = producers.get(tensor)
        if producer is not None and producer.constant and producer.name not in keep_nodes:
            keep_nodes.add(producer.name)
            stack.extend([*producer.proto.input, *subgraph_captures(producer.proto)])
    return keep_nodes, keep_inits


def emit_half(graph: Graph, spec: HalfSpec, name: str) -> onnx.ModelProto:
    """A standalone model computing ``spec.outputs`` from ``spec.inputs``."""
    source = graph.model
    infos = _value_infos(source)
    keep_nodes, keep_inits = _closure(graph, set(spec.nodes), spec.outputs)
    nodes = [n for n in source.graph.node if n.name in keep_nodes]
    inits = [t for t in source.graph.initializer if t.name in keep_inits]
    inputs = [_info_for(graph, infos, t) for t in spec.inputs]
    if source.ir_version < 4:
        inputs += [i for i in source.graph.input if i.name in keep_inits]
    outputs = [_info_for(graph, infos, t) for t in spec.outputs]
    declared = {i.name for i in [*inputs, *outputs]}
    used = {t for n in nodes for t in [*n.input, *n.output]}
    value_info = [infos[t] for t in sorted(used - declared) if t in infos]
    half_graph = helper.make_graph(nodes, name, inputs, outputs, initializer=inits, value_info=value_info)
    half_graph.doc_string = f"{name}: a half of {source.graph.name or graph.name} split by splitc"
    model = helper.make_model(half_graph, opset_imports=list(source.opset_import))
    model.ir_version = source.ir_version
    model.functions.extend(source.functions)
    model.producer_name = "splitc"
    return model


def edge_spec(graph: Graph, edge_nodes: list[str], cut: list[str]) -> HalfSpec:
    """The edge half reads every model input and returns the cut plus the outputs it computes."""
    cloud_side = set(n.name for n in graph.data_nodes) - set(edge_nodes)
    local_outputs = [v.name for v in graph.outputs if v.producer is None or v.producer.name not in cloud_side]
    outputs = list(dict.fromkeys([*local_outputs, *cut]))
    return HalfSpec(edge_nodes, [i.name for i in real_inputs(graph.model)], outputs)


def cloud_spec(cloud_nodes: list[str], cut: list[str], returned: list[str]) -> HalfSpec:
    """The cloud half reads the cut and returns the graph outputs it computes."""
    return HalfSpec(cloud_nodes, list(cut), list(returned))


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def save_half(model: onnx.ModelProto, path: Path) -> None:
    """Save a half; halves over 2 GB keep their weights in ``<file>.data``."""
    if larger_than(model, _TWO_GB):
        model = _copy(model)  # saving with external data rewrites the tensors in place
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data", size_threshold=1024)
        onnx.checker.check_model(str(path), full_check=True)
    else:
        onnx.save_model(model, str(path))
