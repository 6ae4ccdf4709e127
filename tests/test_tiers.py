"""The exact K-tier partitioner (splitc.partition) against independent oracles.

* brute force over every monotone assignment, priced by a set-based oracle written here;
* networkx's exact min-cut of the same layered network;
* DeePar's exhaustive (c1, c2) search on chains (equal) and on a DAG (strictly worse);
* the two-tier partitioner when the middle tier is made useless.
"""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitc.partition import Link, TierProblem, deepar_chain, evaluate_tiers, solve_tiers
from splitc.partition.tiers import build_tier_network, is_monotone, networkx_graph
from splitc.testing.baselines import random_dag_problem
from splitc.partition.solve import partition
from splitc.partition.problem import SplitProblem


def oracle_cost(p: TierProblem, tier: np.ndarray) -> float:
    """Plain-Python pricing from the definitions (no shared code with evaluate_tiers)."""
    K = p.num_tiers
    total = sum(p.node_ms[tier[v], v] for v in range(p.num_nodes))
    for k in range(1, K):
        link = p.links[k - 1]
        per_byte = 0.0 if np.isinf(link.bandwidth) else 1e3 / link.bandwidth
        used, wire = False, 0.0
        for x in range(p.num_values):
            made = 0 if p.producer[x] < 0 else int(tier[p.producer[x]])
            readers = p.cons_idx[p.cons_ptr[x]:p.cons_ptr[x + 1]]
            top = max((int(tier[c]) for c in readers), default=-1)
            if made < k <= top:  # goes up link k (once, whatever the number of readers)
                used, wire = True, wire + p.nbytes[x] * per_byte
            if p.is_output[x] and p.producer[x] >= 0 and made >= k:  # the result comes back down link k
                used, wire = True, wire + p.nbytes[x] * per_byte
        total += wire + (link.rtt_ms if used else 0.0)
    return float(total)


def monotone_assignments(p: TierProblem) -> np.ndarray:
    """Every assignment with t(producer) <= t(consumer), built node by node in topological order."""
    K, n = p.num_tiers, p.num_nodes
    inputs = [[] for _ in range(n)]
    for x in range(p.num_values):
        if p.producer[x] >= 0:
            for c in p.cons_idx[p.cons_ptr[x]:p.cons_ptr[x + 1]]:
                inputs[c].append(int(p.producer[x]))
    rows = np.zeros((1, 0), dtype=np.int64)
    for v in range(n):
        low = rows[:, inputs[v]].max(axis=1) if inputs[v] else np.zeros(len(rows), np.int64)
        parts = [np.column_stack([rows[low <= k], np.full(int((low <= k).sum()), k)]) for k in range(K)]
        rows = np.concatenate(parts)
    return rows


def brute_force(p: TierProblem) -> tuple[float, np.ndarray]:
    rows = monotone_assignments(p)
    costs = [evaluate_tiers(p, r).total_ms for r in rows]
    i = int(np.argmin(costs))
    return costs[i], rows[i]


def three_tier(rng, n, float_costs=False, rtts=(0.0, 0.0), bandwidths=(1000.0, 1000.0)) -> TierProblem:
    base = random_dag_problem(rng, n, float_costs=float_costs)
    # device slow, edge in between, cloud fast (integers unless float_costs)
    dev = base.edge_ms * (1.0 + rng.integers(0, 3))
    mid = np.floor(dev * rng.uniform(0.2, 0.8)) if not float_costs else dev * rng.uniform(0.2, 0.8)
    node_ms = np.vstack([dev, mid, base.cloud_ms * rng.uniform(0.0, 0.5)])
    if not float_costs:
        node_ms = np.floor(node_ms)
    return TierProblem(node_ms=node_ms, producer=base.producer, nbytes=base.nbytes, is_output=base.is_output,
                       cons_ptr=base.cons_ptr, cons_idx=base.cons_idx,
                       links=[Link(bandwidths[0], rtts[0]), Link(bandwidths[1], rtts[1])])


def check_against_brute_force(p: TierProblem) -> None:
    result = solve_tiers(p)
    best, best_tier = brute_force(p)
    assert is_monotone(p, result.tier)
    assert result.total_ms == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert oracle_cost(p, result.tier) == pytest.approx(result.total_ms, rel=1e-9, abs=1e-9)
    assert oracle_cost(p, best_tier) == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert result.lower_bound_ms <= result.total_ms + 1e-9


@pytest.mark.parametrize("seed", range(40))
def test_brute_force_fixed_seeds(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 11))
    p = three_tier(rng, n, float_costs=seed % 2 == 1, rtts=(float(rng.integers(0, 6)), float(rng.integers(0, 30))),
                   bandwidths=(float(rng.choice([250, 1000, 4000])), float(rng.choice([100, 500, 1000]))))
    check_against_brute_force(p)


