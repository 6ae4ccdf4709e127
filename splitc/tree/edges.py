"""Decision-aware class edges: bandwidth classes that separate the rates where the best action changes.

Quantile edges cut the window rates into equally likely classes, whatever
the tree does with them; when the rate at which the best decision changes
(sending the input beats running on the edge above it, say) lies inside a
class, the policy cannot tell the rates on either side apart. The rule:

1. **Break-evens.** At a constant rate b every composition reachable from a
   decision state (fork f, path) takes ``c + n / b`` ms from there: c its
   remaining edge time, round trip and cloud time, n the bytes it sends
   (0 for the edge-only ones). For every feasible state (its compositions
   within the accuracy bound), the rates where the fastest composition from
   it changes (the breakpoints of the lower envelope of those lines in 1 / b)
   are break-evens; those inside the range of the traces' window rates are
   kept (``break_evens``).
2. **Candidates.** The break-evens and, as fillers, the quantile edges for
   2 .. K classes, each moved to the midpoint between the two neighbouring
   distinct window rates (as ``splitc.tree.markov.class_edges`` does), so two
   candidates that classify every window alike are one.
3. **Choice.** Greedy by decision value: starting from one class, add the
   candidate whose chain (refitted from the traces with the edges so far plus
   it, ``ChainFitter.fit``) gives the exactly solved policy the lowest
   expected latency; stop at K - 1 edges or when no candidate lowers it. The
   quantile edges' own chain is solved too, and the lower of the two is
   kept, so the decision edges are never worse than the quantile ones by the
   chain's exact expected latency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from splitc.errors import SplitcError
from splitc.tree.greedy import add_greedily
from splitc.tree.markov import BandwidthChain, ChainFitter
from splitc.tree.policy import solve
from splitc.tree.spec import Path, TreeSpec, feasible_actions
from splitc.tree.traces import Trace

__all__ = ["CLASS_RULES", "break_evens", "decision_edges", "fit_classes"]

CLASS_RULES = ("decision", "quantile")


def _lines(spec: TreeSpec, feasible, fork: int, path: Path, memo: dict) -> list[tuple[float, float]]:
    """(constant ms, bytes) of every feasible composition from (fork, path), timed from that decision."""
    key = (fork, path)
    if key in memo:
        return memo[key]
    found = []
    if fork == spec.num_blocks:
        found.append((0.0, 0.0))
    else:
        options = spec.options(fork, path)
        for action in feasible.get(key, []):
            if action.kind == "offload":
                found.append((spec.rtt_ms + spec.cloud_ms(fork, path), options[action.index].nbytes))
            else:
                run = spec.blocks[fork].variants[action.index].edge_ms
                found += [(run + c, n) for c, n in _lines(spec, feasible, fork + 1, path + (action.index,), memo)]
    memo[key] = found
    return found


def _envelope_breaks(lines: list[tuple[float, float]], lo: float = 0.0, hi: float = math.inf) -> list[float]:
    """Rates (bytes/s) in (lo, hi) where the minimum of ``c + n / b`` over ``lines`` changes its composition.

    In x = 1 / b the lines are ``c + n x``; walking from x = 1 / hi upwards, the
    envelope passes to a line of smaller slope at its nearest crossing.
    """
    best: dict[float, float] = {}
    for c, n in lines:
        best[n] = min(c, best.get(n, math.inf))
    if len(best) < 2:
        return []
    size = np.array(sorted(best))
    const = np.array([best[n] for n in size])
    x, x_end = (0.0 if math.isinf(hi) else 1e3 / hi), (math.inf if lo <= 0 else 1e3 / lo)
    here = const + size * x
    current = int(np.flatnonzero(here <= here.min() + 1e-9 * max(1.0, abs(here.min())))[0])  # smallest slope
    found = []
    while current > 0:
        cross = (const[:current] - const[current]) / (size[current] - size[:current])  # lines of smaller slope
        cross = np.where(cross > x, cross, math.inf)
        nxt = int(np.argmin(cross))
        if not cross[nxt] < x_end:
            break
        x = float(cross[nxt])
        ties = np.flatnonzero(np.abs(cross - x) <= 1e-12 * max(1.0, x))
        current = int(ties.min())  # the smallest slope among the lines crossing there
        found.append(1e3 / x)
    return found


def break_evens(spec: TreeSpec, max_drop: float = math.inf, lo: float = 0.0, hi: float = math.inf) -> np.ndarray:
    """Every rate (bytes/s, sorted) in (lo, hi) at which the fastest composition from some decision state changes."""
    feasible = feasible_actions(spec, max_drop)
    memo: dict = {}
    rates = set()
    for fork, path in feasible:
        if feasible[(fork, path)]:
            rates.update(_envelope_breaks(_lines(spec, feasible, fork, path, memo), lo, hi))
    return np.array(sorted(r for r in rates if math.isfinite(r) and r > 0))


def _snap(rates: np.ndarray, candidates: Sequence[float]) -> list[float]:
    """Each candidate moved to the midpoint between the distinct window rates around it; outside ones dropped."""
    distinct = np.unique(rates)
    snapped = set()
    for edge in candidates:
        i = int(np.searchsorted(distinct, edge, side="right"))
        if 1 <= i < distinct.size:
            snapped.add(float((distinct[i - 1] + distinct[i]) / 2))
    return sorted(snapped)


def _value(spec: TreeSpec, chain: BandwidthChain, max_drop: float) -> float:
    try:
        return solve(spec, chain, max_drop).mean_ms
    except SplitcError:
        return math.inf


def decision_edges(spec: TreeSpec, fitter: ChainFitter, classes: int, max_drop: float = math.inf) -> np.ndarray:
    """The class edges (bytes/s) of at most ``classes`` classes chosen by the module's rule."""
    if classes < 1:
        raise SplitcError(f"a bandwidth chain needs at least 1 class, not {classes}")
    quantile = fitter.quantile_edges(classes)
    if classes == 1:
        return quantile
    fillers = [e for k in range(2, classes + 1) for e in fitter.quantile_edges(k)]
    pool = _snap(fitter.pooled, [*break_evens(spec, max_drop, float(fitter.pooled.min()), float(fitter.pooled.max())),
                                 *fillers])
    chosen, current = add_greedily([], pool, lambda edges: _value(spec, fitter.fit(edges), max_drop), classes - 1)
    if _value(spec, fitter.fit(quantile), max_drop) < current - 1e-9:
        return quantile
    return np.array(sorted(chosen))


def fit_classes(spec: TreeSpec, traces: Trace | Sequence[Trace] | ChainFitter, classes: int, step_s: float = 0.1,
                max_drop: float = math.inf, rule: str = "decision") -> BandwidthChain:
    """The chain of at most ``classes`` classes for ``spec`` over ``traces``, edges by ``rule`` (decision, quantile)."""
    if rule not in CLASS_RULES:
        raise SplitcError(f"unknown class rule {rule!r}: use one of {', '.join(CLASS_RULES)}")
    fitter = traces if isinstance(traces, ChainFitter) else ChainFitter(traces, step_s)
    if rule == "quantile":
        return fitter.fit(fitter.quantile_edges(classes))
    return fitter.fit(decision_edges(spec, fitter, classes, max_drop))
