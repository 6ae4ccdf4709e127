"""Exact edge/cloud min-cut between adjacent cut vertices, in one max-flow call.

Flow network (source = edge, sink = cloud; a node on the source side runs on
the edge):

* ``s -> v`` costs ``cloud_ms[v]`` plus the download of the graph outputs it
  makes (paid when v runs on the cloud); ``v -> t`` costs ``edge_ms[v]``.
* Every value x gets an auxiliary vertex a(x): ``producer -> a(x)`` costs its
  transfer time and ``a(x) -> consumer`` is infinite. A tensor read by several
  cloud nodes is therefore paid for once, not once per consumer.
* ``consumer -> producer`` is infinite: no cloud node may feed an edge node.

With cut vertices d_1 < ... < d_k, segment j holds the nodes between d_j and
d_{j+1}. No tensor other than d_j enters segment j, so the segments are
independent: in segment j the virtual source produces d_j, and for j < k the
producer of d_{j+1} is forced to the cloud (otherwise the switch happens in a
later segment). Candidate j runs every earlier segment on the edge, segment j
by its min-cut and every later segment on the cloud. All segment networks are
disjoint apart from s and t, so one max-flow over their union solves all of
them; the source side of its residual graph gives each segment's min-cut.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from splitc.partition.cut_vertices import layout
from splitc.partition.network import (MergedEdges, _cap_at_cut_bound, _max_flow, build_network, download_ms,
                                      exact_networkx_graph, merge_edges)
from splitc.partition.problem import SplitProblem
from splitc.partition.segments import measured_constants, settle_segments

_CERTIFY = 1e-6  # a candidate is re-solved exactly if it could beat the best by this fraction


@dataclass
class SegmentSolution:
    """Every candidate's cost, and the min-cut assignment inside each segment."""

    cut_values: np.ndarray  # (k,) cut-vertex values, in order
    segment: np.ndarray  # (n,) segment of each node, 0..k
    on_cloud: np.ndarray  # (n,) min-cut side of each node within its own segment
    totals: np.ndarray  # (k + 1,) total ms of candidate j (round trip included)

    def assignment(self, j: int) -> np.ndarray:
        """The full assignment of candidate j."""
        return np.where(self.segment < j, False, np.where(self.segment > j, True, self.on_cloud))


def _exact_segment(edges: MergedEdges, vertex_seg: np.ndarray, j: int) -> np.ndarray:
    """Vertices of segment j on the source side of its exact min-cut."""
    seg = np.maximum(vertex_seg[edges.rows], vertex_seg[edges.cols])
    graph = exact_networkx_graph(edges, seg == j)
    _, (reach, _) = nx.minimum_cut(graph, 0, 1)
    side = np.zeros(edges.num_vertices, dtype=bool)
    side[list(reach)] = True
    return side


def solve_segments(problem: SplitProblem, cut_values: np.ndarray) -> SegmentSolution:
    """Solve every segment's min-cut and price every candidate exactly (in float ms).

    The integer max-flow gives each segment a certified lower bound; a segment
    whose bound leaves room to beat the best candidate by more than one part in
    a million is re-solved exactly, so rounding never costs more than that.
    """
    cut_values = np.asarray(cut_values, dtype=np.int64)
    n, k = problem.num_nodes, len(cut_values)
    lay = layout(problem)
    segment = np.searchsorted(lay.value_pos[cut_values], lay.node_pos)
    vertex_seg = np.concatenate([[-1, -1], segment, _value_segments(problem, cut_values, segment)])
    edges = merge_edges(build_network(problem, cut_values))
    side, sent, _ = _max_flow(edges, _cap_at_cut_bound(edges, vertex_seg, k + 1))
    fixed = _Pricing(problem, cut_values, segment)
    on_cloud = ~side[2 : 2 + n]
    totals = fixed.totals(on_cloud)
    lower = fixed.constant + np.bincount(vertex_seg[2:], weights=sent[2:], minlength=k + 1)
    slack = _CERTIFY * max(float(totals.min()), 1e-12)
    for j in np.flatnonzero((lower < totals.min() - slack) & (totals - lower > slack)):
        exact = _exact_segment(edges, vertex_seg, int(j))
        mine = segment == j
        on_cloud[mine] = ~exact[2 : 2 + n][mine]
    if len(on_cloud):
        totals = fixed.totals(on_cloud)
    if problem.edge_prefix_ms is not None or problem.cloud_suffix_ms is not None:
        on_cloud, totals = settle_segments(problem, cut_values, segment, on_cloud, totals, fixed.totals)
    return SegmentSolution(cut_values, segment, on_cloud, totals)


def _value_segments(problem: SplitProblem, cut_values: np.ndarray, segment: np.ndarray) -> np.ndarray:
    """Segment of each value's auxiliary vertex: its producer's, or its consumers' for cut vertices."""
    seg = np.where(problem.producer >= 0, segment[np.maximum(problem.producer, 0)], 0)
    seg[cut_values] = np.arange(1, len(cut_values) + 1)
    return seg


class _Pricing:
    """Candidate totals in float ms: fixed prefix/suffix costs plus each segment's own cost."""

    def __init__(self, problem: SplitProblem, cut_values: np.ndarray, segment: np.ndarray) -> None:
        k = len(cut_values)
        self.problem, self.cut_values, self.segment, self.k = problem, cut_values, segment, k
        self.download = download_ms(problem)
        edge_by_seg = np.bincount(segment, weights=problem.edge_ms, minlength=k + 1)
        cloud_by_seg = np.bincount(segment, weights=problem.cloud_ms + self.download, minlength=k + 1)
        prefix_edge = np.concatenate([[0.0], np.cumsum(edge_by_seg)[:-1]])
        suffix_cloud = np.concatenate([np.cumsum(cloud_by_seg[::-1])[::-1][1:], [0.0]])
        if problem.edge_prefix_ms is not None or problem.cloud_suffix_ms is not None:
            prefix_edge, suffix_cloud = measured_constants(problem, cut_values, segment, self.download)
        crossing = np.ones(k + 1, dtype=bool)
        crossing[k] = False
        self.constant = prefix_edge + suffix_cloud + problem.rtt_ms * crossing

    def totals(self, on_cloud: np.ndarray) -> np.ndarray:
        problem, segment, k = self.problem, self.segment, self.k
        node_cost = np.where(on_cloud, problem.cloud_ms + self.download, problem.edge_ms)
        seg_cost = np.bincount(segment, weights=node_cost, minlength=k + 1)
        seg_cost += _segment_transfers(problem, self.cut_values, segment, on_cloud, k)
        seg_cost[k] += problem.rtt_ms * bool(on_cloud[segment == k].any())
        return self.constant + seg_cost


def _segment_transfers(problem, cut_values, segment, on_cloud, k) -> np.ndarray:
    """Per segment: transfer time of the values sent to the cloud inside it."""
    m = problem.num_values
    seg_of_value = _value_segments(problem, cut_values, segment)
    from_edge = problem.producer < 0
    from_edge[cut_values] = True
    has_prod = problem.producer >= 0
    from_edge[has_prod & ~from_edge] = ~on_cloud[problem.producer[has_prod & ~from_edge]]
    value_of = problem.value_of_consumer_edge()
    read_on_cloud = np.zeros(m, dtype=bool)
    read_on_cloud[value_of[on_cloud[problem.cons_idx]]] = True
    sent = from_edge & read_on_cloud
    return np.bincount(seg_of_value, weights=np.where(sent, problem.transfer_ms, 0.0), minlength=k + 1)
