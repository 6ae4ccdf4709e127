"""The partition problem as plain arrays, independent of the IR.

Nodes are the data nodes in topological order. Values are the tensors that
can cross the network: the graph inputs (produced by the edge itself,
``producer == -1``) and the data-node outputs that are used. Weights never
cross: both halves carry the ones they use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order

from splitc.ir.graph import Graph
from splitc.cost.model import CostTable


@dataclass
class SplitProblem:
    edge_ms: np.ndarray  # (n,) latency of each node on the edge
    cloud_ms: np.ndarray  # (n,) latency of each node on the cloud
    producer: np.ndarray  # (m,) producing node of each value, -1 for graph inputs
    nbytes: np.ndarray  # (m,) size of each value
    is_output: np.ndarray  # (m,) value is a graph output
    cons_ptr: np.ndarray  # (m + 1,) CSR offsets into cons_idx
    cons_idx: np.ndarray  # consuming nodes of each value, without repeats
    bandwidth: float  # bytes per second, both directions
    rtt_ms: float = 0.0
    node_names: list[str] | None = None
    value_names: list[str] | None = None
    # Optional measured times, NaN where unknown (read at cut vertices; see splitc.partition.segments):
    edge_prefix_ms: np.ndarray | None = None  # (m,) edge latency of everything value x depends on
    cloud_suffix_ms: np.ndarray | None = None  # (m,) cloud latency of everything that depends on x
    # Values that must not cross (data-dependent shapes): crossing one costs ``penalty_ms``, more than any
    # assignment that crosses none, so the exact optimum never sends one while edge-only is possible.
    pinned: np.ndarray | None = None  # (m,) bool

    @property
    def num_nodes(self) -> int:
        return len(self.edge_ms)

    @property
    def num_values(self) -> int:
        return len(self.producer)

    @property
    def transfer_ms(self) -> np.ndarray:
        """Time on the wire of each value alone, without the round trip (``penalty_ms`` for pinned values)."""
        wire = self.nbytes / self.bandwidth * 1e3
        if self.pinned is None or not self.pinned.any():
            return wire
        return np.where(self.pinned, self.penalty_ms, wire)

    @property
    def penalty_ms(self) -> float:
        """A finite cost above every assignment that sends no pinned value (edge-only is one)."""
        measured = [a[~np.isnan(a)].sum() for a in (self.edge_prefix_ms, self.cloud_suffix_ms) if a is not None]
        free = self.nbytes[~self.pinned] if self.pinned is not None else self.nbytes
        return 2.0 * (float(self.edge_ms.sum() + self.cloud_ms.sum()) + self.rtt_ms + float(sum(measured))
                      + float(free.sum()) / self.bandwidth * 1e3 * 2 + 1.0)

    def value_of_consumer_edge(self) -> np.ndarray:
        """For every entry of ``cons_idx``, the value it consumes."""
        return np.repeat(np.arange(self.num_values), np.diff(self.cons_ptr))

    def with_link(self, bandwidth: float, rtt_ms: float) -> "SplitProblem":
        """The same problem over another link."""
        return SplitProblem(**{**self.__dict__, "bandwidth": bandwidth, "rtt_ms": rtt_ms})


def is_valid(problem: SplitProblem, on_cloud: np.ndarray) -> bool:
    """No cloud node may feed an edge node."""
    value = problem.value_of_consumer_edge()
    prod = problem.producer[value]
    has_prod = prod >= 0
    feeds = on_cloud[prod[has_prod]] & ~on_cloud[problem.cons_idx[has_prod]]
    return not bool(feeds.any())


def dead_nodes(problem: SplitProblem) -> np.ndarray:
    """Nodes from which no graph output can be reached (dead-code elimination removes them)."""
    n = problem.num_nodes
    value = problem.value_of_consumer_edge()
    has_prod = problem.producer[value] >= 0
    made_output = problem.is_output & (problem.producer >= 0)
    sink = n
    rows = np.concatenate([problem.cons_idx[has_prod], np.full(int(made_output.sum()), sink)])
    cols = np.concatenate([problem.producer[value[has_prod]], problem.producer[made_output]])
    graph = sp.csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n + 1, n + 1))
    live = np.zeros(n + 1, dtype=bool)
    live[breadth_first_order(graph, sink, directed=True, return_predecessors=False)] = True
    return np.flatnonzero(~live[:n])


def problem_from_graph(graph: Graph, costs: CostTable, bandwidth: float, rtt_ms: float) -> SplitProblem:
    """Arrays for the partitioner: data nodes, crossable values and their consumers."""
    nodes = graph.data_nodes
    index = {id(node): i for i, node in enumerate(nodes)}
    values = [v for v in graph.inputs if v.consumers or v.is_graph_output]
    for node in nodes:
        values.extend(v for v in node.outputs if v.consumers or v.is_graph_output)
    consumers = [sorted({index[id(c)] for c in v.consumers}) for v in values]
    ptr = np.zeros(len(values) + 1, dtype=np.int64)
    ptr[1:] = np.cumsum([len(c) for c in consumers])
    flat = np.fromiter((i for c in consumers for i in c), dtype=np.int64, count=int(ptr[-1]))
    pinned = np.array([v.name in graph.data_dependent for v in values], dtype=bool)
    return SplitProblem(
        pinned=pinned if pinned.any() else None,
        edge_ms=np.asarray(costs.edge_ms, dtype=np.float64),
        cloud_ms=np.asarray(costs.cloud_ms, dtype=np.float64),
        producer=np.array([index[id(v.producer)] if v.producer is not None else -1 for v in values], dtype=np.int64),
        nbytes=np.array([v.nbytes for v in values], dtype=np.int64),
        is_output=np.array([v.is_graph_output for v in values], dtype=bool),
        cons_ptr=ptr,
        cons_idx=flat,
        bandwidth=float(bandwidth),
        rtt_ms=float(rtt_ms),
        node_names=[n.name for n in nodes],
        value_names=[v.name for v in values],
    )
