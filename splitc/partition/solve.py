"""The optimal edge/cloud partition, and partitions forced by the user."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from splitc.errors import CutError
from splitc.partition.cut_vertices import find_cut_vertices
from splitc.partition.mincut import SegmentSolution, solve_segments
from splitc.partition.problem import SplitProblem, dead_nodes
from splitc.partition.pricing import evaluate


@dataclass
class Partition:
    """Which nodes run where, what crosses the network, and the predicted latency."""

    edge_nodes: list[str]
    cloud_nodes: list[str]
    cut_values: list[str]  # tensors sent edge -> cloud
    returned_values: list[str]  # graph outputs sent cloud -> edge
    edge_ms: float
    transfer_ms: float
    cloud_ms: float
    total_ms: float
    up_bytes: int
    down_bytes: int
    on_cloud: np.ndarray = field(repr=False, compare=False)

    @property
    def kind(self) -> str:
        if not self.cloud_nodes:
            return "edge-only"
        if not self.edge_nodes:
            return "cloud-only"
        return "split"

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "cut": self.cut_values,
            "returned": self.returned_values,
            "edge_ms": self.edge_ms,
            "transfer_ms": self.transfer_ms,
            "cloud_ms": self.cloud_ms,
            "total_ms": self.total_ms,
            "up_bytes": self.up_bytes,
            "down_bytes": self.down_bytes,
        }


def make_partition(problem: SplitProblem, on_cloud: np.ndarray) -> Partition:
    """Price an assignment and name its parts."""
    on_cloud = np.asarray(on_cloud, dtype=bool)
    cost = evaluate(problem, on_cloud)
    nodes = problem.node_names or [str(i) for i in range(problem.num_nodes)]
    values = problem.value_names or [str(i) for i in range(problem.num_values)]
    return Partition(
        edge_nodes=[nodes[i] for i in np.flatnonzero(~on_cloud)],
        cloud_nodes=[nodes[i] for i in np.flatnonzero(on_cloud)],
        cut_values=[values[i] for i in cost.up_values],
        returned_values=[values[i] for i in cost.down_values],
        edge_ms=cost.edge_ms,
        transfer_ms=cost.transfer_ms,
        cloud_ms=cost.cloud_ms,
        total_ms=cost.total_ms,
        up_bytes=cost.up_bytes,
        down_bytes=cost.down_bytes,
        on_cloud=on_cloud,
    )


@dataclass
class PartitionResult:
    """The optimum, the per-segment candidates it was picked from, and the baselines."""

    best: Partition
    cut_vertices: list[str]
    solution: SegmentSolution = field(repr=False)
    problem: SplitProblem = field(repr=False)
    solve_ms: float = 0.0
    _order: list | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def edge_only(self) -> Partition:
        return make_partition(self.problem, np.zeros(self.problem.num_nodes, dtype=bool))

    @property
    def cloud_only(self) -> Partition:
        return make_partition(self.problem, np.ones(self.problem.num_nodes, dtype=bool))

    def candidates(self, limit: int | None = None) -> list[Partition]:
        """The best partition of each segment (and edge-only), cheapest first, without repeats."""
        found = self._unique()
        return sorted(found if limit is None else found[:limit], key=lambda p: p.total_ms)

    def _unique(self) -> list[Partition]:
        """Each segment's best partition in solver order, then edge-only; repeats and pinned sends left out.

        Computed once: the compile, its candidate list and the manifest's alternatives all read it.
        """
        if self._order is None:
            order = np.argsort(self.solution.totals, kind="stable")
            found: list[Partition] = []
            seen: set[tuple[str, ...]] = set()
            for j in [*order, -1]:
                on_cloud = np.zeros(self.problem.num_nodes, bool) if j < 0 else self.solution.assignment(int(j))
                if _sends_pinned(self.problem, on_cloud):
                    continue  # sends a tensor that must not cross: never a candidate
                part = make_partition(self.problem, on_cloud)
                if tuple(part.cloud_nodes) not in seen:
                    seen.add(tuple(part.cloud_nodes))
                    found.append(part)
            self._order = found
        return self._order


def partition(problem: SplitProblem) -> PartitionResult:
    """The exact minimum of edge + transfer + cloud time over all valid assignments.

    Every node must reach a graph output: run dead-code elimination first.
    """
    start = time.perf_counter()
    dead = dead_nodes(problem)
    if len(dead):
        names = problem.node_names or [str(i) for i in range(problem.num_nodes)]
        raise ValueError(f"node {names[dead[0]]!r} reaches no graph output; run dead-code elimination first")
    cuts = find_cut_vertices(problem)
    solution = solve_segments(problem, cuts)
    best_j = int(np.argmin(solution.totals))
    on_cloud = solution.assignment(best_j)
    edge_only_ms = evaluate(problem, np.zeros(problem.num_nodes, dtype=bool)).total_ms
    if edge_only_ms <= solution.totals[best_j]:
        on_cloud = np.zeros(problem.num_nodes, dtype=bool)
    solve_ms = (time.perf_counter() - start) * 1e3
    names = problem.value_names or [str(i) for i in range(problem.num_values)]
    return PartitionResult(
        best=make_partition(problem, on_cloud),
        cut_vertices=[names[i] for i in cuts],
        solution=solution,
        problem=problem,
        solve_ms=solve_ms,
    )


def _sends_pinned(problem: SplitProblem, on_cloud: np.ndarray) -> bool:
    if problem.pinned is None:
        return False
    return bool(problem.pinned[evaluate(problem, on_cloud).up_values].any())


def forced_partition(problem: SplitProblem, tensors: list[str]) -> Partition:
    """The partition that sends exactly ``tensors`` to the cloud (``[]`` means edge-only).

    A node must stay on the edge when it produces a sent tensor, when it reads
    a tensor that is not sent but is computed on the edge (or is a graph input),
    or when it feeds an edge node. Every other node runs on the cloud: this is
    the largest cloud side on which nothing but ``tensors`` crosses, so any
    valid assignment that sends exactly ``tensors`` is contained in it, and it
    sends all of them whenever some valid assignment does. A sent tensor may
    be computed from another sent tensor (the cloud may need both).
    """
    names = problem.value_names or [str(i) for i in range(problem.num_values)]
    index = {name: i for i, name in enumerate(names)}
    unknown = [t for t in tensors if t not in index]
    if unknown:
        raise CutError(f"cut names {unknown[0]!r}, which is not a tensor that can be sent (not an activation of the model)")
    chosen = sorted({index[t] for t in tensors})
    for i in chosen:
        if problem.pinned is not None and problem.pinned[i]:
            raise CutError(f"cut tensor {names[i]!r} cannot be sent: its shape depends on the input values "
                           "(see `splitc inspect`)")
    on_cloud = ~_edge_bound(problem, chosen)
    for i in chosen:
        readers = problem.cons_idx[problem.cons_ptr[i] : problem.cons_ptr[i + 1]]
        if len(readers) == 0:
            raise CutError(f"cut tensor {names[i]!r} has no consumer, so sending it computes nothing")
        if not on_cloud[readers].any():
            missing = _missing_tensors(problem, chosen)
            hint = f"; its readers also need {', '.join(repr(names[v]) for v in missing[:3])}: add " \
                   f"{'it' if len(missing) == 1 else 'them'} to the cut" if missing else ""
            raise CutError(f"cut tensor {names[i]!r} cannot be sent: every node that reads it must stay on the "
                           f"edge{hint}")
    return make_partition(problem, on_cloud)


def _missing_tensors(problem: SplitProblem, chosen: list[int]) -> list[int]:
    """Edge tensors that would also cross if every reader of ``chosen`` (and what follows) ran on the cloud."""
    on_cloud = np.zeros(problem.num_nodes, dtype=bool)
    for v in chosen:
        on_cloud[problem.cons_idx[problem.cons_ptr[v] : problem.cons_ptr[v + 1]]] = True
    order = np.argsort(np.where(problem.producer >= 0, problem.producer, -1), kind="stable")
    for v in order:
        p = problem.producer[v]
        if p >= 0 and on_cloud[p]:
            on_cloud[problem.cons_idx[problem.cons_ptr[v] : problem.cons_ptr[v + 1]]] = True
    crossing = evaluate(problem, on_cloud).up_values
    return [int(v) for v in crossing if int(v) not in set(chosen)]


def _edge_bound(problem: SplitProblem, chosen: list[int]) -> np.ndarray:
    """Nodes that must run on the edge when only the values ``chosen`` may cross."""
    sent = np.zeros(problem.num_values, dtype=bool)
    sent[chosen] = True
    outputs_of: list[list[int]] = [[] for _ in range(problem.num_nodes)]
    for v in np.flatnonzero(problem.producer >= 0):
        outputs_of[int(problem.producer[v])].append(int(v))
    inputs_of: list[list[int]] = [[] for _ in range(problem.num_nodes)]
    for v in range(problem.num_values):
        for c in problem.cons_idx[problem.cons_ptr[v] : problem.cons_ptr[v + 1]]:
            inputs_of[int(c)].append(v)
    on_edge = np.zeros(problem.num_nodes, dtype=bool)
    stack = [int(problem.producer[v]) for v in chosen if problem.producer[v] >= 0]
    for v in np.flatnonzero((problem.producer < 0) & ~sent):  # unsent graph inputs are read on the edge only
        stack.extend(int(c) for c in problem.cons_idx[problem.cons_ptr[v] : problem.cons_ptr[v + 1]])
    while stack:
        node = stack.pop()
        if on_edge[node]:
            continue
        on_edge[node] = True
        for v in inputs_of[node]:  # an edge node's producers are on the edge
            if problem.producer[v] >= 0 and not on_edge[problem.producer[v]]:
                stack.append(int(problem.producer[v]))
        for v in outputs_of[node]:  # an unsent edge tensor is read on the edge only
            if not sent[v]:
                stack.extend(int(c) for c in problem.cons_idx[problem.cons_ptr[v] : problem.cons_ptr[v + 1]]
                             if not on_edge[c])
    return on_edge
