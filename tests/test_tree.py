"""The model tree: trace parsing, the bandwidth Markov chain, the exact policy and its baselines."""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import pytest

from splitc.errors import SplitcError
from splitc.tree import (Action, BandwidthChain, Block, Trace, TraceError, TreePolicy, TreeSpec, Variant,
                         epsilon_greedy, evaluate, fit_chain, fixed_plan, fixed_policy, leaf_latencies, leaves,
                         load_trace, oracle, random_search, simulate, solve, synthetic_spec, synthetic_trace)
from splitc.tree.markov import class_edges
from splitc.tree.simulate import measured_rate

# ----------------------------------------------------------------------------- traces


@pytest.mark.parametrize("text, line, words", [
    ("", None, "empty"),
    ("\n\n", None, "empty"),
    ("1\nabc\n", 2, "not a millisecond timestamp"),
    ("1\n\n2.5\n", 3, "not a millisecond timestamp"),
    ("1\n-4\n", 2, "not a millisecond timestamp"),
    ("5\n7\n3\n", 3, "smaller than the one before"),
    ("0\n0\n0\n", 3, "lasts 0 ms"),
])
def test_bad_traces_name_the_file_and_line(tmp_path, text: str, line: int | None, words: str) -> None:
    path = tmp_path / "link.up"
    path.write_text(text)
    with pytest.raises(TraceError) as caught:
        load_trace(path)
    message = str(caught.value)
    assert isinstance(caught.value, SplitcError) and "\n" not in message
    assert message.startswith(f"{path}:{line}:" if line else f"{path}:") and words in message


def test_missing_trace_file_is_a_user_error(tmp_path) -> None:
    with pytest.raises(SplitcError, match="cannot read the trace"):
        load_trace(tmp_path / "absent.up")


def test_one_packet_per_millisecond_is_12_mbps(tmp_path) -> None:
    path = tmp_path / "fixed.up"
    path.write_text("1\n")
    trace = load_trace(path)
    assert trace.period_ms == 1 and trace.mean_rate_bps == pytest.approx(12e6)
    assert np.allclose(trace.rate_bps(0.01, duration_s=0.1), 12e6)


def test_opportunities_repeat_with_the_period() -> None:
    trace = Trace([2, 2, 5])  # opportunities at 2, 2, 5, 7, 7, 10, 12, 12, 15, ...
    assert trace.count([1, 2, 5, 6, 7, 10]).tolist() == [0, 2, 3, 3, 5, 6]
    assert trace.count(5, inclusive=False) == 2
    assert trace.opportunity_ms([0, 1, 2, 3, 4, 5, 6]).tolist() == [2, 2, 5, 7, 7, 10, 12]
    assert trace.delivery_ms(0, 1500) == 2 and trace.delivery_ms(0, 3000) == 2
    assert trace.delivery_ms(0, 3001) == 5 and trace.delivery_ms(3, 4500) == 7 and trace.delivery_ms(3, 4501) == 10
    assert trace.delivery_ms(5.5, 1) == 7 and trace.delivery_ms(4.0, 0) == 4.0


def test_synthetic_trace_holds_each_rate() -> None:
    trace = Trace(synthetic_trace([2.0, 8.0, 0.5], 1.0))
    assert trace.period_ms == 3000
    assert trace.rate_bps(1.0) == pytest.approx([2e6, 8e6, 0.5e6], rel=0.01)
    assert trace.rate_bps(1.0, duration_s=6.0)[3:] == pytest.approx([2e6, 8e6, 0.5e6], rel=0.01)
    with pytest.raises(SplitcError):
        synthetic_trace([0.0, 0.0], 1.0)
    with pytest.raises(SplitcError):
        synthetic_trace([-1.0], 1.0)


# ----------------------------------------------------------------------------- Markov chain

P01, P10 = 0.2, 0.3  # 2-state link: slow -> fast, fast -> slow per 100 ms step


