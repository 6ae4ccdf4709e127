"""The predicted latency of an assignment: per-node times, or measured segments when the problem has them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from splitc.partition.problem import SplitProblem
from splitc.partition.segments import measured_sides


@dataclass
class Breakdown:
    """The predicted latency of one assignment."""

    edge_ms: float
    transfer_ms: float
    cloud_ms: float
    up_values: np.ndarray  # indices of values sent edge -> cloud
    down_values: np.ndarray  # indices of graph outputs sent cloud -> edge
    up_bytes: int
    down_bytes: int

    @property
    def total_ms(self) -> float:
        return self.edge_ms + self.transfer_ms + self.cloud_ms


def evaluate(problem: SplitProblem, on_cloud: np.ndarray) -> Breakdown:
    """Edge, transfer and cloud time of an assignment (``on_cloud[i]`` per node)."""
    on_cloud = np.asarray(on_cloud, dtype=bool)
    value = problem.value_of_consumer_edge()
    cloud_use = np.zeros(problem.num_values, dtype=bool)
    cloud_use[value[on_cloud[problem.cons_idx]]] = True
    prod_cloud = np.zeros(problem.num_values, dtype=bool)
    has_prod = problem.producer >= 0
    prod_cloud[has_prod] = on_cloud[problem.producer[has_prod]]
    up = np.flatnonzero(cloud_use & ~prod_cloud)
    down = np.flatnonzero(problem.is_output & prod_cloud)
    up_bytes = int(problem.nbytes[up].sum())
    down_bytes = int(problem.nbytes[down].sum())
    crossing = len(up) + len(down) > 0
    transfer = (problem.rtt_ms if crossing else 0.0) + (up_bytes + down_bytes) / problem.bandwidth * 1e3
    if problem.pinned is not None and problem.pinned[up].any():
        transfer += problem.penalty_ms * int(problem.pinned[up].sum())
    edge_ms, cloud_ms = float(problem.edge_ms[~on_cloud].sum()), float(problem.cloud_ms[on_cloud].sum())
    if problem.edge_prefix_ms is not None or problem.cloud_suffix_ms is not None:
        edge_ms, cloud_ms = measured_sides(problem, on_cloud)
    return Breakdown(
        edge_ms=edge_ms,
        transfer_ms=float(transfer),
        cloud_ms=cloud_ms,
        up_values=up,
        down_values=down,
        up_bytes=up_bytes,
        down_bytes=down_bytes,
    )
