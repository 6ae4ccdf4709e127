"""Exact K-tier (device < edge < cloud) partition of a DAG as one s-t min-cut.

Problem
-------
Every data node v gets a tier t(v) in {0 .. K-1} (0 = device, K-1 = cloud).
Data flows only up the tiers: t(u) <= t(v) whenever v reads a tensor u makes.
Link k (1 <= k < K) joins tier k-1 and tier k. The cost of an assignment is

* compute: sum_v node_ms[t(v), v];
* uploads: a tensor x made at tier p(x) (graph inputs: p = 0) and read at the
  highest tier h(x) crosses links p+1 .. h, each once, whatever the number of
  readers; a tensor that skips a tier is relayed through it (paid on both
  links, computed by neither relay);
* downloads (DeePar eq. 6): a graph output made at tier p comes back down
  links p, p-1, .., 1;
* the round trip rtt_k of link k, once, if anything crosses link k.

Construction (Ishikawa's layered graph)
---------------------------------------
Each node v gets K-1 copies (v, 1) .. (v, K-1); (v, k) is on the sink side T
exactly when t(v) >= k. With (v, K) = s and (v, 0) = t, the chain
``(v, k+1) -> (v, k)`` has capacity node_ms[k, v] (plus the downloads of the
outputs v makes over links 1..k); an assignment with t(v) = tau cuts exactly
the chain edge ``(v, tau+1) -> (v, tau)``. Infinite edges ``(v, k) -> (v, k+1)``
forbid non-monotone label sets (so every finite cut is one assignment), and
infinite edges ``(c, k) -> (p, k)`` for every data edge p -> c keep
t(p) <= t(c). Per tensor x and link k an auxiliary vertex a(x, k) has
``feeder -> a(x, k)`` with the transfer time of x over link k (feeder: (p, k),
or s for graph inputs) and ``a(x, k) -> (c, k)`` infinite for every reader c:
if any reader is at tier >= k and the producer below k, the cut pays the
transfer once (fan-out is paid once per link). The round trip is one more
auxiliary vertex r_k per link: ``s -> r_k`` costs rtt_k and ``r_k -> (v, k)``
is infinite for every node. In a graph without dead code, link k carries
something exactly when some node runs at tier >= k (the node's outputs lead to
a graph output, which is made at tier >= k and comes back down across link k),
so the cut pays rtt_k exactly when the link is used. The minimum cut is
therefore the exact optimum, RTT included, in one max-flow: no enumeration
of which links are used.

A node may be barred from a tier by an infinite cost (the chain edge becomes
uncuttable); tensors marked ``pinned`` may not cross any link.

Round-off
---------
As in :mod:`splitc.partition.mincut`: capacities above twice the cost of the
cheapest single-tier assignment are capped (no minimum cut uses them), scaled
to sum to at most 2**30 and floored to int32 for SciPy's max-flow. The flow
is feasible in the real network, so flow / scale is a certified lower bound;
the cut's assignment is priced in float. If the gap exceeds one part in a
million, the network is re-solved exactly with networkx on capacities made
whole by a power of two. See docs/three-tier.md.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass
from fractions import Fraction

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from splitc.partition.problem import dead_nodes
from splitc.partition.tier_problem import (DEFAULT_TIERS, Link, TierBreakdown, TierProblem, TierResult,  # noqa: F401
                                           _value_tiers, evaluate_tiers, is_monotone)

__all__ = ["Link", "TierProblem", "TierBreakdown", "TierResult", "solve_tiers", "evaluate_tiers",
           "deepar_chain", "build_tier_network", "is_monotone", "DEFAULT_TIERS"]

_UNITS = float(2**30)
_INF = np.int32(2**30)  # > every finite cut after scaling (those stay <= 2**29)
_CERTIFY = 1e-6


@dataclass
class TierNetwork:
    num_vertices: int
    rows: np.ndarray
    cols: np.ndarray
    cap: np.ndarray  # float ms (0 where infinite)
    inf: np.ndarray
    constant: float = 0.0  # added to every cut: the cheapest tier of every node


def _download_ms(problem: TierProblem) -> np.ndarray:
    """(K, n): time to bring back the outputs node v makes when it runs at tier k (links k .. 1)."""
    K, n = problem.num_tiers, problem.num_nodes
    made = problem.is_output & (problem.producer >= 0)
    down = np.zeros((K, n))
    for k in range(1, K):
        down[k] = down[k - 1] + np.bincount(problem.producer[made], weights=problem.transfer_ms(k)[made],
                                            minlength=n)
    return down


def build_tier_network(problem: TierProblem) -> TierNetwork:
    """The layered flow network (s = 0, t = 1; copies (v, k) at 2 + (k-1) n + v)."""
    K, n, m = problem.num_tiers, problem.num_nodes, problem.num_values
    L = K - 1
    s, t = 0, 1

    def copy(v, k):
        return 2 + (k - 1) * n + v

    aux0 = 2 + L * n
    rtt0 = aux0 + L * m
    unary = problem.node_ms + _download_ms(problem)
    # exactly one chain edge of each node is cut: subtracting each node's cheapest tier changes every cut
    # by the same constant (``network.constant``) and leaves the cheapest chain edge at 0, free of round-off
    low = np.min(unary, axis=0, initial=np.inf, where=np.isfinite(unary))
    low = np.where(np.isfinite(low), low, 0.0)
    unary = unary - low
    value_of = problem.value_of_consumer_edge()
    has_prod = problem.producer[value_of] >= 0
    used = np.diff(problem.cons_ptr) > 0
    pinned = problem.pinned if problem.pinned is not None else np.zeros(m, bool)
    nodes = np.arange(n)
    parts = []

    def add(src, dst, cap, inf):
        src = np.asarray(src, dtype=np.int64)
        parts.append((src, np.broadcast_to(np.asarray(dst, dtype=np.int64), src.shape),
                      np.broadcast_to(np.asarray(cap, dtype=np.float64), src.shape),
                      np.broadcast_to(np.asarray(inf, dtype=bool), src.shape)))

    for k in range(K):  # chain edge (v, k+1) -> (v, k) costs tier k
        src = np.full(n, s) if k == L else copy(nodes, k + 1)
        dst = np.full(n, t) if k == 0 else copy(nodes, k)
        barred = np.isinf(unary[k])
        add(src, dst, np.where(barred, 0.0, unary[k]), barred)
    for k in range(1, L):  # monotone labels
        add(copy(nodes, k), copy(nodes, k + 1), 0.0, True)
    for k in range(1, K):
        prod = problem.producer[value_of[has_prod]]
        add(copy(problem.cons_idx[has_prod], k), copy(prod, k), 0.0, True)  # t(producer) <= t(consumer)
        feeder = np.where(problem.producer >= 0, copy(problem.producer, k), s)
        wire = problem.transfer_ms(k)
        aux = aux0 + (k - 1) * m + np.arange(m)
        barred = pinned | np.isinf(wire)
        add(feeder[used], aux[used], np.where(barred, 0.0, wire)[used], barred[used])
        add(aux[value_of], copy(problem.cons_idx, k), 0.0, True)
        rtt = problem.links[k - 1].rtt_ms
        if rtt > 0 and n:
            add([s], [rtt0 + k - 1], rtt, False)
            add(np.full(n, rtt0 + k - 1), copy(nodes, k), 0.0, True)
    src, dst, cap, inf = (np.concatenate(c) if parts else np.zeros(0) for c in zip(*parts))
    N = rtt0 + L
    key = src * N + dst
    unique, inverse = np.unique(key, return_inverse=True)
    finite = np.bincount(inverse, weights=np.where(inf, 0.0, cap), minlength=len(unique))
    infinite = np.bincount(inverse, weights=inf.astype(np.float64), minlength=len(unique)) > 0
    rows, cols = np.divmod(unique, N)
    return TierNetwork(N, rows, cols, np.where(infinite, 0.0, finite), infinite, float(low.sum()))


def _tiers_from_side(problem: TierProblem, side: np.ndarray) -> np.ndarray:
    n, L = problem.num_nodes, problem.num_tiers - 1
    sink = ~side[2 : 2 + L * n].reshape(L, n)
    return sink.sum(axis=0).astype(np.int64)


def _scipy_cut(net: TierNetwork, cap: np.ndarray, bound: float | None) -> tuple[np.ndarray, float]:
    """Source side of a min-cut of the int32-floored network, and the certified lower bound flow / scale.

    ``bound`` is the value of some finite cut: scaled to 2**29, every capacity (capped at twice it) stays
    below 2**30 = the stand-in for infinity, and no residual sum overflows int32.
    """
    finite = cap[~net.inf]
    reference = bound if bound is not None and bound > 0 else float(finite.sum())
    whole = bool(np.all(finite == np.floor(finite))) and reference <= _UNITS / 2
    scale = 1.0 if whole or reference == 0 else (_UNITS / 2) / reference
    if not np.isfinite(scale):
        scale = 1.0
    caps = np.where(net.inf, _INF, np.minimum(np.floor(cap * scale), _INF - 1)).astype(np.int32)
    size = (net.num_vertices, net.num_vertices)
    capacity = sp.csr_matrix((caps, (net.rows, net.cols)), shape=size)
    result = maximum_flow(capacity, 0, 1)
    residual = (capacity - result.flow).tocsr()
    residual.data[residual.data < 0] = 0
    residual.eliminate_zeros()
    side = np.zeros(net.num_vertices, dtype=bool)
    side[breadth_first_order(residual, 0, directed=True, return_predecessors=False)] = True
    return side, float(result.flow_value) / scale


def networkx_graph(net: TierNetwork) -> nx.DiGraph:
    """The network with exact whole-number capacities (a power-of-two scale); infinite edges uncapacitated."""
    fin = ~net.inf
    caps = [float(c) for c in net.cap[fin]]
    exponent = max([0] + [53 - math.frexp(c)[1] for c in caps if c > 0])
    graph = nx.DiGraph(scale=2**exponent)
    graph.add_nodes_from(range(net.num_vertices))
    graph.add_edges_from((int(u), int(v), {"capacity": int(Fraction(c) * 2**exponent)})
                         for u, v, c in zip(net.rows[fin], net.cols[fin], caps))
    graph.add_edges_from((int(u), int(v)) for u, v in zip(net.rows[net.inf], net.cols[net.inf]))
    return graph


def _exact_cut(net: TierNetwork) -> np.ndarray:
    graph = networkx_graph(net)
    _, (reach, _) = nx.minimum_cut(graph, 0, 1)
    side = np.zeros(net.num_vertices, dtype=bool)
    side[list(reach)] = True
    return side


def solve_tiers(problem: TierProblem, check_dead: bool = True) -> TierResult:
    """The exact minimum over every monotone assignment (see the module docstring)."""
    start = time.perf_counter()
    K, n = problem.num_tiers, problem.num_nodes
    if check_dead and n:
        dead = dead_nodes(problem.as_split())
        if len(dead):
            names = problem.node_names or [str(i) for i in range(n)]
            raise ValueError(f"node {names[dead[0]]!r} reaches no graph output; run dead-code elimination first")
    if n == 0:
        tier = np.zeros(0, dtype=np.int64)
        b = evaluate_tiers(problem, tier)
        return TierResult(problem, tier, b, b.total_ms, False, (time.perf_counter() - start) * 1e3)
    # cheapest single-tier assignment that is allowed: a valid cut, so it bounds the minimum cut
    uniform = [evaluate_tiers(problem, np.full(n, k)) for k in range(K)]
    bound = min(b.total_ms for b in uniform)
    if not np.isfinite(bound):
        bound = None
    net = build_tier_network(problem)
    if bound is not None:
        bound = max(bound - net.constant, 0.0)
    cap = net.cap if bound is None or bound <= 0 else np.minimum(net.cap, 2.0 * bound)
    side, lower = _scipy_cut(net, cap, bound)
    lower += net.constant
    tier = _tiers_from_side(problem, side)
    best = evaluate_tiers(problem, tier)
    exact = False
    if not np.isfinite(best.total_ms) or best.total_ms - lower > _CERTIFY * max(best.total_ms, 1e-12):
        try:
            tier = _tiers_from_side(problem, _exact_cut(net))
        except nx.NetworkXUnbounded:
            raise ValueError("no assignment has a finite cost (every tier barred for some node, or a pinned "
                             "tensor must cross)") from None
        best, exact = evaluate_tiers(problem, tier), True
        lower = min(lower, best.total_ms)
    for b in uniform:  # ties and rounding: never worse than a single tier
        if b.total_ms < best.total_ms:
            best, tier = b, b.tier
    if not np.isfinite(best.total_ms):
        raise ValueError("no assignment has a finite cost (every tier barred for some node, or a pinned "
                         "tensor must cross)")
    return TierResult(problem, tier, best, min(lower, best.total_ms), exact, (time.perf_counter() - start) * 1e3)


def deepar_chain(problem: TierProblem, order: np.ndarray | None = None) -> tuple[float, np.ndarray]:
    """DeePar's exhaustive (c1, c2) search: the first c1 nodes (in ``order``, default topological)
    on tier 0, the next c2 - c1 on tier 1, the rest on tier 2. Three tiers only. Prices each candidate
    with :func:`evaluate_tiers`; returns (best total ms, tiers)."""
    if problem.num_tiers != 3:
        raise ValueError("DeePar's search is for three tiers")
    n = problem.num_nodes
    order = np.arange(n) if order is None else np.asarray(order)
    best, best_tier = np.inf, np.zeros(n, dtype=np.int64)
    for c1, c2 in itertools.combinations_with_replacement(range(n + 1), 2):
        tier = np.empty(n, dtype=np.int64)
        tier[order[:c1]], tier[order[c1:c2]], tier[order[c2:]] = 0, 1, 2
        if not is_monotone(problem, tier):
            continue
        total = evaluate_tiers(problem, tier).total_ms
        if total < best:
            best, best_tier = total, tier
    return best, best_tier