def two_state_trace(steps: int, seed: int = 7, mbps: tuple[float, float] = (2.4, 9.6)) -> tuple[Trace, np.ndarray]:
    rng = np.random.default_rng(seed)
    states = np.zeros(steps, dtype=int)
    for i in range(1, steps):
        flip = P01 if states[i - 1] == 0 else P10
        states[i] = 1 - states[i - 1] if rng.random() < flip else states[i - 1]
    return Trace(synthetic_trace(np.where(states == 1, mbps[1], mbps[0]).tolist(), 0.1)), states


def test_markov_fit_recovers_the_transition_probabilities() -> None:
    trace, states = two_state_trace(6000)
    chain = fit_chain(trace, classes=2, step_s=0.1)
    assert chain.num_classes == 2
    assert chain.matrix == pytest.approx(np.array([[1 - P01, P01], [P10, 1 - P10]]), abs=0.04)
    assert chain.counts.sum() == len(states)  # every step, and the wrap-around of the repeating trace
    assert chain.mean_bandwidth == pytest.approx([2.4e6 / 8, 9.6e6 / 8], rel=0.02)
    assert chain.stationary @ chain.matrix == pytest.approx(chain.stationary)
    assert chain.stationary == pytest.approx([P10 / (P01 + P10), P01 / (P01 + P10)], abs=0.05)
    assert chain.classify([1e5, 1e6]).tolist() == [0, 1]


def test_matrix_for_other_durations() -> None:
    chain = fit_chain(two_state_trace(500)[0], classes=2, step_s=0.1)
    step = chain.matrix
    assert chain.matrix_for(0.0) == pytest.approx(np.eye(2))
    assert chain.matrix_for(0.3) == pytest.approx(step @ step @ step)
    assert chain.matrix_for(0.05) == pytest.approx(0.5 * np.eye(2) + 0.5 * step)
    assert chain.matrix_for(0.17).sum(axis=1) == pytest.approx([1.0, 1.0])


def test_harmonic_representative_gives_the_mean_transfer_time() -> None:
    rates_mbps = [1.2, 2.4, 4.8, 9.6, 12.0, 24.0]
    chain = fit_chain(Trace(synthetic_trace(rates_mbps, 0.1)), classes=2, step_s=0.1)
    windows = np.array(rates_mbps) * 1e6 / 8
    for c in range(chain.num_classes):
        members = windows[chain.classify(windows) == c]
        assert 1e6 / chain.bandwidth[c] == pytest.approx(np.mean(1e6 / members), rel=0.01)
        assert chain.bandwidth[c] <= chain.mean_bandwidth[c]
    assert fit_chain(Trace(synthetic_trace(rates_mbps, 0.1)), 2, 0.1, "mean").bandwidth == pytest.approx(
        chain.mean_bandwidth)


def test_offload_times_are_the_delivery_times_measured_from_each_class() -> None:
    # outages of five steps, a fast second and a slow half second: the class is measured on the step before
    # a decision, the bytes cross in the windows after it
    trace = Trace(synthetic_trace(([0.0] * 5 + [6.0] * 10 + [0.5] * 5) * 3, 0.1))
    chain = fit_chain(trace, classes=2, step_s=0.1)
    starts = trace.period_ms + np.arange(0.0, trace.period_ms, 1.0)
    classes = chain.classify(measured_rate(trace, starts, 0.1))
    for nbytes in (1500, 30_000):
        taken = trace.delivery_ms(starts, nbytes) - starts
        replayed = np.array([taken[classes == c].mean() for c in range(chain.num_classes)])
        assert chain.transfer_ms(nbytes) == pytest.approx(replayed, rel=0.02, abs=0.1)  # 5 ms vs 1 ms grids
    # n / b_k alone is off by a factor of about 2.6 in the outage class and 0.5 in the fast one
    assert 30_000 / chain.bandwidth[0] * 1e3 > 2 * chain.transfer_ms(30_000)[0]
    assert 30_000 / chain.bandwidth[1] * 1e3 < 0.6 * chain.transfer_ms(30_000)[1]
    # so the solved policy's expected latency is what its replay measures
    spec = TreeSpec([Block("b0", [Variant("base", 150.0)])], lambda f, p: [("raw", 30_000.0, 0.0)],
                    lambda f, p: 5.0, lambda p: 0.0, 20.0)
    policy = solve(spec, chain)
    assert [a.kind for a in policy.nodes[(0, ())]] == ["run", "offload"]
    replay = simulate(policy, spec, trace, np.arange(0.0, trace.period_ms / 1e3, 0.001))
    assert policy.mean_ms == pytest.approx(replay.mean(), rel=0.02)
    harmonic = dataclasses.replace(chain, transfer=None, _powers={})
    assert abs(evaluate(policy, spec, harmonic) @ chain.stationary / replay.mean() - 1) > 0.1


