"""The partitioner with measured prefix/suffix times (segment-aware costs) against brute force.

The oracle prices an assignment from explicit ancestor and descendant sets,
independently of the segment bookkeeping in ``splitc.partition.segments``. The
anchors are the source, the cut vertices and the sink. The edge anchor is the
last whose ancestors all run on the edge, the cloud anchor the first whose
descendants all run on the cloud; edge = prefix(edge anchor) + edge_ms of the
other edge nodes, cloud = suffix(cloud anchor) + cloud_ms of the other cloud
nodes, and edge-only has no cloud time. A prefix or suffix that was not
measured borrows the nearest measured one plus the per-node times in between.
The source's prefix and the sink's suffix are the largest measured at a graph
input and at an unread graph output (0 if none); the sink's prefix and the
source's suffix are read at the model's only output and only input.
"""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from splitc.testing.baselines import random_dag_problem
from splitc.partition.cut_vertices import find_cut_vertices
from splitc.partition.solve import forced_partition, partition
from splitc.partition.problem import SplitProblem, is_valid
from splitc.partition.pricing import evaluate

EXACT = dict(abs=1e-9)


def _node_graph(problem: SplitProblem) -> nx.DiGraph:
    graph = nx.DiGraph()
    graph.add_nodes_from(range(problem.num_nodes))
    for v in range(problem.num_values):
        if problem.producer[v] >= 0:
            for c in problem.cons_idx[problem.cons_ptr[v] : problem.cons_ptr[v + 1]]:
                graph.add_edge(int(problem.producer[v]), int(c))
    return graph


def _pick(array, index) -> float:
    return np.nan if array is None or index is None else float(array[index])


def _largest(array, mask) -> float:
    return max([0.0] + [float(x) for x in (array[mask] if array is not None else []) if not np.isnan(x)])


def _only(mask) -> int | None:
    return int(np.flatnonzero(mask)[0]) if mask.sum() == 1 else None


class Oracle:
    """Set-based pricing of any assignment of a problem with measured times."""

    def __init__(self, problem: SplitProblem) -> None:
        self.p = problem
        graph = _node_graph(problem)
        everything = set(range(problem.num_nodes))
        cuts = list(find_cut_vertices(problem))
        self.anc, self.desc = [set()], [everything]
        for v in cuts:
            prod = int(problem.producer[v])
            self.anc.append(nx.ancestors(graph, prod) | {prod})
            self.desc.append(everything - self.anc[-1])
        self.anc.append(everything)
        self.desc.append(set())
        prefix, suffix = problem.edge_prefix_ms, problem.cloud_suffix_ms
        unread = problem.is_output & (np.diff(problem.cons_ptr) == 0)
        self.prefix = ([_largest(prefix, problem.producer < 0)] + [_pick(prefix, v) for v in cuts]
                       + [_pick(prefix, _only(problem.is_output))])
        self.suffix = ([_pick(suffix, _only(problem.producer < 0))] + [_pick(suffix, v) for v in cuts]
                       + [_largest(suffix, unread)])

    def _prefix(self, i: int) -> float:
        j = max(a for a in range(i + 1) if not np.isnan(self.prefix[a]))
        return self.prefix[j] + sum(self.p.edge_ms[list(self.anc[i] - self.anc[j])])

    def _suffix(self, i: int) -> float:
        j = min(a for a in range(i, len(self.suffix)) if not np.isnan(self.suffix[a]))
        return self.suffix[j] + sum(self.p.cloud_ms[list(self.desc[i] - self.desc[j])])

    def sides(self, on_cloud: np.ndarray) -> tuple[float, float]:
        edge_set = {i for i in range(self.p.num_nodes) if not on_cloud[i]}
        cloud_set = set(range(self.p.num_nodes)) - edge_set
        first = max(i for i in range(len(self.anc)) if self.anc[i] <= edge_set)
        edge = self._prefix(first) + sum(self.p.edge_ms[list(edge_set - self.anc[first])])
        if not cloud_set:
            return edge, 0.0
        last = min(i for i in range(len(self.desc)) if self.desc[i] <= cloud_set)
        return edge, self._suffix(last) + sum(self.p.cloud_ms[list(cloud_set - self.desc[last])])

    def total(self, on_cloud: np.ndarray) -> float:
        p, sent, crossed = self.p, 0, False
        for v in range(p.num_values):
            readers = p.cons_idx[p.cons_ptr[v] : p.cons_ptr[v + 1]]
            prod_cloud = p.producer[v] >= 0 and on_cloud[p.producer[v]]
            crosses = (not prod_cloud and on_cloud[readers].any()) or (prod_cloud and p.is_output[v])
            sent += int(p.nbytes[v]) if crosses else 0
            crossed |= bool(crosses)
        edge, cloud = self.sides(on_cloud)
        return edge + cloud + (p.rtt_ms if crossed else 0.0) + sent / p.bandwidth * 1e3


