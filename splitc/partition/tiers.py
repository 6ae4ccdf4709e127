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
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

import networkx as nx
import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from splitc.partition.problem import SplitProblem, dead_nodes

__all__ = ["Link", "TierProblem", "TierBreakdown", "TierResult", "solve_tiers", "evaluate_tiers",
           "deepar_chain", "build_tier_network", "DEFAULT_TIERS"]

DEFAULT_TIERS = ("device", "edge", "cloud")
_UNITS = float(2**30)
_INF = np.int32(2**30)  # > every finite cut after scaling (those stay <= 2**29)
_CERTIFY = 1e-6


@dataclass(frozen=True)
class Link:
    """One link between adjacent tiers: bandwidth in bytes/s (``inf``: free) and round trip in ms."""

    bandwidth: float
    rtt_ms: float = 0.0

    def transfer_ms(self, nbytes: np.ndarray) -> np.ndarray:
        nbytes = np.asarray(nbytes, dtype=np.float64)
        if math.isinf(self.bandwidth):
            return np.zeros_like(nbytes)
        return nbytes / self.bandwidth * 1e3


@dataclass
class TierProblem:
    """The K-tier problem as arrays (the value/consumer layout of :class:`SplitProblem`)."""

    node_ms: np.ndarray  # (K, n) latency of each node on each tier; inf = not allowed there
    producer: np.ndarray  # (m,) producing node, -1 for graph inputs (made on the device)
    nbytes: np.ndarray  # (m,)
    is_output: np.ndarray  # (m,)
    cons_ptr: np.ndarray  # (m + 1,)
    cons_idx: np.ndarray
    links: list[Link]  # K - 1 links, link k joins tier k-1 and tier k
    tier_names: list[str] = field(default_factory=lambda: list(DEFAULT_TIERS))
    node_names: list[str] | None = None
    value_names: list[str] | None = None
    pinned: np.ndarray | None = None  # (m,) values that may not cross any link

    def __post_init__(self) -> None:
        self.node_ms = np.atleast_2d(np.asarray(self.node_ms, dtype=np.float64))
        if len(self.links) != self.num_tiers - 1:
            raise ValueError(f"{self.num_tiers} tiers need {self.num_tiers - 1} links, got {len(self.links)}")
        if len(self.tier_names) != self.num_tiers:
            self.tier_names = [f"tier{k}" for k in range(self.num_tiers)]
        if np.any(np.isnan(self.node_ms)) or np.any(self.node_ms < 0):
            raise ValueError("node costs must be non-negative numbers (inf bars a tier)")
        for k, link in enumerate(self.links, 1):
            if not (link.bandwidth > 0) or not (link.rtt_ms >= 0) or math.isinf(link.rtt_ms):
                raise ValueError(f"link {k}: bandwidth must be > 0 and rtt_ms finite and >= 0")

    @property
    def num_tiers(self) -> int:
        return self.node_ms.shape[0]

    @property
    def num_nodes(self) -> int:
        return self.node_ms.shape[1]

    @property
    def num_values(self) -> int:
        return len(self.producer)

    def value_of_consumer_edge(self) -> np.ndarray:
        return np.repeat(np.arange(self.num_values), np.diff(self.cons_ptr))

    def transfer_ms(self, k: int) -> np.ndarray:
        """(m,) time of each value alone on link k (1-based), without the round trip."""
        return self.links[k - 1].transfer_ms(self.nbytes)

    def as_split(self) -> SplitProblem:
        """The value layout as a two-tier problem (device vs. the top tier, over link 1)."""
        return SplitProblem(edge_ms=self.node_ms[0], cloud_ms=self.node_ms[-1], producer=self.producer,
                            nbytes=self.nbytes, is_output=self.is_output, cons_ptr=self.cons_ptr,
                            cons_idx=self.cons_idx, bandwidth=1.0, node_names=self.node_names,
                            value_names=self.value_names)

    def restricted(self, allowed: Sequence[int]) -> "TierProblem":
        """The same problem with every node barred from the tiers not in ``allowed`` (relaying still allowed)."""
        node_ms = np.full_like(self.node_ms, np.inf)
        node_ms[list(allowed)] = self.node_ms[list(allowed)]
        return TierProblem(**{**self.__dict__, "node_ms": node_ms})

    def with_links(self, links: Sequence[Link]) -> "TierProblem":
        return TierProblem(**{**self.__dict__, "links": list(links)})

    @classmethod
    def from_split(cls, problem: SplitProblem, edge_ms: np.ndarray, device_edge: Link,
                   edge_cloud: Link | None = None, tier_names: Sequence[str] = DEFAULT_TIERS) -> "TierProblem":
        """Three tiers from a two-tier problem: its edge costs become the device's, its cloud costs the
        cloud's, ``edge_ms`` the middle tier's; ``edge_cloud`` defaults to the problem's own link."""
        if edge_cloud is None:
            edge_cloud = Link(problem.bandwidth, problem.rtt_ms)
        edge_ms = np.asarray(edge_ms, dtype=np.float64)
        if edge_ms.shape != problem.edge_ms.shape:
            raise ValueError(f"edge-tier costs have shape {edge_ms.shape}, the problem has {problem.num_nodes} nodes")
        return cls(node_ms=np.vstack([problem.edge_ms, edge_ms, problem.cloud_ms]), producer=problem.producer,
                   nbytes=problem.nbytes, is_output=problem.is_output, cons_ptr=problem.cons_ptr,
                   cons_idx=problem.cons_idx, links=[device_edge, edge_cloud], tier_names=list(tier_names),
                   node_names=problem.node_names, value_names=problem.value_names,
                   pinned=problem.pinned)

    @classmethod
    def from_graph(cls, graph, tier_costs: Sequence, links: Sequence[Link],
                   tier_names: Sequence[str] = DEFAULT_TIERS) -> "TierProblem":
        """From an IR graph (dead code removed) and one cost vector, :class:`CostTable` or target per tier.

        A ``CostTable`` contributes its ``edge_ms``; a string or cost model is
        resolved with :func:`splitc.cost.model.cost_model_for`.
        """
        from splitc.cost.model import CostTable, annotate_costs
        from splitc.cost.resolve import cost_model_for
        from splitc.partition.problem import problem_from_graph

        vectors = []
        for spec in tier_costs:
            if isinstance(spec, CostTable):
                vectors.append(np.asarray(spec.edge_ms, dtype=np.float64))
            elif isinstance(spec, np.ndarray) or isinstance(spec, (list, tuple)):
                vectors.append(np.asarray(spec, dtype=np.float64))
            else:
                model = cost_model_for(spec)
                vectors.append(annotate_costs(graph, model, model).edge_ms)
        table = CostTable([n.name for n in graph.data_nodes], vectors[0], vectors[-1])
        base = problem_from_graph(graph, table, 1.0, 0.0)
        return cls(node_ms=np.vstack(vectors), producer=base.producer, nbytes=base.nbytes,
                   is_output=base.is_output, cons_ptr=base.cons_ptr, cons_idx=base.cons_idx, links=list(links),
                   tier_names=list(tier_names), node_names=base.node_names, value_names=base.value_names,
                   pinned=base.pinned)