def test_class_edges_never_split_equal_rates() -> None:
    assert class_edges(np.array([1.0] * 7 + [5.0] * 3), 2).tolist() == [3.0]
    assert class_edges(np.array([4.0] * 10), 3).size == 0
    assert fit_chain(Trace(synthetic_trace([6.0], 2.0)), classes=3, step_s=0.1).num_classes == 1
    assert fit_chain(two_state_trace(300)[0], classes=4, step_s=0.1).num_classes == 2


# ----------------------------------------------------------------------------- exact policy vs brute force


def random_chain(k: int, seed: int) -> BandwidthChain:
    rng = np.random.default_rng(seed)
    matrix = rng.uniform(0.05, 1.0, (k, k))
    matrix /= matrix.sum(axis=1, keepdims=True)
    values, vectors = np.linalg.eig(matrix.T)
    stationary = np.abs(np.real(vectors[:, np.argmin(abs(values - 1))]))
    bandwidth = np.sort(rng.uniform(5e4, 2e6, k))
    edges = (bandwidth[1:] + bandwidth[:-1]) / 2
    return BandwidthChain(0.05, edges, bandwidth, bandwidth, matrix, np.zeros((k, k)), stationary / stationary.sum())


def all_actions(spec, fork, path):
    offloads = [Action("offload", j, o.label) for j, o in enumerate(spec.options(fork, path))]
    return offloads + [Action("run", v) for v in range(len(spec.blocks[fork].variants))]


def all_policies(spec, k, fork=0, path=()):
    """Every deterministic policy (as nodes) of the subtree at (fork, path), infeasible ones included."""
    if fork == spec.num_blocks:
        yield {}
        return
    for choice in itertools.product(all_actions(spec, fork, path), repeat=k):
        children = sorted({a.index for a in choice if a.kind == "run"})
        for parts in itertools.product(*(list(all_policies(spec, k, fork + 1, path + (v,))) for v in children)):
            nodes = {(fork, path): choice}
            for part in parts:
                nodes.update(part)
            yield nodes


def forward_value(nodes, spec, chain, max_drop, fork, path, mass) -> float:
    """Expected latency carried by the (unnormalised) class measure ``mass`` at (fork, path); inf if a leaf
    reached with positive mass breaks max_drop."""
    if fork == spec.num_blocks:
        return 0.0 if spec.edge_drop(path) <= max_drop else math.inf
    total, options = 0.0, spec.options(fork, path)
    for v in {a.index for a in nodes[(fork, path)] if a.kind == "run"}:
        part = np.array([m if a == Action("run", v) else 0.0 for m, a in zip(mass, nodes[(fork, path)])])
        edge_ms = spec.blocks[fork].variants[v].edge_ms
        total += part.sum() * edge_ms + forward_value(nodes, spec, chain, max_drop, fork + 1, path + (v,),
                                                      part @ chain.matrix_for(edge_ms / 1e3))
    for m, action, bandwidth in zip(mass, nodes[(fork, path)], chain.bandwidth):
        if action.kind == "offload":
            option = options[action.index]
            if option.drop > max_drop:
                return math.inf
            total += m * (spec.rtt_ms + option.nbytes / bandwidth * 1e3 + spec.cloud_ms(fork, path))
    return total


