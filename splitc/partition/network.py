"""The flow network of the edge/cloud split, its integer max-flow and the exact networkx re-solve.

See :mod:`splitc.partition.mincut` for the construction; :func:`pinned_cuts`
solves it with extra nodes pinned to a side (segment-aware pricing uses it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from splitc.partition.problem import SplitProblem

_UNITS = float(2**30)  # finite capacities are scaled to sum to at most this (int32 flows)
_INF = np.int32(2**31 - 1)


@dataclass
class Network:
    """A flow network as edge arrays; ``inf`` marks uncuttable edges."""

    num_vertices: int
    src: np.ndarray
    dst: np.ndarray
    cap: np.ndarray  # float costs in ms (ignored where inf)
    inf: np.ndarray


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
