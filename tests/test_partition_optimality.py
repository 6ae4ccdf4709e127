"""The partitioner's optimum against independent oracles.

* small random DAGs (integer costs): exhaustive enumeration (``brute_force``);
* larger random DAGs (float costs): one whole-graph min-cut, networkx and SciPy;
* real models (ONNX ``light_*`` test models and the zoo) with roofline costs
  over a range of links: the networkx whole-graph min-cut;
* hand-built cases: a tensor read by several cloud nodes is sent once, and
  edge-only / cloud-only come back when they are optimal.
"""

from __future__ import annotations

import glob
import itertools
import os

import numpy as np
import onnx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitc.testing import zoo
from splitc.frontend import import_model
from splitc.passes.base import PassManager
from splitc.testing.baselines import brute_force, random_dag_problem, whole_graph_networkx, whole_graph_scipy
from splitc.cost.model import annotate_costs
from splitc.cost.resolve import cost_model_for
from splitc.passes.dce import DeadCodeElimination
from splitc.partition.solve import partition
from splitc.partition.problem import SplitProblem, is_valid, problem_from_graph
from splitc.partition.pricing import evaluate

EXACT = dict(abs=1e-9)


def _check_against_brute_force(problem: SplitProblem, label: str) -> None:
    best, oracle = brute_force(problem)
    result = partition(problem)
    got = result.best
    assert is_valid(problem, got.on_cloud), f"{label}: invalid assignment {got.on_cloud.astype(int)}"
    assert evaluate(problem, got.on_cloud).total_ms == pytest.approx(got.total_ms, **EXACT), label
    assert got.total_ms == pytest.approx(best, **EXACT), (
        f"{label}: partition {got.total_ms} (cloud {got.on_cloud.astype(int)}) "
        f"!= brute force {best} (cloud {oracle.astype(int)}); {problem}"
    )


def _small_instance(seed: int) -> SplitProblem:
    rng = np.random.default_rng(seed)
    return random_dag_problem(rng, int(rng.integers(1, 19)), rtt_ms=float(rng.choice([0.0, 3.0])))


# ---------------------------------------------------------------- small DAGs vs brute force


@pytest.mark.parametrize("block", range(8))
def test_matches_brute_force_on_random_dags(block):
    for seed in range(block * 60, (block + 1) * 60):
        _check_against_brute_force(_small_instance(seed), f"seed {seed}")


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 18), rtt=st.sampled_from([0.0, 3.0]))
def test_matches_brute_force_hypothesis(seed, n, rtt):
    problem = random_dag_problem(np.random.default_rng(seed), n, rtt_ms=rtt)
    _check_against_brute_force(problem, f"seed {seed}, n {n}, rtt {rtt}")


def test_generator_covers_the_interesting_shapes():
    """The random instances do exercise what the brute-force test is meant to cover."""
    seen = dict.fromkeys(["several inputs", "fan-out", "two outputs", "input-less node", "early output",
                          "edge-only", "cloud-only", "split", "cut vertices", "up to 18 nodes"], False)
    for seed in range(480):
        p = _small_instance(seed)
        made = np.bincount(p.producer[p.producer >= 0], minlength=p.num_nodes)
        seen["several inputs"] |= int((p.producer < 0).sum()) > 1
        seen["fan-out"] |= bool((np.diff(p.cons_ptr) > 1).any())
        seen["two outputs"] |= bool((made > 1).any())
        seen["input-less node"] |= len(set(range(p.num_nodes)) - set(p.cons_idx.tolist())) > 0
        seen["early output"] |= bool((p.is_output & (p.producer >= 0) & (p.producer < p.num_nodes - 1)).any())
        seen["up to 18 nodes"] |= p.num_nodes >= 17
        result = partition(p)
        seen[result.best.kind] = True
        seen["cut vertices"] |= len(result.cut_vertices) > 1
    assert all(seen.values()), seen


# ---------------------------------------------------------------- larger DAGs vs whole-graph min-cut