@pytest.mark.parametrize("seed, k, max_drop", [(1, 2, math.inf), (9, 2, 0.0058), (11, 2, 0.0063), (1, 3, 0.0245)])
def test_backward_induction_equals_brute_force(seed: int, k: int, max_drop: float) -> None:
    spec = synthetic_spec(seed, blocks=2, variants=2, options=2 if k == 2 else 1)
    chain = random_chain(k, seed)
    policy = solve(spec, chain, max_drop)
    best = np.full(k, math.inf)
    for nodes in all_policies(spec, k):
        values = [forward_value(nodes, spec, chain, max_drop, 0, (), np.eye(k)[c]) for c in range(k)]
        best = np.minimum(best, values)
    assert np.isfinite(best).all()
    assert policy.expected_ms == pytest.approx(best, rel=1e-9)
    assert evaluate(policy, spec, chain) == pytest.approx(policy.expected_ms, rel=1e-12)


def drop_of(spec, leaf) -> float:
    if leaf.option is None:
        return spec.edge_drop(leaf.path)
    return spec.options(leaf.fork, leaf.path)[leaf.option].drop


def test_every_reachable_branch_meets_the_accuracy_bound() -> None:
    chain = random_chain(3, 11)
    spec = synthetic_spec(5, blocks=3, variants=3, options=3)
    free = solve(spec, chain)
    tight = min(drop_of(spec, leaf) for leaf in free.leaves() if drop_of(spec, leaf) > 0) * 0.99
    bound = solve(spec, chain, tight)
    assert all(drop_of(spec, leaf) <= tight for leaf in bound.leaves())
    assert bound.mean_ms > free.mean_ms  # the unconstrained optimum used a branch now forbidden
    assert all(leaf in set(leaves(spec, tight)) for leaf in bound.leaves())
    with pytest.raises(SplitcError, match="accuracy-drop bound"):
        solve(spec, chain, -1.0)


def test_a_prefix_without_a_feasible_completion_is_never_taken() -> None:
    # variant 1 of block 0 is nearly free, but everything after it loses 5 % accuracy
    spec = TreeSpec([Block("b0", [Variant("base", 50.0), Variant("tiny", 0.1)]), Block("b1", [Variant("base", 1.0)])],
                    offload_options=lambda f, p: [("f32", 4e5 if f == 0 else 1e3, 0.05 if 1 in p else 0.0)],
                    cloud_ms=lambda f, p: 2.0, edge_drop=lambda p: 0.05 if 1 in p else 0.0, rtt_ms=10.0)
    chain = random_chain(2, 3)
    assert any(1 in leaf.path for leaf in solve(spec, chain).leaves())
    constrained = solve(spec, chain, max_drop=0.01)
    assert all(1 not in path for _, path in constrained.nodes)
    assert all(a != Action("run", 1) for a in constrained.nodes[(0, ())])


# ----------------------------------------------------------------------------- baselines


@pytest.mark.parametrize("seed", [0, 1])
def test_exact_policy_beats_random_search_and_epsilon_greedy_at_every_budget(seed: int) -> None:
    spec = synthetic_spec(seed, blocks=3, variants=3, options=3)
    chain = random_chain(3, seed + 20)
    exact = solve(spec, chain, 0.02)
    for search in (random_search, epsilon_greedy):
        result = search(spec, chain, 150, 0.02, seed=seed)
        assert len(result.history) == 150 and all(np.diff(result.history) <= 0)
        assert all(exact.mean_ms <= value + 1e-9 for value in result.history)
        assert result.mean_ms == pytest.approx(result.history[-1])
        assert evaluate(result.policy, spec, chain) @ chain.stationary == pytest.approx(result.mean_ms)
        assert all(drop_of(spec, leaf) <= 0.02 for leaf in result.policy.leaves())
    with pytest.raises(SplitcError):
        random_search(spec, chain, 0)


