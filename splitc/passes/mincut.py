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

import math
from dataclasses import dataclass
from fractions import Fraction

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from splitc.passes.cut_vertices import layout
from splitc.passes.problem import SplitProblem

_UNITS = float(2**30)  # finite capacities are scaled to sum to at most this (int32 flows)
_INF = np.int32(2**31 - 1)
_CERTIFY = 1e-6  # a candidate is re-solved exactly if it could beat the best by this fraction


@dataclass
class Network:
    """A flow network as edge arrays; ``inf`` marks uncuttable edges."""

    num_vertices: int
    src: np.ndarray
    dst: np.ndarray
    cap: np.ndarray  # float costs in ms (ignored where inf)
    inf: np.ndarray


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


def download_ms(problem: SplitProblem) -> np.ndarray:
    """Per node: time to send back the graph outputs it makes, if it runs on the cloud."""
    made = problem.is_output & (problem.producer >= 0)
    return np.bincount(problem.producer[made], weights=problem.transfer_ms[made], minlength=problem.num_nodes)


def build_network(problem: SplitProblem, cut_values: np.ndarray, force_cloud: np.ndarray | None = None,
                  force_edge: np.ndarray | None = None) -> Network:
    """The union of all segment networks (one whole-graph network when there are no cut vertices).

    ``force_cloud`` and ``force_edge`` list extra nodes that must run on the cloud or on the edge.
    """
    n, m = problem.num_nodes, problem.num_values
    s, t = 0, 1
    node = 2 + np.arange(n)
    aux = 2 + n + np.arange(m)
    is_cut = np.zeros(m, dtype=bool)
    is_cut[cut_values] = True
    forced = np.zeros(n, dtype=bool)
    forced[problem.producer[cut_values]] = True
    if force_cloud is not None:
        forced[force_cloud] = True
    pinned = np.zeros(n, dtype=bool)
    if force_edge is not None:
        pinned[force_edge] = True

    value_of = problem.value_of_consumer_edge()
    used = np.diff(problem.cons_ptr) > 0
    from_source = (problem.producer < 0) | is_cut
    feeder = np.where(from_source, s, 2 + problem.producer)
    ordered = ~from_source[value_of]

    parts = [
        (np.full(n, s), node, problem.cloud_ms + download_ms(problem), pinned),
        (node, np.full(n, t), problem.edge_ms, forced),
        (feeder[used], aux[used], problem.transfer_ms[used], np.zeros(int(used.sum()), bool)),
        (aux[value_of], node[problem.cons_idx], np.zeros(len(value_of)), np.ones(len(value_of), bool)),
        (node[problem.cons_idx[ordered]], feeder[value_of[ordered]], np.zeros(int(ordered.sum())),
         np.ones(int(ordered.sum()), bool)),
    ]
    src, dst, cap, inf = (np.concatenate(column) for column in zip(*parts))
    return Network(2 + n + m, src.astype(np.int64), dst.astype(np.int64), cap.astype(np.float64), inf)


@dataclass
class MergedEdges:
    """Parallel edges merged: finite capacities summed, an infinite edge absorbs the rest."""

    num_vertices: int
    rows: np.ndarray
    cols: np.ndarray
    finite: np.ndarray
    infinite: np.ndarray


def merge_edges(net: Network) -> MergedEdges:
    if not np.all(np.isfinite(net.cap[~net.inf])):
        raise ValueError("node and transfer costs must be finite numbers")
    key = net.src * net.num_vertices + net.dst
    unique, inverse = np.unique(key, return_inverse=True)
    finite = np.bincount(inverse, weights=np.where(net.inf, 0.0, net.cap), minlength=len(unique))
    infinite = np.bincount(inverse, weights=net.inf.astype(np.float64), minlength=len(unique)) > 0
    rows, cols = np.divmod(unique, net.num_vertices)
    return MergedEdges(net.num_vertices, rows, cols, np.where(infinite, 0.0, finite), infinite)


def _cap_at_cut_bound(edges: MergedEdges, vertex_seg: np.ndarray, num_seg: int) -> np.ndarray:
    """Shrink capacities no min-cut can use, so one huge cost cannot drown the small ones.

    Running a whole segment on the cloud is always a valid cut, and so is running
    it on the edge when nothing is forced to the cloud; a capacity above twice the
    cheaper of the two is never cut.
    """
    seg = np.maximum(vertex_seg[edges.rows], vertex_seg[edges.cols])
    finite = ~edges.infinite
    from_s = finite & (edges.rows == 0)
    into_t = edges.cols == 1
    out_s = np.bincount(seg[from_s], weights=edges.finite[from_s], minlength=num_seg)
    in_t = np.bincount(seg[into_t & finite], weights=edges.finite[into_t & finite], minlength=num_seg)
    forced = np.bincount(seg[into_t & edges.infinite], minlength=num_seg) > 0
    bound = np.where(forced, out_s, np.minimum(out_s, in_t))[seg]
    return np.where(bound > 0, np.minimum(edges.finite, 2.0 * bound), edges.finite)


