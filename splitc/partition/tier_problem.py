"""The K-tier problem: links, per-tier node costs, assignments and their exact price.

``TierProblem`` holds what an assignment of every data node to a tier (0 = device .. K-1 = cloud) costs;
``evaluate_tiers`` prices one assignment (compute, uploads paid once per link, downloads of the outputs,
round trips of the links used) and is the reference the min-cut solver (:mod:`splitc.partition.tiers`)
is checked against. See docs/three-tier.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from splitc.partition.problem import SplitProblem

DEFAULT_TIERS = ("device", "edge", "cloud")


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