@dataclass
class TierBreakdown:
    """The latency of one assignment, by tier and by link."""

    tier: np.ndarray  # (n,)
    compute_ms: np.ndarray  # (K,)
    transfer_ms: np.ndarray  # (K-1,) per link: round trip (if used) + bytes up and down
    up_values: list[np.ndarray]  # per link: values sent up it
    down_values: list[np.ndarray]  # per link: graph outputs sent down it
    up_bytes: np.ndarray  # (K-1,)
    down_bytes: np.ndarray  # (K-1,)
    used: np.ndarray  # (K-1,) link carries anything

    @property
    def total_ms(self) -> float:
        return float(self.compute_ms.sum() + self.transfer_ms.sum())


def _value_tiers(problem: TierProblem, tier: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(producer tier, highest reader tier; -1 without readers) of every value."""
    has_prod = problem.producer >= 0
    made = np.zeros(problem.num_values, dtype=np.int64)
    made[has_prod] = tier[problem.producer[has_prod]]
    read = np.full(problem.num_values, -1, dtype=np.int64)
    np.maximum.at(read, problem.value_of_consumer_edge(), tier[problem.cons_idx])
    return made, read


def is_monotone(problem: TierProblem, tier: np.ndarray) -> bool:
    value = problem.value_of_consumer_edge()
    prod = problem.producer[value]
    ok = prod >= 0
    return bool(np.all(tier[prod[ok]] <= tier[problem.cons_idx[ok]]))


def evaluate_tiers(problem: TierProblem, tier: np.ndarray) -> TierBreakdown:
    """Price an assignment (``tier[v]`` per node) by the rules in the module docstring."""
    tier = np.asarray(tier, dtype=np.int64)
    K = problem.num_tiers
    made, read = _value_tiers(problem, tier)
    compute = np.array([problem.node_ms[k, tier == k].sum() for k in range(K)], dtype=np.float64)
    transfer = np.zeros(K - 1)
    ups, downs, ub, db, used = [], [], np.zeros(K - 1, np.int64), np.zeros(K - 1, np.int64), np.zeros(K - 1, bool)
    out_made = problem.is_output & (problem.producer >= 0)
    for k in range(1, K):
        up = np.flatnonzero((made < k) & (read >= k))
        down = np.flatnonzero(out_made & (made >= k))
        wire = problem.transfer_ms(k)
        used[k - 1] = len(up) + len(down) > 0
        t = problem.links[k - 1].rtt_ms * used[k - 1] + wire[up].sum() + wire[down].sum()
        if problem.pinned is not None and problem.pinned[up].any():
            t = np.inf
        transfer[k - 1] = t
        ups.append(up)
        downs.append(down)
        ub[k - 1], db[k - 1] = problem.nbytes[up].sum(), problem.nbytes[down].sum()
    return TierBreakdown(tier, compute, transfer, ups, downs, ub, db, used)


@dataclass
class TierResult:
    """The optimum assignment and its price."""

    problem: TierProblem = field(repr=False)
    tier: np.ndarray
    breakdown: TierBreakdown = field(repr=False)
    lower_bound_ms: float  # certified: no assignment is cheaper than this
    exact_resolve: bool  # the float network was re-solved exactly (round-off could have mattered)
    solve_ms: float = 0.0

    @property
    def total_ms(self) -> float:
        return self.breakdown.total_ms

    def nodes_on(self, k: int) -> list[str]:
        names = self.problem.node_names or [str(i) for i in range(self.problem.num_nodes)]
        return [names[i] for i in np.flatnonzero(self.tier == k)]

    def to_dict(self) -> dict:
        p, b = self.problem, self.breakdown
        values = p.value_names or [str(i) for i in range(p.num_values)]
        return {
            "total_ms": self.total_ms,
            "tiers": {name: {"nodes": self.nodes_on(k), "compute_ms": float(b.compute_ms[k])}
                      for k, name in enumerate(p.tier_names)},
            "links": [{"from": p.tier_names[k - 1], "to": p.tier_names[k], "used": bool(b.used[k - 1]),
                       "transfer_ms": float(b.transfer_ms[k - 1]), "up": [values[i] for i in b.up_values[k - 1]],
                       "down": [values[i] for i in b.down_values[k - 1]], "up_bytes": int(b.up_bytes[k - 1]),
                       "down_bytes": int(b.down_bytes[k - 1])} for k in range(1, p.num_tiers)],
        }


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
