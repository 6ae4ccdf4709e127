"""The DAG IR: ``Graph``, ``Node`` and ``Value`` with use-def links.

A ``Node`` registers itself as a consumer of its inputs and as the producer of
its outputs when it is built, so passes never maintain the links by hand.
Values compare by identity, not by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import onnx


@dataclass(eq=False)
class Value:
    """A tensor: a graph input, an initializer, or a node output."""

    name: str
    shape: tuple[int, ...] | None = None
    dtype: np.dtype | None = None
    producer: "Node | None" = None
    consumers: list["Node"] = field(default_factory=list)
    is_initializer: bool = False
    is_graph_input: bool = False
    is_graph_output: bool = False

    @property
    def is_constant(self) -> bool:
        """True for weights: initializers and outputs of constant nodes."""
        return self.is_initializer or (self.producer is not None and self.producer.constant)

    @property
    def nbytes(self) -> int:
        """Size in bytes of the tensor (0 when the shape or dtype is unknown)."""
        if self.shape is None or self.dtype is None:
            return 0
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def numel(self) -> int:
        return 0 if self.shape is None else int(np.prod(self.shape, dtype=np.int64))

    def __repr__(self) -> str:
        return f"Value({self.name!r}, shape={self.shape}, dtype={self.dtype})"


class Node:
    """An operator. ``implicit_inputs`` are the outer-scope tensors its subgraphs read."""

    def __init__(
        self,
        proto: onnx.NodeProto,
        inputs: list[Value | None],
        outputs: list[Value],
        implicit_inputs: Iterable[Value] = (),
    ) -> None:
        self.proto = proto
        self.name = proto.name
        self.op_type = proto.op_type
        self.domain = proto.domain
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.implicit_inputs = list(implicit_inputs)
        self.flops = 0.0
        self.constant = self._computes_constant()
        for value in self.all_inputs:
            if self not in value.consumers:
                value.consumers.append(self)
        for value in self.outputs:
            value.producer = self

    @property
    def all_inputs(self) -> list[Value]:
        """Explicit inputs (empty optional inputs skipped) and implicit inputs, without repeats."""
        seen: dict[int, Value] = {}
        for value in [*self.inputs, *self.implicit_inputs]:
            if value is not None:
                seen.setdefault(id(value), value)
        return list(seen.values())

    def _computes_constant(self) -> bool:
        """A node whose inputs are all weights computes a weight: both halves carry it.

        Inputs are built before their consumers, so this never recurses.
        """
        if self.op_type.startswith("Random"):
            return False
        return all(value.is_constant for value in self.all_inputs)

    @property
    def is_control_flow(self) -> bool:
        return any(attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for attr in self.proto.attribute)

    @property
    def memory_bytes(self) -> int:
        """Bytes read and written by the node: inputs (weights included) and outputs."""
        return sum(v.nbytes for v in self.all_inputs) + sum(v.nbytes for v in self.outputs)

    def __repr__(self) -> str:
        return f"Node({self.name!r}, {self.op_type})"


class Graph:
    """A model as a DAG of nodes in topological order.

    ``model`` is the shape-inferred ``onnx.ModelProto`` the graph was built
    from; the backends cut it into halves by node and tensor name.
    """

    def __init__(
        self,
        model: onnx.ModelProto,
        nodes: list[Node],
        values: dict[str, Value],
        inputs: list[Value],
        outputs: list[Value],
        name: str = "model",
        sha256: str = "",
    ) -> None:
        self.model = model
        self.nodes = nodes
        self.values = values
        self.inputs = inputs
        self.outputs = outputs
        self.name = name
        self.sha256 = sha256
        self.shape_report = None  # splitc.frontend.resolve.ShapeReport, when built by the frontend

    @property
    def data_dependent(self) -> dict[str, str]:
        """Tensors whose shape depends on input values, with the reason: they never cross the network."""
        return dict(self.shape_report.data_dependent) if self.shape_report is not None else {}

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def data_nodes(self) -> list[Node]:
        """Nodes that depend on a graph input: the ones the partitioner places."""
        return [node for node in self.nodes if not node.constant]

    @property
    def constant_nodes(self) -> list[Node]:
        return [node for node in self.nodes if node.constant]

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def remove_nodes(self, doomed: Iterable[Node]) -> None:
        """Remove nodes whose outputs nobody uses; checks everything before changing anything."""
        doomed_ids = {id(node) for node in doomed}
        for node in self.nodes:
            if id(node) not in doomed_ids:
                continue
            for value in node.outputs:
                live = [c for c in value.consumers if id(c) not in doomed_ids]
                if live or value.is_graph_output:
                    raise ValueError(f"cannot remove {node.name!r}: its output {value.name!r} is still used")
        for node in self.nodes:
            if id(node) in doomed_ids:
                for value in node.all_inputs:
                    value.consumers.remove(node)
                for value in node.outputs:
                    del self.values[value.name]
        self.nodes = [node for node in self.nodes if id(node) not in doomed_ids]
