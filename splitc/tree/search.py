"""Baselines for the exact tree policy: random search, ε-greedy construction, and the fixed plan.

The search baselines get a budget of *evaluations*; each evaluation computes
one candidate deterministic policy's exact expected latency (stationary start
class, :func:`splitc.tree.policy.evaluate`), so that, at equal budgets, they
differ from the exact solver only in how candidates are chosen. Both draw
actions only among the feasible ones (those whose every leaf meets the
accuracy bound), so every candidate is feasible.

* **Random search**: each candidate picks, at every reachable (fork, path,
  class), a feasible action uniformly at random.
* **ε-greedy construction**: candidates are built fork by fork; at each
  (fork, path, class) an untried action is taken first, then with
  probability ε a random one, else the one whose candidates so far had the
  lowest mean expected latency (each evaluated candidate's value is credited
  to every (state, class, action) it used).
* **Fixed plan** (DNN surgery): the single best composition for the mean
  bandwidth, played whatever the class.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from splitc.errors import SplitcError
from splitc.tree.markov import BandwidthChain
from splitc.tree.policy import Nodes, TreePolicy, evaluate, offload_ms
from splitc.tree.spec import Action, Leaf, Path, TreeSpec, feasible_actions, leaves

__all__ = ["FixedPlan", "SearchResult", "epsilon_greedy", "fixed_plan", "fixed_policy", "random_search"]

Chooser = Callable[[int, Path, int, list[Action]], Action]


@dataclass
class SearchResult:
    """The best policy a search found, its stationary mean latency, and the best value after each evaluation."""

    policy: TreePolicy
    mean_ms: float
    history: list[float] = field(default_factory=list)


class FixedPlan(NamedTuple):
    """One composition played whatever the bandwidth, and its latency at the bandwidth it was chosen for."""

    leaf: Leaf
    latency_ms: float


def _build(table: dict[tuple[int, Path], list[Action]], k: int, choose: Chooser) -> Nodes:
    nodes: Nodes = {}
    stack: list[tuple[int, Path]] = [(0, ())]
    while stack:
        fork, path = stack.pop()
        if (fork, path) in nodes or (fork, path) not in table:
            continue
        nodes[(fork, path)] = tuple(choose(fork, path, c, table[(fork, path)]) for c in range(k))
        stack += [(fork + 1, path + (a.index,)) for a in nodes[(fork, path)] if a.kind == "run"]
    return nodes


def _policy(nodes: Nodes, values: np.ndarray, chain: BandwidthChain, max_drop: float) -> TreePolicy:
    return TreePolicy(nodes, chain.edges, chain.bandwidth, chain.stationary, values, chain.step_s, max_drop)


def _search(spec: TreeSpec, chain: BandwidthChain, budget: int, max_drop: float,
            propose: Callable[[dict], Nodes], learn: Callable[[Nodes, float], None]) -> SearchResult:
    if budget < 1:
        raise SplitcError(f"a search needs a budget of at least 1 evaluation, not {budget}")
    table = feasible_actions(spec, max_drop)
    if not table.get((0, ())):
        raise SplitcError(f"no composition of the model tree has an accuracy-drop bound <= {max_drop}")
    best, history = None, []
    for _ in range(budget):
        nodes = propose(table)
        values = evaluate(nodes, spec, chain, max_drop)
        mean = float(np.dot(chain.stationary, values))
        learn(nodes, mean)
        if best is None or mean < best[0]:
            best = (mean, nodes, values)
        history.append(best[0])
    return SearchResult(_policy(best[1], best[2], chain, max_drop), best[0], history)


def random_search(spec: TreeSpec, chain: BandwidthChain, budget: int, max_drop: float = math.inf,
                  seed: int = 0) -> SearchResult:
    """The best of ``budget`` uniformly random feasible policies."""
    rng = random.Random(seed)
    k = chain.num_classes
    return _search(spec, chain, budget, max_drop,
                   lambda table: _build(table, k, lambda f, p, c, actions: rng.choice(actions)),
                   lambda nodes, mean: None)


def epsilon_greedy(spec: TreeSpec, chain: BandwidthChain, budget: int, max_drop: float = math.inf,
                   epsilon: float = 0.1, seed: int = 0) -> SearchResult:
    """ε-greedy tree construction with ``budget`` evaluated candidates (see the module's description)."""
    if not 0 <= epsilon <= 1:
        raise SplitcError(f"epsilon must be in [0, 1], not {epsilon}")
    rng = random.Random(seed)
    k = chain.num_classes
    credit: dict[tuple[int, Path, int, Action], list[float]] = {}

    def choose(fork: int, path: Path, c: int, actions: list[Action]) -> Action:
        untried = [a for a in actions if (fork, path, c, a) not in credit]
        if untried:
            return rng.choice(untried)
        if rng.random() < epsilon:
            return rng.choice(actions)
        return min(actions, key=lambda a: credit[(fork, path, c, a)][0] / credit[(fork, path, c, a)][1])

    def learn(nodes: Nodes, mean: float) -> None:
        for (fork, path), actions in nodes.items():
            for c, action in enumerate(actions):
                entry = credit.setdefault((fork, path, c, action), [0.0, 0])
                entry[0] += mean
                entry[1] += 1

    return _search(spec, chain, budget, max_drop, lambda table: _build(table, k, choose), learn)


def leaf_ms(spec: TreeSpec, leaf: Leaf, bandwidth: float) -> float:
    """Latency (ms) of one composition at a constant ``bandwidth`` (bytes/s)."""
    edge = spec.edge_ms(leaf.path)
    if leaf.option is None:
        return edge
    option = spec.options(leaf.fork, leaf.path)[leaf.option]
    return edge + float(offload_ms(spec, leaf.fork, leaf.path, option.nbytes, bandwidth))


def fixed_plan(spec: TreeSpec, mean_bw: float, max_drop: float = math.inf) -> FixedPlan:
    """The single composition of least latency at bandwidth ``mean_bw`` (bytes/s) meeting ``max_drop``."""
    if not mean_bw > 0:
        raise SplitcError(f"the plan's bandwidth must be > 0 bytes/s, not {mean_bw}")
    best = min(((leaf_ms(spec, leaf, mean_bw), leaf) for leaf in leaves(spec, max_drop)),
               key=lambda pair: pair[0], default=None)
    if best is None:
        raise SplitcError(f"no composition of the model tree has an accuracy-drop bound <= {max_drop}")
    return FixedPlan(best[1], best[0])


def fixed_policy(plan: FixedPlan | Leaf, spec: TreeSpec, chain: BandwidthChain,
                 max_drop: float = math.inf) -> TreePolicy:
    """A tree policy that plays one composition in every class, evaluated under ``chain``."""
    leaf = plan.leaf if isinstance(plan, FixedPlan) else plan
    k = chain.num_classes
    nodes: Nodes = {(f, leaf.path[:f]): (Action("run", leaf.path[f]),) * k for f in range(len(leaf.path))}
    if leaf.option is not None:
        label = spec.options(leaf.fork, leaf.path)[leaf.option].label
        nodes[(leaf.fork, leaf.path)] = (Action("offload", leaf.option, label),) * k
    return _policy(nodes, evaluate(nodes, spec, chain, max_drop), chain, max_drop)
