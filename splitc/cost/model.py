"""Cost annotation: per-node latency on the edge and on the cloud.

Every cost model answers ``node_ms(node)``; the partitioner sees only the
resulting ``CostTable``, so measured profiles can replace the roofline without
touching it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from splitc.ir.graph import Graph, Node
from splitc.targets import Target


class CostModel(Protocol):
    """Anything that predicts one node's latency in milliseconds."""

    name: str

    def node_ms(self, node: Node) -> float: ...

    def describe(self) -> dict: ...


class RooflineCostModel:
    """``max(flops / peak_flops, bytes / mem_bw) / efficiency + overhead``."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.name = target.name

    def node_ms(self, node: Node) -> float:
        if node.constant:
            return 0.0
        t = self.target
        seconds = max(node.flops / t.peak_flops, node.memory_bytes / t.mem_bw) / t.efficiency
        return seconds * 1e3 + t.overhead_us * 1e-3

    def describe(self) -> dict:
        return {"kind": "roofline", "target": self.target.to_dict()}


@dataclass
class CostTable:
    """Per-node latencies of the data nodes, in graph order."""

    node_names: list[str]
    edge_ms: np.ndarray
    cloud_ms: np.ndarray
    edge_model: dict = field(default_factory=dict)
    cloud_model: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, dict[str, float]]:
        return {
            name: {"edge_ms": float(e), "cloud_ms": float(c)}
            for name, e, c in zip(self.node_names, self.edge_ms, self.cloud_ms)
        }


def annotate_costs(graph: Graph, edge: CostModel, cloud: CostModel) -> CostTable:
    """Predict every data node's latency on both sides."""
    for model in (edge, cloud):
        if hasattr(model, "bind"):  # a measured profile checks that it belongs to this model
            model.bind(graph)
    nodes = graph.data_nodes
    return CostTable(
        node_names=[n.name for n in nodes],
        edge_ms=np.array([edge.node_ms(n) for n in nodes], dtype=np.float64),
        cloud_ms=np.array([cloud.node_ms(n) for n in nodes], dtype=np.float64),
        edge_model=edge.describe(),
        cloud_model=cloud.describe(),
    )
