"""The exact model-tree policy: backward induction over (fork, path, bandwidth class).

The state at a decision is the fork f, the path of variants run so far and
the bandwidth class k observed at the fork. With T_k(n) the chain's expected
time to deliver n bytes from a decision in class k (``chain.transfer_ms``:
measured on the traces the chain was fitted from, else ``n / b_k``) and its
transition matrix P(d) over a duration d:

* offload with option o:  ``rtt + T_k(bytes_o) + cloud_ms(f, path)``;
* run variant v of block f:  ``edge_ms_v + sum_k' P(edge_ms_v)[k, k'] V(f+1, path+v, k')``;
* at fork B:  ``V = 0`` (the result is on the edge).

V(f, path, k) is the minimum over the *feasible* actions: an offload whose
drop bound is <= max_drop, or a variant from which some feasible leaf can be
reached. Feasibility does not depend on the class, so every state on the
policy's branches has a finite value and every reachable leaf satisfies the
bound. Backward induction visits each (fork, path) once: with V_f variants at
block f, O_f options and K classes it examines
``sum_f prod_{i<f} V_i * (O_f + V_f) * K`` actions, each in O(K) time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from splitc.errors import SplitcError
from splitc.tree.markov import BandwidthChain
from splitc.tree.spec import Action, Leaf, Path, TreeSpec

__all__ = ["FORMAT", "TreePolicy", "evaluate", "offload_ms", "solve"]

FORMAT = "splitc-model-tree"
Nodes = dict[tuple[int, Path], tuple[Action, ...]]


@dataclass(eq=False)
class TreePolicy:
    """A deterministic tree policy: the action per class at each reachable (fork, path).

    ``edges`` and ``bandwidth`` (bytes/s) are the chain's class edges and
    representatives, ``expected_ms`` the expected latency from each start
    class, ``stationary`` the class distribution ``mean_ms`` weights it by.
    ``examined`` counts the actions whose value the solver computed.
    """

    nodes: Nodes
    edges: np.ndarray
    bandwidth: np.ndarray
    stationary: np.ndarray
    expected_ms: np.ndarray
    step_s: float
    max_drop: float = math.inf
    examined: int = field(default=0)

    @property
    def num_classes(self) -> int:
        """K, the number of bandwidth classes."""
        return len(self.bandwidth)

    @property
    def mean_ms(self) -> float:
        """Expected latency with the start class drawn from the stationary distribution."""
        return float(np.dot(self.stationary, self.expected_ms))

    def classify(self, rate):
        """Class of a measured rate (bytes/s), as the chain classifies it."""
        return np.searchsorted(self.edges, rate, side="left")

    def action(self, fork: int, path: Path, cls: int) -> Action:
        """The decision at ``fork`` after ``path`` in class ``cls``."""
        try:
            return self.nodes[(fork, tuple(path))][cls]
        except (KeyError, IndexError):
            raise SplitcError(f"the tree policy has no decision at fork {fork}, path {tuple(path)}, "
                              f"class {cls}") from None

    def leaves(self) -> list[Leaf]:
        """The compositions the policy can reach (in some class sequence)."""
        found: set[Leaf] = set()
        for (fork, path), actions in self.nodes.items():
            for action in actions:
                if action.kind == "offload":
                    found.add(Leaf(fork, path, action.index, action.label))
                elif (fork + 1, path + (action.index,)) not in self.nodes:
                    found.add(Leaf(fork + 1, path + (action.index,), None, None))
        return sorted(found, key=lambda leaf: (leaf.fork, leaf.path, -1 if leaf.option is None else leaf.option))

    def to_json(self) -> str:
        """The policy as JSON text (``from_json`` reads it back)."""
        nodes = [{"fork": fork, "path": list(path),
                  "actions": [{"offload": a.index, "label": a.label} if a.kind == "offload" else {"run": a.index}
                              for a in actions]}
                 for (fork, path), actions in sorted(self.nodes.items())]
        return json.dumps({
            "format": FORMAT, "version": 1, "step_s": self.step_s,
            "max_drop": None if math.isinf(self.max_drop) else self.max_drop,
            "edges_Bps": [float(x) for x in self.edges], "bandwidth_Bps": [float(x) for x in self.bandwidth],
            "stationary": [float(x) for x in self.stationary], "expected_ms": [float(x) for x in self.expected_ms],
            "nodes": nodes}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> TreePolicy:
        """Read a policy written by ``to_json``; ``SplitcError`` naming the problem if it is malformed."""
        try:
            data = json.loads(text)
            if data.get("format") != FORMAT or data.get("version") != 1:
                raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}, "
                                 f"expected {FORMAT!r} version 1")
            k = len(data["bandwidth_Bps"])
            nodes = {(int(n["fork"]), tuple(int(v) for v in n["path"])): tuple(_action(a) for a in n["actions"])
                     for n in data["nodes"]}
            if any(len(actions) != k for actions in nodes.values()) or len(data["edges_Bps"]) != k - 1:
                raise ValueError(f"every node needs one action per class ({k})")
            max_drop = math.inf if data["max_drop"] is None else float(data["max_drop"])
            return cls(nodes, np.array(data["edges_Bps"], float), np.array(data["bandwidth_Bps"], float),
                       np.array(data["stationary"], float), np.array(data["expected_ms"], float),
                       float(data["step_s"]), max_drop)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise SplitcError(f"bad model-tree policy: {exc}") from None


def _action(item: Mapping) -> Action:
    if "run" in item:
        return Action("run", int(item["run"]))
    return Action("offload", int(item["offload"]), str(item.get("label", "")))


def offload_ms(spec: TreeSpec, fork: int, path: Path, nbytes, bandwidth):
    """Latency (ms) of offloading ``nbytes`` at ``fork`` after ``path`` over a constant ``bandwidth`` (bytes/s)."""
    return spec.rtt_ms + np.asarray(nbytes) / np.asarray(bandwidth) * 1e3 + spec.cloud_ms(fork, path)


class _Transitions:
    """The chain's matrix per block duration, computed once per duration."""

    def __init__(self, chain: BandwidthChain) -> None:
        self.chain, self.cache = chain, {}

    def __call__(self, edge_ms: float) -> np.ndarray:
        if edge_ms not in self.cache:
            self.cache[edge_ms] = self.chain.matrix_for(edge_ms / 1e3)
        return self.cache[edge_ms]


