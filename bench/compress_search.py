"""Search strategies on splitc's (cut, edge variant, width) space, scored by the model tree's reward (eq. 7).

Used by ``bench/compress.py`` (section e). The space is every (candidate, width) triple of a
``splitc.compress.search.Space``; evaluating a triple measures its accuracy drop on the calibration share
it is certified on (``Evaluator.drop``; cached, so repeated draws cost nothing twice). A triple whose drop
is exact without a measurement (edge-only or raw float32 of the unchanged model) costs no evaluation, as
in splitc's own count. Its reward is ``R = N1(A) + N2(T)`` (``splitc.compress.reward``) with ``A`` the
float model's calibration accuracy minus the measured drop and ``T`` the predicted latency at the link.

* **random search**: draws triples uniformly without replacement;
* **epsilon-greedy**: with probability ``epsilon`` a uniform draw, otherwise a not yet evaluated neighbour
  of the best triple so far (same cut and variant at the next narrower or wider width; same cut and width
  with another variant; same variant and width at the adjacent candidate cut), uniform when none is left.

Both return the best reward among the triples evaluated within the budget, over all of them
(``unconstrained``, the model tree's objective) and over those whose certified drop bound is within the
compile's ``max_drop`` (``within bound``, what a plan may ship).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from splitc.compress.reward import reward
from splitc.partition.select import within_bound
from splitc.widths import width_order


@dataclass(frozen=True)
class Triple:
    """A (candidate, width) point of the search space, with its cut's index and variant name."""

    cand: object
    width: int | str
    cut_index: int
    variant: str


def _widths(space, cand) -> list:
    if cand.priced is not None:
        return space.evaluator.widths(cand)
    return [32] if not cand.cut else space.enc.bit_choices()  # a rewrite's cut is never the image input


def triples(space) -> list[Triple]:
    """Every (candidate, width) of the space, with the candidate cut's index for neighbourhoods.

    Rewrites are fitted when a strategy first draws them (a triple of a rewrite that does not apply is
    dropped without counting an evaluation).
    """
    order = {c: i for i, c in enumerate(dict.fromkeys(c.cut for c in space.candidates))}
    return [Triple(c, w, order[c.cut], c.spec.name) for c in space.candidates if c.reason is None
            for w in sorted(_widths(space, c), key=width_order)]


class Scorer:
    """Evaluates triples (counting the evaluations that are not exact) and scores them by eq. 7."""

    def __init__(self, space, float_accuracy: float, bandwidth: float, rtt_ms: float, max_drop: float) -> None:
        self.space, self.accuracy, self.bandwidth, self.rtt_ms, self.max_drop = (
            space, float_accuracy, bandwidth, rtt_ms, max_drop)

    def evaluate(self, t: Triple) -> tuple[float, bool, bool] | None:
        """(reward, within the bound, exact) of a triple; None when its rewrite does not apply."""
        if not self.space.resolver.resolve(t.cand):
            return None
        ev = self.space.evaluator
        entry = ev.drop(t.cand, t.width)
        option = ev.option(t.cand, t.width, ev.size(t.cand, t.width), entry)
        r = reward(self.accuracy - entry["drop"], option.total_ms(self.bandwidth, self.rtt_ms))
        return r, within_bound(entry["drop"], entry["drop_se"], self.max_drop), bool(entry.get("exact"))

    def score(self, option, accuracy_drop: float) -> float:
        return reward(self.accuracy - accuracy_drop, option.total_ms(self.bandwidth, self.rtt_ms))


def _neighbours(t: Triple, by_key: dict) -> list[Triple]:
    out = []
    widths = [x for x in by_key.values() if x.cand is t.cand]
    widths.sort(key=lambda x: width_order(x.width))
    k = widths.index(t)
    out += [widths[j] for j in (k - 1, k + 1) if 0 <= j < len(widths)]
    out += [x for x in by_key.values() if x.cut_index == t.cut_index and x.width == t.width and x is not t]
    out += [x for x in by_key.values() if x.variant == t.variant and x.width == t.width
            and abs(x.cut_index - t.cut_index) == 1]
    return out


def run(strategy: str, space_triples: list[Triple], scorer: Scorer, budget: int, seed: int,
        epsilon: float = 0.1, target: float | None = None, cap: int | None = None) -> dict:
    """Run ``strategy`` (``random`` or ``egreedy``) for ``budget`` evaluations; with ``target``, go on (up to
    ``cap`` evaluations) to count the evaluations needed to reach a reward of at least ``target`` within
    the bound (None when it was not reached)."""
    rng = random.Random(seed)
    left = list(space_triples)
    left_ids = {id(t) for t in left}
    by_key = {id(t): t for t in space_triples}
    best_any = best_ok = -float("inf")
    best_t, spent, reached, at_budget = None, 0, None, None
    limit = max(budget, cap or budget)
    while left and spent < limit:
        pick = None
        if strategy == "egreedy" and best_t is not None and rng.random() >= epsilon:
            near = [n for n in _neighbours(best_t, by_key) if id(n) in left_ids]
            pick = rng.choice(near) if near else None
        if pick is None:
            pick = rng.choice(left)
        left.remove(pick)
        left_ids.discard(id(pick))
        scored = scorer.evaluate(pick)
        if scored is None:
            continue
        r, ok, exact = scored
        spent += 0 if exact else 1
        if r > best_any:
            best_any = r
            if strategy == "egreedy":
                best_t = pick
        if ok and r > best_ok:
            best_ok = r
        if spent <= budget:
            at_budget = (best_any, best_ok)
        if target is not None and reached is None and best_ok >= target - 1e-12:
            reached = spent
        if spent >= budget and (target is None or reached is not None):
            break
    at_budget = at_budget or (best_any, best_ok)
    return {"best_unconstrained": at_budget[0], "best_within_bound": at_budget[1], "reached_at": reached}