def _max_flow(edges: MergedEdges, capped: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Source side of a min-cut and the flow leaving s per vertex, on int32 capacities.

    Capacities are scaled to sum to at most 2**30 and rounded *down*, so the flow
    found is feasible in the real network: flow / scale is a certified lower bound.
    """
    total = float(capped[~edges.infinite].sum())
    whole = np.all(capped == np.floor(capped)) and total <= _UNITS
    scale = 1.0 if whole or total == 0 else _UNITS / total
    if not np.isfinite(scale):
        scale = 1.0  # costs below 1e-300 ms: all round to zero and the exact re-solve decides
    caps = np.where(edges.infinite, _INF, np.floor(capped * scale)).astype(np.int32)
    size = (edges.num_vertices, edges.num_vertices)
    capacity = sp.csr_matrix((caps, (edges.rows, edges.cols)), shape=size)
    flow = maximum_flow(capacity, 0, 1).flow
    residual = (capacity - flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, 0, directed=True, return_predecessors=False)
    side = np.zeros(edges.num_vertices, dtype=bool)
    side[reached] = True
    out_of_s = flow.getrow(0).tocoo()
    sent = np.zeros(edges.num_vertices)
    sent[out_of_s.col] = np.maximum(out_of_s.data, 0) / scale
    return side, sent, scale


def source_side(net: Network) -> np.ndarray:
    """Vertices on the source side of a minimum s-t cut of a whole network (s = 0, t = 1)."""
    edges = merge_edges(net)
    vertex_seg = np.zeros(net.num_vertices, dtype=np.int64)
    side, _, _ = _max_flow(edges, _cap_at_cut_bound(edges, vertex_seg, 1))
    return side


def exact_networkx_graph(edges: MergedEdges, keep: np.ndarray | None = None) -> nx.DiGraph:
    """The network as an ``nx.DiGraph`` with exact integer capacities.

    Every float capacity is multiplied by one power of two that makes all of
    them whole, so networkx's min-cut is exact. Infinite edges carry no
    capacity. ``keep`` selects a subset of the edges.
    """
    keep = np.ones(len(edges.rows), dtype=bool) if keep is None else keep
    caps = [float(c) for c in edges.finite[keep & ~edges.infinite]]
    exponent = max([0] + [53 - math.frexp(c)[1] for c in caps if c > 0])
    graph = nx.DiGraph(scale=2**exponent)
    graph.add_nodes_from([0, 1])
    finite = keep & ~edges.infinite
    graph.add_edges_from(
        (int(u), int(v), {"capacity": int(Fraction(c) * 2**exponent)})
        for u, v, c in zip(edges.rows[finite], edges.cols[finite], caps)
    )
    graph.add_edges_from((int(u), int(v)) for u, v in zip(edges.rows[keep & edges.infinite], edges.cols[keep & edges.infinite]))
    return graph


def _exact_segment(edges: MergedEdges, vertex_seg: np.ndarray, j: int) -> np.ndarray:
    """Vertices of segment j on the source side of its exact min-cut."""
    seg = np.maximum(vertex_seg[edges.rows], vertex_seg[edges.cols])
    graph = exact_networkx_graph(edges, seg == j)
    _, (reach, _) = nx.minimum_cut(graph, 0, 1)
    side = np.zeros(edges.num_vertices, dtype=bool)
    side[list(reach)] = True
    return side


def pinned_cuts(problem: SplitProblem, cut_values: np.ndarray, force_cloud: np.ndarray,
                force_edge: np.ndarray) -> np.ndarray:
    """``on_cloud`` of every segment's min-cut with extra nodes pinned to the cloud or the edge.

    One integer max-flow without the capacity capping of ``solve_segments``
    (pins can make every whole-segment cut invalid): exact for whole-number
    costs, otherwise to within the rounding of 2**-30 of the total capacity.
    """
    edges = merge_edges(build_network(problem, cut_values, force_cloud, force_edge))
    side, _, _ = _max_flow(edges, edges.finite)
    return ~side[2 : 2 + problem.num_nodes]


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
        from splitc.profiling.segments import settle_segments

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
            from splitc.profiling.segments import measured_constants

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