@pytest.mark.parametrize("seed", range(24))
def test_matches_whole_graph_mincut_on_large_random_dags(seed):
    rng = np.random.default_rng(10_000 + seed)
    problem = random_dag_problem(
        rng,
        int(rng.integers(200, 501)),
        rtt_ms=float(rng.choice([0.0, 3.0, 20.0])),
        bandwidth=float(rng.choice([1e4, 1e5, 1e6, 1e7])),
        float_costs=True,
    )
    got = partition(problem).best
    assert is_valid(problem, got.on_cloud)
    networkx_ms = evaluate(problem, whole_graph_networkx(problem)).total_ms
    scipy_ms = evaluate(problem, whole_graph_scipy(problem)).total_ms
    assert got.total_ms == pytest.approx(networkx_ms, rel=1e-6)
    assert got.total_ms == pytest.approx(scipy_ms, rel=1e-6)


# ---------------------------------------------------------------- real models vs networkx

LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
LIGHT_MODELS = sorted(glob.glob(os.path.join(LIGHT_DIR, "light_*.onnx")))
REAL_MODELS = [os.path.basename(p)[: -len(".onnx")] for p in LIGHT_MODELS] + list(zoo.MODELS)
BANDWIDTHS = [1e6 / 8, 1e7 / 8, 1e8 / 8, 1e9 / 8]  # 1 Mbps .. 1 Gbps, in bytes/s
RTTS = [0.0, 20.0]


def _load(name: str):
    model = os.path.join(LIGHT_DIR, name + ".onnx") if name.startswith("light_") else zoo.build(name)
    graph = import_model(model)
    return PassManager([DeadCodeElimination()])(graph).graph


@pytest.mark.parametrize("name", REAL_MODELS)
def test_matches_networkx_on_real_models(name):
    graph = _load(name)
    for edge in ["jetson-tx2", "raspberry-pi-4"]:
        costs = annotate_costs(graph, cost_model_for(edge), cost_model_for("t4"))
        base = problem_from_graph(graph, costs, BANDWIDTHS[0], 0.0)
        for bandwidth, rtt in itertools.product(BANDWIDTHS, RTTS):
            problem = base.with_link(bandwidth, rtt)
            got = partition(problem).best
            label = f"{name} on {edge} at {bandwidth * 8 / 1e6:g} Mbps, rtt {rtt} ms"
            assert is_valid(problem, got.on_cloud), label
            assert evaluate(problem, got.on_cloud).total_ms == pytest.approx(got.total_ms, rel=1e-12), label
            oracle = evaluate(problem, whole_graph_networkx(problem)).total_ms
            assert got.total_ms == pytest.approx(oracle, rel=1e-6), label


def test_light_models_are_there():
    assert len(LIGHT_MODELS) >= 5, LIGHT_DIR


# ---------------------------------------------------------------- hand-built cases


def _problem(edge_ms, cloud_ms, producer, nbytes, is_output, consumers, bandwidth, rtt_ms) -> SplitProblem:
    ptr = np.concatenate([[0], np.cumsum([len(c) for c in consumers])]).astype(np.int64)
    return SplitProblem(
        edge_ms=np.asarray(edge_ms, dtype=float),
        cloud_ms=np.asarray(cloud_ms, dtype=float),
        producer=np.asarray(producer, dtype=np.int64),
        nbytes=np.asarray(nbytes, dtype=np.int64),
        is_output=np.asarray(is_output, dtype=bool),
        cons_ptr=ptr,
        cons_idx=np.array([c for cs in consumers for c in cs], dtype=np.int64),
        bandwidth=float(bandwidth),
        rtt_ms=float(rtt_ms),
    )


def _fan_out_problem() -> SplitProblem:
    """x -> A -> t (1000 B) -> C1, C2, C3 -> M -> out.

    Nodes A, C1, C2, C3, M; values x (100 kB input), t, y1, y2, y3 (1000 B each)
    and out (10 B). 1 MB/s, so t costs 1 ms on the wire; the round trip is 2 ms.
    """
    return _problem(
        edge_ms=[1, 10, 10, 10, 1],
        cloud_ms=[1, 1, 1, 1, 1],
        producer=[-1, 0, 1, 2, 3, 4],
        nbytes=[100_000, 1000, 1000, 1000, 1000, 10],
        is_output=[0, 0, 0, 0, 0, 1],
        consumers=[[0], [1, 2, 3], [4], [4], [4], []],
        bandwidth=1e6,
        rtt_ms=2.0,
    )


