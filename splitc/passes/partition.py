"""The optimal edge/cloud partition, and partitions forced by the user."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from splitc.errors import CutError
from splitc.passes.cut_vertices import find_cut_vertices
from splitc.passes.mincut import SegmentSolution, solve_segments
from splitc.passes.problem import SplitProblem, dead_nodes, evaluate


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

    @property
    def edge_only(self) -> Partition:
        return make_partition(self.problem, np.zeros(self.problem.num_nodes, dtype=bool))

    @property
    def cloud_only(self) -> Partition:
        return make_partition(self.problem, np.ones(self.problem.num_nodes, dtype=bool))

    def candidates(self, limit: int | None = None) -> list[Partition]:
        """The best partition of each segment (and edge-only), cheapest first, without repeats."""
        order = np.argsort(self.solution.totals, kind="stable")
        found: list[Partition] = []
        seen: set[tuple[str, ...]] = set()
        for j in [*order, -1]:
            on_cloud = np.zeros(self.problem.num_nodes, bool) if j < 0 else self.solution.assignment(int(j))
            part = make_partition(self.problem, on_cloud)
            key = tuple(part.cloud_nodes)
            if key not in seen:
                seen.add(key)
                found.append(part)
            if limit is not None and len(found) >= limit:
                break
        return sorted(found, key=lambda p: p.total_ms)


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


def forced_partition(problem: SplitProblem, tensors: list[str]) -> Partition:
    """The partition that sends exactly ``tensors`` to the cloud (``[]`` means edge-only).

    Every node downstream of a sent tensor runs on the cloud, everything else
    on the edge; the cut is valid only if nothing else crosses.
    """
    names = problem.value_names or []
    index = {name: i for i, name in enumerate(names)}
    unknown = [t for t in tensors if t not in index]
    if unknown:
        raise CutError(f"--cut names {unknown[0]!r}, which is not a tensor that can be sent (not an activation of the model)")
    chosen = [index[t] for t in tensors]
    on_cloud = _downstream(problem, chosen)
    for i in chosen:
        if problem.cons_ptr[i] == problem.cons_ptr[i + 1]:
            raise CutError(f"--cut tensor {names[i]!r} has no consumer, so sending it computes nothing")
        prod = problem.producer[i]
        if prod >= 0 and on_cloud[prod]:
            raise CutError(f"--cut tensor {names[i]!r} is computed from another cut tensor; cut one or the other")
    part = make_partition(problem, on_cloud)
    extra = sorted(set(part.cut_values) - set(tensors))
    if extra:
        raise CutError(f"--cut is not a valid cut: tensor {extra[0]!r} also crosses from edge to cloud; add it to --cut")
    return part


def _downstream(problem: SplitProblem, values: list[int]) -> np.ndarray:
    """Nodes reachable from the given values (nodes are in topological order)."""
    on_cloud = np.zeros(problem.num_nodes, dtype=bool)
    start = problem.cons_idx[np.concatenate([np.arange(problem.cons_ptr[v], problem.cons_ptr[v + 1]) for v in values])] if values else []
    on_cloud[start] = True
    outputs_of: dict[int, list[int]] = {}
    for v in np.flatnonzero(problem.producer >= 0):
        outputs_of.setdefault(int(problem.producer[v]), []).append(int(v))
    for node in range(problem.num_nodes):
        if on_cloud[node]:
            for v in outputs_of.get(node, []):
                on_cloud[problem.cons_idx[problem.cons_ptr[v] : problem.cons_ptr[v + 1]]] = True
    return on_cloud