def test_fixed_plan_is_the_best_single_composition() -> None:
    spec = synthetic_spec(3, blocks=3, variants=2, options=3)
    chain = random_chain(2, 5)
    plan = fixed_plan(spec, 4e5, max_drop=0.02)
    assert drop_of(spec, plan.leaf) <= 0.02
    for leaf in leaves(spec, 0.02):
        assert plan.latency_ms <= fixed_plan_latency(spec, leaf, 4e5) + 1e-9
    policy = fixed_policy(plan, spec, chain, 0.02)
    assert policy.leaves() == [plan.leaf]
    assert solve(spec, chain, 0.02).mean_ms <= policy.mean_ms + 1e-9


def fixed_plan_latency(spec, leaf, bandwidth: float) -> float:
    edge = sum(spec.blocks[f].variants[v].edge_ms for f, v in enumerate(leaf.path))
    if leaf.option is None:
        return edge
    option = spec.options(leaf.fork, leaf.path)[leaf.option]
    return edge + spec.rtt_ms + option.nbytes / bandwidth * 1e3 + spec.cloud_ms(leaf.fork, leaf.path)


@pytest.mark.parametrize("seed", [0, 2, 4])
def test_constant_bandwidth_reduces_the_tree_to_the_fixed_plan(seed: int) -> None:
    trace = Trace(synthetic_trace([6.0], 2.0))  # one packet every 2 ms: the same rate in every window
    chain = fit_chain(trace, classes=3, step_s=0.1)
    spec = synthetic_spec(seed, blocks=3, variants=3, options=3)
    tree = solve(spec, chain, 0.02)
    plan = fixed_plan(spec, trace.mean_rate_bps / 8, 0.02)
    assert tree.leaves() == [plan.leaf]
    # the expected latency is that of the trace's packets (the first one waits half a packet time on
    # average), within one packet time (2 ms) of the constant-rate figure
    assert abs(tree.mean_ms - plan.latency_ms) <= 2.0
    dense = np.arange(0.0, 2.0, 0.001)
    assert tree.mean_ms == pytest.approx(simulate(tree, spec, trace, dense).mean(), rel=1e-3)
    starts = np.linspace(0.0, 5.0, 23)
    assert simulate(tree, spec, trace, starts) == pytest.approx(leaf_latencies(spec, plan.leaf, trace, starts))


# ----------------------------------------------------------------------------- replay, oracle, JSON


def test_replay_is_never_better_than_the_oracle() -> None:
    trace, _ = two_state_trace(400, seed=3, mbps=(0.6, 6.0))
    chain = fit_chain(trace, classes=2, step_s=0.1)
    spec = synthetic_spec(2, blocks=3, variants=3, options=3)
    tree = solve(spec, chain, 0.02)
    starts = np.arange(0.0, 40.0, 0.13)
    replay, best = simulate(tree, spec, trace, starts), oracle(spec, trace, starts, 0.02)
    assert np.all(best <= replay + 1e-9)
    assert len({leaf for leaf in tree.leaves()}) > 1  # the tree really adapts on this link


def test_policy_json_round_trip_and_errors() -> None:
    spec = synthetic_spec(1, blocks=3, variants=2, options=3)
    chain = random_chain(3, 9)
    policy = solve(spec, chain, 0.015)
    again = TreePolicy.from_json(policy.to_json())
    assert again.nodes == policy.nodes and again.max_drop == 0.015
    assert again.expected_ms == pytest.approx(policy.expected_ms)
    assert evaluate(again, spec, chain) == pytest.approx(policy.expected_ms)
    assert TreePolicy.from_json(solve(spec, chain).to_json()).max_drop == math.inf
    for text in ("{", '{"format": "other", "version": 1}', policy.to_json().replace('"run"', '"walk"')):
        with pytest.raises(SplitcError, match="bad model-tree policy"):
            TreePolicy.from_json(text)


# ----------------------------------------------------------------------------- decision-aware class edges


