"""Map the kernels onnxruntime ran back to the original nodes.

onnxruntime fuses nodes (Conv+BatchNorm+Relu, MatMul+Add, the GELU pattern,
a whole NCHWc region) and renames the result, so kernel names do not match
node names. The mapping is structural and uses only tensor names:

* an *anchor* is a data tensor of the original model that the optimised graph
  still has (a graph input or a node output, not a folded constant);
* an original node is joined with the optimised node that produces each of its
  anchor outputs, and with every consumer of each output that disappeared;
* an optimised node is joined with every consumer of each output that is new.

Each connected component is a *fused group*: the original nodes in it were
computed by exactly the kernels in it. Every original data node lands in
exactly one group. A group's time is shared among its nodes in proportion to
their FLOPs (equally when they have none); a group with no kernel was
optimised away and costs 0; a kernel in no group with an original node
(there is none in practice) is reported as unattributed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx

from splitc.frontend.build import subgraph_captures
from splitc.ir.graph import Graph


@dataclass
class FusedGroup:
    """Original nodes and the kernels that computed them."""

    nodes: list[str] = field(default_factory=list)
    kernels: list[str] = field(default_factory=list)


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(self, item: tuple[str, str]) -> tuple[str, str]:
        self.parent.setdefault(item, item)
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: tuple[str, str], b: tuple[str, str]) -> None:
        self.parent[self.find(a)] = self.find(b)


def _optimized_links(optimized: onnx.ModelProto) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Producer and consumers (by kernel name) of every tensor in the optimised main graph."""
    producer: dict[str, str] = {}
    consumers: dict[str, list[str]] = {}
    for node in optimized.graph.node:
        for tensor in node.output:
            if tensor:
                producer[tensor] = node.name
        for tensor in {*node.input, *subgraph_captures(node)}:
            if tensor:
                consumers.setdefault(tensor, []).append(node.name)
    return producer, consumers


def fused_groups(graph: Graph, optimized: onnx.ModelProto) -> list[FusedGroup]:
    """Partition the data nodes of ``graph`` and the kernels of ``optimized`` into fused groups."""
    producer, consumers = _optimized_links(optimized)
    graph_inputs = {i.name for i in optimized.graph.input}
    data = graph.data_nodes
    original = {v.name for v in graph.inputs} | {v.name for n in data for v in n.outputs}
    anchors = original & (set(producer) | graph_inputs)
    sets = _UnionFind()
    for node in data:
        sets.find(("n", node.name))
        for value in node.outputs:
            if value.name in anchors:
                sets.union(("n", node.name), ("k", producer[value.name]))
            else:
                for reader in value.consumers:
                    sets.union(("n", node.name), ("n", reader.name))
    for kernel in optimized.graph.node:
        sets.find(("k", kernel.name))
        for tensor in kernel.output:
            if tensor and tensor not in anchors:
                for reader in consumers.get(tensor, []):
                    sets.union(("k", kernel.name), ("k", reader))
    groups: dict[tuple[str, str], FusedGroup] = {}
    for kind, name in list(sets.parent):
        group = groups.setdefault(sets.find((kind, name)), FusedGroup())
        (group.nodes if kind == "n" else group.kernels).append(name)
    order = {node.name: i for i, node in enumerate(data)}
    found = list(groups.values())
    found.sort(key=lambda g: min((order[n] for n in g.nodes), default=len(order)))
    for group in found:
        group.nodes.sort(key=order.__getitem__)
    return found


def share_by_flops(graph: Graph, groups: list[FusedGroup],
                   kernel_times: dict[str, np.ndarray], runs: int) -> dict[str, np.ndarray]:
    """Per original data node, its share of its group's time in each run (ms)."""
    flops = {node.name: float(node.flops) for node in graph.data_nodes}
    shares: dict[str, np.ndarray] = {}
    for group in groups:
        total = sum((kernel_times[k] for k in group.kernels if k in kernel_times), np.zeros(runs))
        weights = np.array([flops[n] for n in group.nodes])
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(weights), 1 / max(len(weights), 1))
        for name, weight in zip(group.nodes, weights):
            shares[name] = total * weight
    return shares
