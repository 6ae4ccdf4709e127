"""Cut vertices (QDMP): the tensors that every input-to-output path passes through.

They are the dominators of a virtual sink, but in a DAG there is a simpler
linear-time test. Put the graph in a topological order and draw every edge as
an interval over the positions it jumps. A vertex lies on every path from the
virtual source to the virtual sink exactly when no edge jumps over it: any
path must cross its position, and the only way to cross without a jump is to
land on it. One difference array over the positions finds them all at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splitc.partition.problem import SplitProblem


@dataclass
class Layout:
    """Positions of the problem's vertices in one topological order.

    Position 0 is the virtual source (it produces the graph inputs and starts
    the nodes that read no tensor), the last position the virtual sink (it
    consumes the graph outputs). Each node is followed by the values it makes.
    """

    node_pos: np.ndarray
    value_pos: np.ndarray
    sink_pos: int

    def edges(self, problem: SplitProblem) -> tuple[np.ndarray, np.ndarray]:
        """All edges of the vertex graph as (from position, to position)."""
        value_of = problem.value_of_consumer_edge()
        has_prod = problem.producer >= 0
        fed = np.zeros(problem.num_nodes, dtype=bool)
        fed[problem.cons_idx] = True
        src = [
            np.zeros(int((~has_prod).sum()) + int((~fed).sum()), dtype=np.int64),
            self.node_pos[problem.producer[has_prod]],
            self.value_pos[value_of],
            self.value_pos[problem.is_output],
        ]
        dst = [
            np.concatenate([self.value_pos[~has_prod], self.node_pos[~fed]]),
            self.value_pos[has_prod],
            self.node_pos[problem.cons_idx],
            np.full(int(problem.is_output.sum()), self.sink_pos, dtype=np.int64),
        ]
        return np.concatenate(src), np.concatenate(dst)


def layout(problem: SplitProblem) -> Layout:
    """Interleave nodes and values in topological order (nodes are already sorted)."""
    n, m = problem.num_nodes, problem.num_values
    producer = problem.producer
    num_inputs = int((producer < 0).sum())
    made = np.bincount(producer[producer >= 0], minlength=n)
    node_pos = 1 + num_inputs + np.arange(n, dtype=np.int64) + np.concatenate([[0], np.cumsum(made)[:-1]])
    order = np.argsort(producer, kind="stable")
    sorted_prod = producer[order]
    first = np.searchsorted(sorted_prod, sorted_prod, side="left")
    rank = np.arange(m, dtype=np.int64) - first
    value_pos = np.empty(m, dtype=np.int64)
    base = np.where(sorted_prod < 0, 0, node_pos[np.maximum(sorted_prod, 0)])
    value_pos[order] = base + 1 + rank
    return Layout(node_pos=node_pos, value_pos=value_pos, sink_pos=1 + n + m)


def find_cut_vertices(problem: SplitProblem) -> np.ndarray:
    """Indices of the cut-vertex values, in topological order.

    Graph inputs are left out: the virtual source plays their part.
    """
    lay = layout(problem)
    src, dst = lay.edges(problem)
    if np.any(dst <= src):
        raise ValueError("the problem's nodes are not in topological order")
    jumps = dst > src + 1
    size = lay.sink_pos + 2
    opened = np.bincount(src[jumps] + 1, minlength=size)
    closed = np.bincount(dst[jumps], minlength=size)
    covered = np.cumsum(opened - closed)
    candidates = np.flatnonzero((covered[lay.value_pos] == 0) & (problem.producer >= 0))
    return candidates[np.argsort(lay.value_pos[candidates])]
