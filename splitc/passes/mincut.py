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

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from splitc.passes.cut_vertices import layout
from splitc.passes.problem import SplitProblem

_UNITS = float(2**30)  # finite capacities are scaled to sum to at most this
_INF = np.int32(2**31 - 1)


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


def build_network(problem: SplitProblem, cut_values: np.ndarray) -> Network:
    """The union of all segment networks (one whole-graph network when there are no cut vertices)."""
    n, m = problem.num_nodes, problem.num_values
    s, t = 0, 1
    node = 2 + np.arange(n)
    aux = 2 + n + np.arange(m)
    is_cut = np.zeros(m, dtype=bool)
    is_cut[cut_values] = True
    forced = np.zeros(n, dtype=bool)
    forced[problem.producer[cut_values]] = True

    value_of = problem.value_of_consumer_edge()
    used = np.diff(problem.cons_ptr) > 0
    from_source = (problem.producer < 0) | is_cut
    feeder = np.where(from_source, s, 2 + problem.producer)
    ordered = ~from_source[value_of]

    parts = [
        (np.full(n, s), node, problem.cloud_ms + download_ms(problem), np.zeros(n, bool)),
        (node, np.full(n, t), problem.edge_ms, forced),
        (feeder[used], aux[used], problem.transfer_ms[used], np.zeros(int(used.sum()), bool)),
        (aux[value_of], node[problem.cons_idx], np.zeros(len(value_of)), np.ones(len(value_of), bool)),
        (node[problem.cons_idx[ordered]], feeder[value_of[ordered]], np.zeros(int(ordered.sum())),
         np.ones(int(ordered.sum()), bool)),
    ]
    src, dst, cap, inf = (np.concatenate(column) for column in zip(*parts))
    return Network(2 + n + m, src.astype(np.int64), dst.astype(np.int64), cap.astype(np.float64), inf)


def _integer_capacities(net: Network) -> sp.csr_matrix:
    """Merge parallel edges and scale finite capacities to int32 (exactly, when they are whole)."""
    key = net.src * net.num_vertices + net.dst
    unique, inverse = np.unique(key, return_inverse=True)
    finite = np.bincount(inverse, weights=np.where(net.inf, 0.0, net.cap), minlength=len(unique))
    infinite = np.bincount(inverse, weights=net.inf.astype(np.float64), minlength=len(unique)) > 0
    total = float(finite[~infinite].sum())
    whole = np.all(finite == np.round(finite)) and total <= _UNITS
    scale = 1.0 if whole or total == 0 else _UNITS / total
    caps = np.where(infinite, _INF, np.rint(finite * scale)).astype(np.int32)
    rows, cols = np.divmod(unique, net.num_vertices)
    return sp.csr_matrix((caps, (rows, cols)), shape=(net.num_vertices, net.num_vertices))


def source_side(net: Network) -> np.ndarray:
    """Vertices on the source side of a minimum s-t cut (s = 0, t = 1)."""
    capacity = _integer_capacities(net)
    flow = maximum_flow(capacity, 0, 1).flow
    residual = (capacity - flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, 0, directed=True, return_predecessors=False)
    side = np.zeros(net.num_vertices, dtype=bool)
    side[reached] = True
    return side


def solve_segments(problem: SplitProblem, cut_values: np.ndarray) -> SegmentSolution:
    """Solve every segment's min-cut and price every candidate exactly (in float ms)."""
    cut_values = np.asarray(cut_values, dtype=np.int64)
    n, k = problem.num_nodes, len(cut_values)
    lay = layout(problem)
    segment = np.searchsorted(lay.value_pos[cut_values], lay.node_pos)
    side = source_side(build_network(problem, cut_values))
    on_cloud = ~side[2 : 2 + n]

    download = download_ms(problem)
    node_cost = np.where(on_cloud, problem.cloud_ms + download, problem.edge_ms)
    seg_cost = np.bincount(segment, weights=node_cost, minlength=k + 1)
    seg_cost += _segment_transfers(problem, cut_values, segment, on_cloud, k)

    edge_by_seg = np.bincount(segment, weights=problem.edge_ms, minlength=k + 1)
    cloud_by_seg = np.bincount(segment, weights=problem.cloud_ms + download, minlength=k + 1)
    prefix_edge = np.concatenate([[0.0], np.cumsum(edge_by_seg)[:-1]])
    suffix_cloud = np.concatenate([np.cumsum(cloud_by_seg[::-1])[::-1][1:], [0.0]])
    last_has_cloud = bool(on_cloud[segment == k].any())
    crossing = np.ones(k + 1, dtype=bool)
    crossing[k] = last_has_cloud
    totals = prefix_edge + seg_cost + suffix_cloud + problem.rtt_ms * crossing
    return SegmentSolution(cut_values, segment, on_cloud, totals)


def _segment_transfers(problem, cut_values, segment, on_cloud, k) -> np.ndarray:
    """Per segment: transfer time of the values sent to the cloud inside it."""
    m = problem.num_values
    seg_of_value = np.where(problem.producer >= 0, segment[np.maximum(problem.producer, 0)], 0)
    seg_of_value[cut_values] = np.arange(1, k + 1)
    from_edge = problem.producer < 0
    from_edge[cut_values] = True
    has_prod = problem.producer >= 0
    from_edge[has_prod & ~from_edge] = ~on_cloud[problem.producer[has_prod & ~from_edge]]
    value_of = problem.value_of_consumer_edge()
    read_on_cloud = np.zeros(m, dtype=bool)
    read_on_cloud[value_of[on_cloud[problem.cons_idx]]] = True
    sent = from_edge & read_on_cloud
    return np.bincount(seg_of_value, weights=problem.transfer_ms * sent, minlength=k + 1)