@pytest.mark.parametrize("seed", range(3))
def test_brute_force_larger(seed):
    rng = np.random.default_rng(1000 + seed)
    p = three_tier(rng, 13, rtts=(2.0, 15.0), bandwidths=(2000.0, 500.0))
    check_against_brute_force(p)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 9), K=st.integers(2, 4),
       rtt=st.floats(0, 50), float_costs=st.booleans())
def test_brute_force_hypothesis_k_tiers(seed, n, K, rtt, float_costs):
    """Any number of tiers (2..4), random links and round trips, some nodes barred from some tiers."""
    rng = np.random.default_rng(seed)
    base = random_dag_problem(rng, n, float_costs=float_costs)
    node_ms = np.sort(rng.uniform(0, 20, (K, base.num_nodes)), axis=0)[::-1].copy()
    node_ms[rng.random(node_ms.shape) < 0.1] = np.inf
    node_ms[0, np.isinf(node_ms).all(axis=0)] = 1.0
    links = [Link(float(rng.choice([100.0, 1000.0, np.inf])), float(rtt * rng.random())) for _ in range(K - 1)]
    p = TierProblem(node_ms=node_ms, producer=base.producer, nbytes=base.nbytes, is_output=base.is_output,
                    cons_ptr=base.cons_ptr, cons_idx=base.cons_idx, links=links)
    best, _ = brute_force(p)
    if not np.isfinite(best):
        with pytest.raises(ValueError):
            solve_tiers(p)
        return
    result = solve_tiers(p)
    assert result.total_ms == pytest.approx(best, rel=1e-9, abs=1e-9)
    assert oracle_cost(p, result.tier) == pytest.approx(best, rel=1e-9, abs=1e-9)


def test_fan_out_paid_once_per_link_and_relay():
    """x feeds three cloud nodes: sent once over each link; the edge computes nothing but relays it."""
    producer = np.array([-1, 0, 1, 2, 3])  # x (input), then one output per node 0..3
    cons_ptr = np.array([0, 3, 4, 5, 6, 6])
    cons_idx = np.array([0, 1, 2, 3, 3, 3])  # x -> 0,1,2 ; y0,y1,y2 -> 3
    node_ms = np.array([[100.0] * 4, [50.0] * 4, [1.0] * 4])
    p = TierProblem(node_ms=node_ms, producer=producer, nbytes=np.array([10, 1000, 1000, 1000, 1]),
                    is_output=np.array([False, False, False, False, True]), cons_ptr=cons_ptr, cons_idx=cons_idx,
                    links=[Link(1000.0, 3.0), Link(1000.0, 7.0)])
    r = solve_tiers(p)
    assert list(r.tier) == [2, 2, 2, 2]
    # x over both links once (10 ms each), result down both links (1 ms each), both round trips, 4 ms compute
    assert r.total_ms == pytest.approx(4 + 10 + 10 + 1 + 1 + 3 + 7)
    assert r.breakdown.compute_ms[1] == 0 and list(r.breakdown.up_values[0]) == [0]
    assert r.total_ms == pytest.approx(oracle_cost(p, r.tier))


def chain_problem(rng, n: int) -> TierProblem:
    producer = np.arange(-1, n)
    cons_ptr = np.concatenate([np.arange(n + 1), [n]])
    is_output = np.zeros(n + 1, bool)
    is_output[-1] = True
    node_ms = np.vstack([rng.uniform(1, 30, n), rng.uniform(0.5, 10, n), rng.uniform(0, 2, n)])
    return TierProblem(node_ms=node_ms, producer=producer, nbytes=rng.integers(1, 5000, n + 1),
                       is_output=is_output, cons_ptr=cons_ptr, cons_idx=np.arange(n),
                       links=[Link(float(rng.uniform(2e4, 3e5)), float(rng.uniform(0, 5))),
                              Link(float(rng.uniform(1e3, 5e4)), float(rng.uniform(5, 50)))])


@pytest.mark.parametrize("seed", range(25))
def test_deepar_enumeration_equal_on_chains(seed):
    p = chain_problem(np.random.default_rng(seed), int(np.random.default_rng(seed).integers(1, 25)))
    best, tier = deepar_chain(p)
    r = solve_tiers(p)
    assert r.total_ms == pytest.approx(best, rel=1e-9)
    assert oracle_cost(p, tier) == pytest.approx(best, rel=1e-9)