def valid_assignments(problem: SplitProblem) -> np.ndarray:
    n = problem.num_nodes
    masks = np.arange(1 << n, dtype=np.int64)
    cloud = ((masks[:, None] >> np.arange(n)) & 1).astype(bool)
    value_of = problem.value_of_consumer_edge()
    dep = problem.producer[value_of] >= 0
    prod, cons = problem.producer[value_of[dep]], problem.cons_idx[dep]
    return cloud[~np.any(cloud[:, prod] & ~cloud[:, cons], axis=1)]


def with_measurements(problem: SplitProblem, rng: np.random.Generator, density: float = 0.7) -> SplitProblem:
    """Random integer measurements at some cut vertices (and the only input/output), NaN elsewhere."""
    m = problem.num_values
    prefix, suffix = np.full(m, np.nan), np.full(m, np.nan)
    total_edge, total_cloud = float(problem.edge_ms.sum()), float(problem.cloud_ms.sum())
    for v in find_cut_vertices(problem):
        if rng.random() < density:
            prefix[v] = float(rng.integers(0, int(total_edge) + 5))
        if rng.random() < density:
            suffix[v] = float(rng.integers(0, int(total_cloud) + 5))
    outputs, inputs = np.flatnonzero(problem.is_output), np.flatnonzero(problem.producer < 0)
    if len(outputs) == 1 and rng.random() < density:
        prefix[outputs[0]] = float(rng.integers(0, int(total_edge) + 5))
    if len(inputs) == 1 and rng.random() < density:
        suffix[inputs[0]] = float(rng.integers(0, int(total_cloud) + 5))
    for v in inputs:  # a session that computes nothing
        if rng.random() < density / 2:
            prefix[v] = float(rng.integers(0, 4))
    for v in np.flatnonzero(problem.is_output & (np.diff(problem.cons_ptr) == 0)):
        if rng.random() < density / 2:
            suffix[v] = float(rng.integers(0, 4))
    kind = rng.integers(3)  # both, prefix only, suffix only
    problem.edge_prefix_ms = prefix if kind in (0, 1) else None
    problem.cloud_suffix_ms = suffix if kind in (0, 2) else None
    if problem.edge_prefix_ms is None and problem.cloud_suffix_ms is None:
        problem.edge_prefix_ms = prefix
    return problem


def _instance(seed: int) -> SplitProblem:
    rng = np.random.default_rng(seed)
    problem = random_dag_problem(rng, int(rng.integers(1, 13)), rtt_ms=float(rng.choice([0.0, 3.0, 30.0])))
    return with_measurements(problem, rng)


@pytest.mark.parametrize("block", range(4))
def test_partition_matches_brute_force_with_measured_segments(block):
    for seed in range(block * 60, (block + 1) * 60):
        problem = _instance(seed)
        oracle = Oracle(problem)
        assignments = valid_assignments(problem)
        prices = [oracle.total(a) for a in assignments]
        got = partition(problem).best
        assert is_valid(problem, got.on_cloud), seed
        assert got.total_ms == pytest.approx(oracle.total(got.on_cloud), **EXACT), seed
        assert got.total_ms == pytest.approx(min(prices), **EXACT), (seed, problem)
        for a, price in list(zip(assignments, prices))[:: max(1, len(prices) // 8)]:
            assert evaluate(problem, a).total_ms == pytest.approx(price, **EXACT), seed


def test_measured_cut_vertex_split_uses_the_measured_times():
    """Forcing the split at a measured cut vertex predicts exactly its prefix and suffix."""
    checked = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        problem = random_dag_problem(rng, int(rng.integers(3, 15)))
        cuts = find_cut_vertices(problem)
        if not len(cuts):
            continue
        problem.edge_prefix_ms = np.where(np.isin(np.arange(problem.num_values), cuts), 7.0 + seed, np.nan)
        problem.cloud_suffix_ms = np.where(np.isin(np.arange(problem.num_values), cuts), 3.0 + seed, np.nan)
        for v in cuts:
            has_cloud_reader = problem.cons_ptr[v + 1] > problem.cons_ptr[v]
            if not has_cloud_reader:
                continue
            part = forced_partition(problem, [problem.value_names[v]])
            if not part.cloud_nodes:
                continue
            assert part.edge_ms == pytest.approx(7.0 + seed, **EXACT)
            assert part.cloud_ms == pytest.approx(3.0 + seed, **EXACT)
            checked += 1
    assert checked > 100


def test_unmeasured_arrays_give_the_per_node_optimum():
    """All-NaN arrays fall back to per-node sums everywhere: same optimum as without them."""
    for seed in range(120):
        rng = np.random.default_rng(seed)
        problem = random_dag_problem(rng, int(rng.integers(1, 40)), rtt_ms=3.0, float_costs=True)
        plain = partition(problem).best.total_ms
        problem.edge_prefix_ms = np.full(problem.num_values, np.nan)
        problem.cloud_suffix_ms = np.full(problem.num_values, np.nan)
        assert partition(problem).best.total_ms == pytest.approx(plain, rel=1e-9), seed


def test_with_link_keeps_the_measurements():
    problem = _instance(3)
    moved = problem.with_link(1e6, 5.0)
    assert moved.edge_prefix_ms is problem.edge_prefix_ms and moved.cloud_suffix_ms is problem.cloud_suffix_ms