def _naive_total(problem: SplitProblem, on_cloud: np.ndarray) -> float:
    """Price an assignment charging each edge -> cloud *consumer edge* separately (the naive model)."""
    value_of = problem.value_of_consumer_edge()
    prod = problem.producer[value_of]
    prod_cloud = np.where(prod >= 0, on_cloud[np.maximum(prod, 0)], False)
    up = on_cloud[problem.cons_idx] & ~prod_cloud
    down = problem.is_output & (problem.producer >= 0) & on_cloud[np.maximum(problem.producer, 0)]
    wire = problem.transfer_ms[value_of[up]].sum() + problem.transfer_ms[down].sum()
    crossing = bool(up.any() or down.any())
    return float(problem.edge_ms[~on_cloud].sum() + problem.cloud_ms[on_cloud].sum() + wire
                 + (problem.rtt_ms if crossing else 0.0))


def test_fan_out_tensor_is_sent_once():
    problem = _fan_out_problem()
    # A on the edge; C1..C3 and M on the cloud: t goes up once, out comes back.
    expected = 1 + (1 + 1 + 1 + 1) + 1.0 + 0.01 + 2.0
    best = partition(problem).best
    assert best.total_ms == pytest.approx(expected, **EXACT)
    assert best.on_cloud.tolist() == [False, True, True, True, True]
    assert best.up_bytes == 1000 and best.down_bytes == 10
    assert brute_force(problem)[0] == pytest.approx(expected, **EXACT)

    # Charging t once per cloud consumer would price the same split at 2 ms more,
    # and its own optimum differs from the true one.
    assert _naive_total(problem, best.on_cloud) == pytest.approx(expected + 2.0, **EXACT)
    naive_best = min(
        _naive_total(problem, np.array(bits, dtype=bool))
        for bits in itertools.product([False, True], repeat=problem.num_nodes)
        if is_valid(problem, np.array(bits, dtype=bool))
    )
    assert naive_best > expected + 1.0


def _chain_problem(edge_ms, cloud_ms, nbytes, bandwidth, rtt_ms) -> SplitProblem:
    """x -> N0 -> v1 -> N1 -> ... -> v_n (graph output); nbytes has n + 1 entries."""
    n = len(edge_ms)
    return _problem(edge_ms, cloud_ms, [-1, *range(n)], nbytes, [0] * n + [1],
                    [[i] for i in range(n)] + [[]], bandwidth, rtt_ms)


def test_edge_only_when_the_link_is_slow():
    problem = _chain_problem([3, 3, 3], [1, 1, 1], [500, 400, 300, 10], bandwidth=1000.0, rtt_ms=0.0)
    result = partition(problem)
    assert result.best.kind == "edge-only"
    assert result.best.total_ms == pytest.approx(9.0, **EXACT)
    assert result.best.transfer_ms == 0.0 and result.best.cut_values == []
    assert brute_force(problem)[0] == pytest.approx(9.0, **EXACT)


def test_edge_only_when_the_round_trip_eats_the_gain():
    """Without the round trip the cloud wins by 1 ms; with a 3 ms round trip it loses."""
    problem = _chain_problem([2], [1], [0, 0], bandwidth=1000.0, rtt_ms=3.0)
    result = partition(problem)
    assert result.best.kind == "edge-only"
    assert result.best.total_ms == pytest.approx(2.0, **EXACT)
    assert result.cloud_only.total_ms == pytest.approx(4.0, **EXACT)

    no_rtt = partition(problem.with_link(1000.0, 0.0))
    assert no_rtt.best.kind == "cloud-only"
    assert no_rtt.best.total_ms == pytest.approx(1.0, **EXACT)


def test_cloud_only_when_the_input_is_small():
    problem = _chain_problem([10, 10, 10], [1, 1, 1], [2, 50, 50, 3], bandwidth=1000.0, rtt_ms=3.0)
    result = partition(problem)
    assert result.best.kind == "cloud-only"
    expected = 3 * 1 + 2 + 3 + 3.0  # cloud compute + input up + output down + round trip
    assert result.best.total_ms == pytest.approx(expected, **EXACT)
    assert result.best.cut_values == ["0"] and result.best.returned_values == ["3"]
    assert brute_force(problem)[0] == pytest.approx(expected, **EXACT)


def test_split_in_the_middle_of_a_chain():
    """Cheap to compute the first layer on the edge (it shrinks the tensor), the rest on the cloud."""
    problem = _chain_problem([1, 10, 10], [1, 1, 1], [100, 5, 50, 3], bandwidth=1000.0, rtt_ms=3.0)
    result = partition(problem)
    assert result.best.on_cloud.tolist() == [False, True, True]
    assert result.best.total_ms == pytest.approx(1 + 5 + 2 + 3 + 3.0, **EXACT)
    assert result.best.cut_values == ["1"]


