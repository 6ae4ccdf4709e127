"""Emit a three-tier split: the device, edge and cloud halves, and the two composed halves the plans need.

A tier assignment (device = 0, edge = 1, cloud = 2) names what crosses each link
(``TierParts``). The device half reads the model inputs and returns the link-1
cut; the edge half ("middle") reads the link-1 tensors its nodes use and
returns the link-2 tensors it makes plus the model outputs it computes; the
cloud half reads the link-2 cut. Device tensors that the cloud reads cross
link 2 as they crossed link 1: the edge relays their frames unchanged, so the
cloud half dequantizes them with their link-1 encoding.

``compose`` joins two emitted halves into one model (the wire tensors between
them become internal), so that a two-tier plan can stand for two tiers at once:
the device's fallback runs the edge and cloud halves composed (``rest.onnx``)
and the cloud's plan describes the device and edge halves composed
(``front.onnx``). Each node keeps its own arithmetic, so a composed model
computes what the two halves compute in turn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from splitc.backends import onnx_backend as emit
from splitc.ir.graph import Graph
from splitc.passes import qdq
from splitc.passes.base import PassManager, PassResult

TIER_NAMES = ("device", "edge", "cloud")


@dataclass
class TierParts:
    """Which nodes run on each tier and what crosses each link (tensor names, in the solver's value order)."""

    nodes: tuple[list[str], list[str], list[str]]  # device, edge, cloud
    link1: list[str]  # made on the device (or model inputs), read on the edge or the cloud
    link2: list[str]  # made below the cloud, read on the cloud
    outputs: tuple[list[str], list[str], list[str]]  # model outputs made on each tier (model order)

    @property
    def relayed(self) -> list[str]:
        """Device tensors the cloud reads: the edge forwards their link-1 frames unchanged."""
        first = set(self.link1)
        return [t for t in self.link2 if t in first]

    @property
    def made2(self) -> list[str]:
        """Link-2 tensors the edge half computes."""
        first = set(self.link1)
        return [t for t in self.link2 if t not in first]

    @property
    def returned(self) -> list[str]:
        """Model outputs computed above the device (sent back to it), in model order."""
        return [*self.outputs[1], *self.outputs[2]]

    def consumed(self, graph: Graph) -> list[str]:
        """Link-1 tensors some edge node reads: the inputs of the edge half."""
        edge = set(self.nodes[1])
        return [t for t in self.link1 if any(c.name in edge for c in graph.values[t].consumers)]

    @property
    def used(self) -> tuple[bool, bool]:
        """Whether anything runs above the device, and whether anything runs on the cloud."""
        return bool(self.nodes[1] or self.nodes[2]), bool(self.nodes[2])


def tier_parts(graph: Graph, node_names: list[str], value_names: list[str], tier: np.ndarray,
               up_values: list[np.ndarray]) -> TierParts:
    """Name the parts of an assignment (``tier`` per node of ``node_names``; ``up_values`` per link, from
    ``splitc.partition.tiers.evaluate_tiers``)."""
    where = dict(zip(node_names, (int(t) for t in tier)))
    nodes = tuple([n.name for n in graph.data_nodes if where[n.name] == k] for k in range(3))
    made = {v.name: 0 for v in graph.values.values() if v.producer is None or v.producer.name not in where}
    made.update({o.name: where[n.name] for n in graph.data_nodes for o in n.outputs})
    outputs = tuple([v.name for v in graph.outputs if made.get(v.name, 0) == k] for k in range(3))
    links = [[value_names[i] for i in up] for up in up_values]
    return TierParts(nodes, links[0], links[1], outputs)


def float_halves(graph: Graph, parts: TierParts) -> dict[str, onnx.ModelProto | None]:
    """The three halves without quantizers (raw float cut tensors in and out); None for an empty tier above
    the device."""
    name = graph.name
    halves: dict[str, onnx.ModelProto | None] = {
        "device": emit.emit_half(graph, emit.edge_spec(graph, parts.nodes[0], parts.link1), f"{name}_device"),
        "edge": None, "cloud": None}
    if parts.nodes[1]:
        outputs = list(dict.fromkeys([*parts.made2, *parts.outputs[1]]))
        spec = emit.HalfSpec(parts.nodes[1], parts.consumed(graph), outputs)
        halves["edge"] = emit.emit_half(graph, spec, f"{name}_edge")
    if parts.nodes[2]:
        spec = emit.cloud_spec(parts.nodes[2], parts.link2, parts.outputs[2])
        halves["cloud"] = emit.emit_half(graph, spec, f"{name}_cloud")
    return halves


def quantized_halves(graph: Graph, parts: TierParts, floats: dict, encodings: dict[str, qdq.Encoding]
                     ) -> dict[str, PassResult | None]:
    """The halves with their quantizers and dequantizers: link-1 encodings on the device's outputs (and the
    inputs that read them), link-2 encodings on the edge's; relayed tensors keep their link-1 encoding."""
    outputs = {v.name for v in graph.outputs}
    first = [encodings[t] for t in parts.link1]
    result: dict[str, PassResult | None] = {
        "device": _passes(floats["device"], [qdq.InsertQuantize(first, keep=outputs & set(parts.link1))]),
        "edge": None, "cloud": None}
    if floats["edge"] is not None:
        made = [encodings[t] for t in parts.made2]
        result["edge"] = _passes(floats["edge"], [qdq.InsertDequantize([encodings[t] for t in parts.consumed(graph)]),
                                                  qdq.InsertQuantize(made, keep=outputs & set(parts.made2))])
    if floats["cloud"] is not None:
        result["cloud"] = _passes(floats["cloud"], [qdq.InsertDequantize([encodings[t] for t in parts.link2])])
    return result


def _passes(half: onnx.ModelProto, passes: list) -> PassResult:
    copy = onnx.ModelProto()
    copy.CopyFrom(half)
    result = PassManager(passes)(copy)
    if not result.modified:
        emit.check_half(result.model)
    return result


def compose(first: onnx.ModelProto, second: onnx.ModelProto | None, outputs: list[str], name: str
            ) -> onnx.ModelProto:
    """One model running ``first`` then ``second``: ``second``'s inputs that ``first`` makes are connected by
    name, the others become inputs; the graph outputs are ``outputs``.

    Nodes of ``second`` identical to one of ``first`` (shared constants, the dequantizer of a tensor both
    read) appear once; a tensor ``second`` makes under a name ``first`` already uses (a cut tensor rebuilt
    after the wire) is renamed inside ``second``.
    """
    nodes, inits = list(first.graph.node), {t.name: t for t in first.graph.initializer}
    inputs = {i.name: i for i in first.graph.input}
    infos = {v.name: v for v in [*first.graph.value_info, *first.graph.output, *first.graph.input]}
    defined = set(inputs) | set(inits) | {o for n in nodes for o in n.output}
    known = {n.SerializeToString(deterministic=True) for n in nodes}
    renamed: dict[str, str] = {}
    if second is not None:
        for node in second.graph.node:
            node = _renamed(node, renamed)
            if node.SerializeToString(deterministic=True) in known:
                continue
            for i, out in enumerate(node.output):
                if out and out in defined:
                    renamed[out] = node.output[i] = _fresh(out, defined)
            defined.update(node.output)
            nodes.append(node)
        for tensor in second.graph.initializer:
            inits.setdefault(tensor.name, tensor)
        for info in [*second.graph.value_info, *second.graph.output, *second.graph.input]:
            infos.setdefault(renamed.get(info.name, info.name), _info_as(info, renamed.get(info.name, info.name)))
        made = {o for n in first.graph.node for o in n.output}
        for info in second.graph.input:
            if info.name not in made and info.name not in inits:
                inputs.setdefault(info.name, info)
    names = set(inputs) | set(outputs)
    used = {t for n in nodes for t in [*n.input, *n.output]}
    value_info = [infos[t] for t in sorted(used - names) if t in infos]
    graph = helper.make_graph(nodes, name, list(inputs.values()), [infos[t] for t in outputs],
                              initializer=list(inits.values()), value_info=value_info)
    graph.doc_string = f"{name}: composed by splitc"
    model = helper.make_model(graph, opset_imports=list(first.opset_import))
    model.ir_version = first.ir_version
    functions = {(f.domain, f.name): f for f in [*first.functions, *(second.functions if second else [])]}
    model.functions.extend(functions.values())
    model.producer_name = "splitc"
    emit.check_half(model)
    return model


def _fresh(name: str, taken: set[str]) -> str:
    candidate, index = f"{name}/received", 1
    while candidate in taken:
        index += 1
        candidate = f"{name}/received{index}"
    return candidate


def _info_as(info: onnx.ValueInfoProto, name: str) -> onnx.ValueInfoProto:
    copy = onnx.ValueInfoProto()
    copy.CopyFrom(info)
    copy.name = name
    return copy


def _renamed(node: onnx.NodeProto, mapping: dict[str, str]) -> onnx.NodeProto:
    """A copy of ``node`` reading the renamed tensors (in its subgraphs too: they may capture them)."""
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    if mapping:
        _rename_reads(copy, mapping)
    return copy


def _rename_reads(node: onnx.NodeProto, mapping: dict[str, str]) -> None:
    for i, name in enumerate(node.input):
        if name in mapping:
            node.input[i] = mapping[name]
    for attr in node.attribute:
        for graph in [*([attr.g] if attr.HasField("g") else []), *attr.graphs]:
            for inner in graph.node:
                _rename_reads(inner, mapping)