def solve(spec: TreeSpec, chain: BandwidthChain, max_drop: float = math.inf) -> TreePolicy:
    """The policy of minimum expected latency from every start class whose leaves all have drop <= max_drop."""
    k, blocks = chain.num_classes, spec.num_blocks
    move = _Transitions(chain)
    value = {path: np.zeros(k) if spec.edge_drop(path) <= max_drop else np.full(k, math.inf)
             for path in spec.paths(blocks)}
    best: Nodes = {}
    examined = 0
    for fork in range(blocks - 1, -1, -1):
        here = {}
        for path in spec.paths(fork):
            actions, rows = [], []
            options = [(j, o) for j, o in enumerate(spec.options(fork, path)) if o.drop <= max_drop]
            for j, option in options:
                actions.append(Action("offload", j, option.label))
                rows.append(spec.rtt_ms + chain.transfer_ms(option.nbytes) + spec.cloud_ms(fork, path))
            for v, variant in enumerate(spec.blocks[fork].variants):
                after = value[path + (v,)]
                if np.isfinite(after).all():
                    actions.append(Action("run", v))
                    rows.append(variant.edge_ms + move(variant.edge_ms) @ after)
            examined += len(actions) * k
            if not actions:
                here[path] = np.full(k, math.inf)
                continue
            table = np.array(rows)
            pick = np.argmin(table, axis=0)
            best[(fork, path)] = tuple(actions[i] for i in pick)
            here[path] = table[pick, np.arange(k)]
        value = here
    if not np.isfinite(value[()]).all():
        raise SplitcError(f"no composition of the model tree has an accuracy-drop bound <= {max_drop}")
    return TreePolicy(reachable(best), chain.edges, chain.bandwidth, chain.stationary, value[()], chain.step_s,
                      max_drop, examined)


def reachable(nodes: Nodes) -> Nodes:
    """The nodes reachable from fork 0 (every class possible at every fork)."""
    found: Nodes = {}
    stack = [(0, ())]
    while stack:
        key = stack.pop()
        if key in found or key not in nodes:
            continue
        found[key] = nodes[key]
        stack += [(key[0] + 1, key[1] + (a.index,)) for a in nodes[key] if a.kind == "run"]
    return found


def evaluate(policy: TreePolicy | Nodes, spec: TreeSpec, chain: BandwidthChain,
             max_drop: float | None = None) -> np.ndarray:
    """Exact expected latency (ms) of a deterministic policy from each start class; inf if a leaf breaks max_drop.

    ``max_drop`` defaults to the policy's own bound (none for a bare ``nodes`` mapping).
    """
    nodes = policy.nodes if isinstance(policy, TreePolicy) else policy
    if max_drop is None:
        max_drop = policy.max_drop if isinstance(policy, TreePolicy) else math.inf
    k, move, memo = chain.num_classes, _Transitions(chain), {}

    def value(fork: int, path: Path) -> np.ndarray:
        if fork == spec.num_blocks:
            return np.zeros(k) if spec.edge_drop(path) <= max_drop else np.full(k, math.inf)
        if (fork, path) not in memo:
            actions = nodes.get((fork, path))
            if actions is None or len(actions) != k:
                raise SplitcError(f"the policy has no decision for each of the {k} classes at fork {fork}, "
                                  f"path {path}")
            out = np.empty(k)
            options = spec.options(fork, path) if any(a.kind == "offload" for a in actions) else []
            for c, action in enumerate(actions):
                if action.kind == "offload":
                    option = options[action.index]
                    out[c] = (spec.rtt_ms + chain.transfer_ms(option.nbytes)[c] + spec.cloud_ms(fork, path)
                              if option.drop <= max_drop else math.inf)
                else:
                    variant = spec.blocks[fork].variants[action.index]
                    after = value(fork + 1, path + (action.index,))
                    out[c] = (variant.edge_ms + move(variant.edge_ms)[c] @ after
                              if np.isfinite(after).all() else math.inf)
            memo[(fork, path)] = out
        return memo[(fork, path)]

    return value(0, ())