def test_explicit_class_edges_are_respected() -> None:
    trace = Trace(synthetic_trace([1.0, 3.0, 6.0, 10.0] * 5, 0.1))
    edges = [2.0e6 / 8, 8.0e6 / 8]
    chain = fit_chain(trace, edges=edges, step_s=0.1)
    assert chain.edges.tolist() == edges
    assert chain.num_classes == 3
    assert chain.classify(np.array([1.0, 3.0, 6.0, 10.0]) * 1e6 / 8).tolist() == [0, 1, 1, 2]
    assert chain.counts.sum(axis=1).tolist() == [5, 10, 5]
    empty = fit_chain(trace, edges=[20e6 / 8], step_s=0.1)  # a class no window falls in keeps a finite rate
    assert empty.num_classes == 2 and np.all(np.isfinite(empty.bandwidth))
    with pytest.raises(SplitcError, match="finite"):
        fit_chain(trace, edges=[math.inf])


def one_block_spec(edge_ms: float = 100.0, nbytes: float = 20_000.0) -> TreeSpec:
    """Run on the edge in ``edge_ms`` or send ``nbytes`` (20 ms round trip, 5 ms cloud): break-even 2.13 Mbps."""
    return TreeSpec([Block("b0", [Variant("base", edge_ms)])], lambda fork, path: [("o0", nbytes, 0.0)],
                    lambda fork, path: 5.0, lambda path: 0.0, 20.0)


def test_break_evens_are_where_the_fastest_composition_changes() -> None:
    from splitc.tree.edges import break_evens

    assert break_evens(one_block_spec()) == pytest.approx([20_000 / 0.075])  # 100 = 25 + 20 kB / b
    spec = synthetic_spec(3)
    for rate in break_evens(spec, 0.02):
        # at a break-even two compositions tie for the fastest from some state
        assert rate > 0 and math.isfinite(rate)


def test_decision_edges_separate_the_break_even_inside_a_quantile_class() -> None:
    from splitc.tree.edges import fit_classes

    spec = one_block_spec()
    # a quarter of the windows at each rate, held for a second at a time: the median edge (4.5 Mbps) puts 1 and
    # 3 Mbps, on either side of the break-even (2.13 Mbps), in one class
    rng = np.random.default_rng(3)
    trace = Trace(synthetic_trace(np.repeat(rng.permutation([1.0, 3.0, 6.0, 10.0] * 10), 10).tolist(), 0.1))
    quantile = fit_classes(spec, trace, 2, 0.1, rule="quantile")
    decision = fit_classes(spec, trace, 2, 0.1, rule="decision")
    assert quantile.edges * 8 / 1e6 == pytest.approx([4.5])
    assert decision.num_classes == 2 and 1.2 < decision.edges[0] * 8 / 1e6 < 2.8  # between 1 and 3 Mbps
    assert solve(spec, decision).mean_ms < solve(spec, quantile).mean_ms
    # exactly evaluated on the trace: every request replayed with the trace's delivery times
    starts = np.arange(0.1, trace.period_ms / 1e3, 0.05)
    replayed = {name: simulate(solve(spec, chain), spec, trace, starts).mean()
                for name, chain in (("quantile", quantile), ("decision", decision))}
    assert replayed["decision"] < replayed["quantile"]
    with pytest.raises(SplitcError, match="class rule"):
        fit_classes(spec, trace, 2, 0.1, rule="median")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decision_edges_are_never_worse_than_quantile_edges(seed: int) -> None:
    from splitc.tree.edges import fit_classes
    from splitc.tree.markov import ChainFitter

    spec = synthetic_spec(seed)
    fitter = ChainFitter(two_state_trace(400, seed, (0.8, 9.6))[0], 0.1)
    for classes in (2, 3):
        quantile = fitter.fit(fitter.quantile_edges(classes))
        decision = fit_classes(spec, fitter, classes, max_drop=0.02)
        assert decision.num_classes <= classes
        assert solve(spec, decision, 0.02).mean_ms <= solve(spec, quantile, 0.02).mean_ms + 1e-9