# ---------------------------------------------------------------- known limitations (see report)


def _dead_node_problem() -> SplitProblem:
    """n0 reads nothing and feeds nothing (dead): edge 9 ms, cloud 4 ms; n1 makes the graph output v1.

    Optimum: n0 on the cloud, n1 on the edge, nothing crosses: 4 ms.
    """
    return _problem(edge_ms=[9, 0], cloud_ms=[4, 2], producer=[-1, 1], nbytes=[19, 26],
                    is_output=[0, 1], consumers=[[1], []], bandwidth=1000.0, rtt_ms=3.0)


def _huge_cost_problem() -> SplitProblem:
    """x -> P -> p -> Q -> q (output); y -> B -> b (output). P's cloud cost is 1e9 ms (pinned to the edge).

    Optimum: Q on the cloud (5 ms -> 1 ms + 0.002 ms on the wire), B on the
    edge (0.006 ms < 0.001 ms + 0.008 ms on the wire): 2.008 ms.
    """
    return _problem(edge_ms=[1.0, 5.0, 0.006], cloud_ms=[1e9, 1.0, 0.001], producer=[-1, -1, 0, 1, 2],
                    nbytes=[1000, 4, 1, 1, 4], is_output=[0, 0, 0, 1, 1], consumers=[[0], [2], [1], [], []],
                    bandwidth=1e6, rtt_ms=0.0)


def test_oracles_on_the_known_limitations():
    dead = _dead_node_problem()
    assert brute_force(dead)[0] == pytest.approx(4.0, **EXACT)
    assert evaluate(dead, whole_graph_networkx(dead)).total_ms == pytest.approx(4.0, **EXACT)
    huge = _huge_cost_problem()
    assert brute_force(huge)[0] == pytest.approx(2.008, **EXACT)
    assert evaluate(huge, whole_graph_networkx(huge)).total_ms == pytest.approx(2.008, **EXACT)


def test_dead_node_is_rejected():
    """partition() needs dead-code-free problems (splitc.compile runs DCE): it says so."""
    with pytest.raises(ValueError, match="reaches no graph output; run dead-code elimination first"):
        partition(_dead_node_problem())


def test_huge_cost_does_not_drown_small_ones():
    assert partition(_huge_cost_problem()).best.total_ms == pytest.approx(2.008, **EXACT)


def test_real_model_sweep_covers_every_kind():
    """The real-model sweep above is not only edge-only: it meets splits and cloud-only too."""
    kinds = set()
    for name in ["light_bvlc_alexnet", "light_squeezenet", "light_resnet50", "resnet_blocks", "two_in_two_out"]:
        graph = _load(name)
        for edge in ["jetson-tx2", "raspberry-pi-4"]:
            costs = annotate_costs(graph, cost_model_for(edge), cost_model_for("t4"))
            base = problem_from_graph(graph, costs, BANDWIDTHS[0], 0.0)
            kinds |= {partition(base.with_link(b, r)).best.kind for b, r in itertools.product(BANDWIDTHS, RTTS)}
    assert kinds == {"edge-only", "cloud-only", "split"}


def test_differences_below_the_integer_resolution_are_solved_exactly(monkeypatch):
    """Costs that differ by less than the int32 max-flow's resolution: the certified re-solve finds the optimum.

    With the certification threshold at zero every uncertain segment is re-solved exactly.
    """
    from splitc.partition import mincut

    monkeypatch.setattr(mincut, "_CERTIFY", 0.0)
    rng = np.random.default_rng(7)
    for _ in range(30):
        problem = random_dag_problem(rng, 12, float_costs=True, bandwidth=1e9)
        problem.edge_ms = 1000.0 + rng.random(problem.num_nodes) * 1e-6
        problem.cloud_ms = 1000.0 + rng.random(problem.num_nodes) * 1e-6
        best, _ = brute_force(problem)
        assert partition(problem).best.total_ms == pytest.approx(best, rel=1e-12, abs=1e-12)


def test_non_finite_costs_are_rejected():
    problem = random_dag_problem(np.random.default_rng(1), 6)
    problem.cloud_ms = problem.cloud_ms.astype(float)
    problem.cloud_ms[0] = np.inf
    with pytest.raises(ValueError, match="must be finite"):
        partition(problem)