def two_branch_dag() -> TierProblem:
    """x -> p1 -> q1 -> r, x -> p2 -> q2 -> r; p* shrink x cheaply, q* are heavy. Topological order
    p1, q1, p2, q2, r: the optimum {p1, p2} on the device is not a prefix of it."""
    producer = np.array([-1, 0, 1, 2, 3, 4])  # x, a1=p1(x), b1=q1(a1), a2=p2(x), b2=q2(a2), y=r(b1,b2)
    cons_ptr = np.array([0, 2, 3, 4, 5, 6, 6])
    cons_idx = np.array([0, 2, 1, 4, 3, 4])
    node_ms = np.array([[1.0, 500.0, 1.0, 500.0, 1.0],
                        [1.0, 200.0, 1.0, 200.0, 1.0],
                        [1.0, 1.0, 1.0, 1.0, 1.0]])
    return TierProblem(node_ms=node_ms, producer=producer, nbytes=np.array([100_000, 10, 10, 10, 10, 10]),
                       is_output=np.array([False, False, False, False, False, True]),
                       cons_ptr=cons_ptr, cons_idx=cons_idx, links=[Link(1e5, 5.0), Link(1e5, 20.0)])


def test_dag_beats_deepar_chain_cut():
    p = two_branch_dag()
    chain_best, _ = deepar_chain(p)
    r = solve_tiers(p)
    brute, _ = brute_force(p)
    assert r.total_ms == pytest.approx(brute)
    assert r.total_ms < chain_best - 100  # DeePar must send x (1 s) or run a heavy q on a slow tier
    assert r.tier[0] == 0 and r.tier[2] == 0 and r.tier[1] == 2 and r.tier[3] == 2


@pytest.mark.parametrize("seed", range(30))
def test_equals_two_tier_when_edge_useless(seed):
    """Edge compute barred (inf) and a free device-edge link: the edge only relays, so three tiers
    are exactly the two-tier problem over the edge-cloud link. Also: edge = cloud costs with a free
    edge-cloud link (the cloud tier then adds nothing)."""
    rng = np.random.default_rng(seed)
    sp2 = random_dag_problem(rng, int(rng.integers(2, 60)), rtt_ms=float(rng.integers(0, 40)),
                             float_costs=bool(seed % 2), bandwidth=float(rng.choice([300.0, 1000.0, 1e5])))
    two = partition(sp2)
    useless = TierProblem.from_split(sp2, np.full(sp2.num_nodes, np.inf), Link(np.inf, 0.0))
    r = solve_tiers(useless)
    assert r.total_ms == pytest.approx(two.best.total_ms, rel=1e-9, abs=1e-9)
    assert r.breakdown.compute_ms[1] == 0
    same = TierProblem.from_split(sp2, sp2.cloud_ms, Link(sp2.bandwidth, sp2.rtt_ms), Link(np.inf, 0.0))
    assert solve_tiers(same).total_ms == pytest.approx(two.best.total_ms, rel=1e-9, abs=1e-9)


@pytest.mark.parametrize("seed", range(12))
def test_network_min_cut_matches_networkx(seed):
    """The layered network's exact min-cut value (networkx, whole-number capacities) equals the optimum."""
    rng = np.random.default_rng(500 + seed)
    p = three_tier(rng, int(rng.integers(3, 40)), float_costs=True, rtts=(3.0, 25.0), bandwidths=(2e4, 3e3))
    net = build_tier_network(p)
    graph = networkx_graph(net)
    value, _ = nx.minimum_cut(graph, 0, 1)
    r = solve_tiers(p)
    assert value / graph.graph["scale"] + net.constant == pytest.approx(r.total_ms, rel=1e-9)


def test_round_off_certified_on_wide_ranges():
    """Costs spanning 12 orders of magnitude: the answer is still the exact optimum."""
    rng = np.random.default_rng(7)
    for _ in range(5):
        p = three_tier(rng, 9, float_costs=True, rtts=(1e-6, 1e3))
        p.node_ms = p.node_ms * 10.0 ** rng.uniform(-6, 6, p.node_ms.shape)
        best, _ = brute_force(p)
        assert solve_tiers(p).total_ms == pytest.approx(best, rel=1e-9)


def test_from_graph_zoo_model():
    from splitc.testing import zoo
    from splitc.frontend import import_model
    from splitc.passes.base import PassManager
    from splitc.passes.dce import DeadCodeElimination

    graph = PassManager([DeadCodeElimination()])(import_model(zoo.build("resnet_blocks"))).graph
    p = TierProblem.from_graph(graph, ["raspberry-pi-4", "jetson-tx2", "t4"],
                               [Link(20e6 / 8, 5.0), Link(200e6 / 8, 30.0)])
    r = solve_tiers(p)
    assert len(r.tier) == len(graph.data_nodes)
    uniform = min(evaluate_tiers(p, np.full(p.num_nodes, k)).total_ms for k in range(3))
    assert r.total_ms <= uniform + 1e-9
    assert r.to_dict()["links"][0]["from"] == "device"


def test_dead_code_rejected():
    sp2 = random_dag_problem(np.random.default_rng(3), 12, allow_dead=True)
    p = TierProblem.from_split(sp2, sp2.edge_ms, Link(1000.0))
    from splitc.partition.problem import dead_nodes
    if len(dead_nodes(sp2)):
        with pytest.raises(ValueError, match="reaches no graph output"):
            solve_tiers(p)
