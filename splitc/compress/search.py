"""The joint choice of cut, bit width and edge variant, exact on the candidate set (branch and bound).

Minimise the predicted latency ``T_edge + RTT + (S + returned) / bandwidth + T_cloud`` of a (cut, variant,
width) triple subject to its certified drop bound ``U <= max_drop``, where the variant changes the edge
half (``names.Spec``), ``T_edge``/``T_cloud`` are priced on the variant's model (``space``) and ``S`` and
``U`` are measured (``evaluate``).

Prices need no accuracy measurement; accuracy is the expensive part. Every candidate (cut, variant) has a
lower bound on its latency, its times with nothing sent (a frame is never smaller than zero bytes, and
run-length coding can make it almost that small). The search walks the candidates in the order of their
bounds, keeping the best certified option found (the incumbent). A candidate whose bound is above the
incumbent cannot win and, since the order is sorted, neither can any after it: the walk stops. A rewrite
is not fitted before the walk reaches it: until then its bound counts only the nodes it cannot change
(``candidates``); reached, it is fitted, priced, and goes back in line at its exact bound.
Within a candidate, widths go narrowest first; a width whose frame alone makes it slower than the
incumbent is not run, and once a width passes the bound, wider widths that are no smaller are not run
either (the rules ``joint`` applies to (cut, bits) pairs). Before the walk the incumbent is the best option
known feasible without any measurement: edge-only, or a cut of the unchanged model sent as raw float32
(its frame size overestimated). Each skip is justified by a bound, so the result is the exhaustive
optimum of the candidate set (``exhaustive`` measures everything; the tests compare them).
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field

import numpy as np

from splitc.compress.candidates import Candidate, Resolver, enumerate_candidates
from splitc.compress.evaluate import Evaluator
from splitc.compress.space import CalibrationShares, split_calibration
from splitc.errors import SplitcError
from splitc.partition.prune import RAW_HEADER_BYTES
from splitc.partition.select import Option, within_bound


@dataclass
class Measured:
    """One measured option: the (cut, width) as it will be emitted, its candidate and its width."""

    option: Option
    candidate: Candidate
    width: int | str


@dataclass
class SearchResult:
    """The chosen option, every option measured (feasible ones ranked, best first) and the search's cost."""

    best: Measured
    ranked: list[Measured]
    measured: list[Measured]
    evaluations: int  # accuracy evaluations: (cut, variant, width) drops measured, exact ones excluded
    candidates: int  # (cut, variant) pairs in the candidate set
    visited: int  # candidates whose widths were considered before the walk stopped
    bandwidth: float
    rtt_ms: float
    max_drop: float
    bounds: dict = field(default_factory=dict, repr=False)  # candidate key -> lower bound (ms)

    def total_ms(self, measured: Measured | None = None) -> float:
        """Predicted latency of ``measured`` (default: the chosen option) at the search's link."""
        return (measured or self.best).option.total_ms(self.bandwidth, self.rtt_ms)


def _rank(found: list[Measured], bandwidth: float, rtt_ms: float, max_drop: float) -> list[Measured]:
    ok = [m for m in found if within_bound(m.option.drop, m.option.drop_se, max_drop)]
    return sorted(ok, key=lambda m: (m.option.total_ms(bandwidth, rtt_ms), m.option.sent_bytes, str(m.width),
                                     m.candidate.spec.name))


def _seed(cand: Candidate, evaluator: Evaluator, bandwidth: float, rtt_ms: float) -> float:
    """Latency of an option known within the bound before any measurement (inf when there is none).

    Edge-only of the unchanged model is exact; so is an unchanged float32 cut sent raw, whose frame is at
    most ``4 * elements + RAW_HEADER_BYTES`` per tensor (an upper bound, so the seed is too).
    """
    if not cand.spec.is_base:
        return math.inf
    if not cand.cut:
        return cand.lower_bound(bandwidth, rtt_ms)
    values = cand.priced.graph.values
    if 32 not in evaluator.widths(cand) or not all(np.dtype(values[t].dtype) == np.float32 for t in cand.cut):
        return math.inf
    raw = sum(4.0 * values[t].numel + RAW_HEADER_BYTES for t in cand.cut)
    return cand.lower_bound(bandwidth, rtt_ms) + raw / bandwidth * 1e3


def branch_and_bound(candidates: list[Candidate], evaluator: Evaluator, bandwidth: float, rtt_ms: float,
                     max_drop: float, resolver: Resolver | None = None) -> SearchResult:
    """The best (cut, variant, width) within ``max_drop``, measuring only what its bounds cannot rule out.

    Candidates not priced yet (rewrites) are fitted and priced by ``resolver`` when the walk reaches their
    fit-free bound, and go back in line at their exact bound.
    """
    evaluator.reset()
    bounds = {c.key: c.lower_bound(bandwidth, rtt_ms) for c in candidates}
    incumbent = min((_seed(c, evaluator, bandwidth, rtt_ms) for c in candidates if c.priced), default=math.inf)
    queue = [(bounds[c.key], c.spec.name, k, c) for k, c in enumerate(candidates)]
    heapq.heapify(queue)
    found: list[Measured] = []
    visited = 0

    def passes(drop: float, margin: float) -> bool:
        return within_bound(drop, margin, max_drop)

    while queue:
        bound, _, k, cand = heapq.heappop(queue)
        if bound > incumbent:
            break  # in bound order: no later candidate can beat the incumbent either
        if cand.priced is None:
            if (resolver is not None and resolver.resolve(cand)):
                bounds[cand.key] = cand.lower_bound(bandwidth, rtt_ms)
                heapq.heappush(queue, (bounds[cand.key], cand.spec.name, k, cand))
            continue
        visited += 1

        def worth(sent_bytes: float, bound=bound, cand=cand) -> bool:
            return bound + (sent_bytes / bandwidth * 1e3 if cand.cut else 0.0) <= incumbent

        for option, width in evaluator.options(cand, passes, worth):
            found.append(Measured(option, cand, width))
            if passes(option.drop, option.drop_se):
                incumbent = min(incumbent, option.total_ms(bandwidth, rtt_ms))
    return _result(found, evaluator, len(candidates), visited, bandwidth, rtt_ms, max_drop, bounds)


def exhaustive(candidates: list[Candidate], evaluator: Evaluator, bandwidth: float, rtt_ms: float,
               max_drop: float, resolver: Resolver | None = None) -> SearchResult:
    """Every candidate fitted and measured at every width, then the best within ``max_drop`` (the reference)."""
    evaluator.reset()
    if resolver is not None:
        for cand in candidates:
            resolver.resolve(cand)
    found = [Measured(option, cand, width) for cand in candidates if cand.priced is not None
             for option, width in evaluator.options(cand)]
    bounds = {c.key: c.lower_bound(bandwidth, rtt_ms) for c in candidates}
    return _result(found, evaluator, len(candidates), len(candidates), bandwidth, rtt_ms, max_drop, bounds)


def _result(found, evaluator, count, visited, bandwidth, rtt_ms, max_drop, bounds) -> SearchResult:
    ranked = _rank(found, bandwidth, rtt_ms, max_drop)
    if not ranked:
        raise SplitcError(f"no candidate meets --max-drop {max_drop:.2%}; allow more bits or a larger drop")
    return SearchResult(ranked[0], ranked, found, evaluator.evaluations, count, visited, bandwidth, rtt_ms,
                        max_drop, bounds)


@dataclass
class Space:
    """A compile's candidate set, built and priced once, with the evaluator that measures it.

    ``search`` runs the branch and bound (or, with ``exhaustive``, measures everything) at the analysis's
    link or another one; measurements are cached, so searches at several links share them.
    """

    analysis: object
    enc: object
    families: tuple[str, ...]
    candidates: list[Candidate]
    evaluator: Evaluator
    reasons: dict[str, list[str]]
    resolver: Resolver
    shares: CalibrationShares
    build_s: float

    def search(self, bandwidth: float | None = None, rtt_ms: float | None = None, max_drop: float | None = None,
               exhaustive_search: bool = False) -> SearchResult:
        """The best option at the link (default: the analysis's) within ``max_drop`` (default: the options')."""
        problem = self.analysis.problem
        bandwidth = problem.bandwidth if bandwidth is None else float(bandwidth)
        rtt_ms = problem.rtt_ms if rtt_ms is None else float(rtt_ms)
        max_drop = self.enc.max_drop if max_drop is None else float(max_drop)
        solve = exhaustive if exhaustive_search else branch_and_bound
        return solve(self.candidates, self.evaluator, bandwidth, rtt_ms, max_drop, self.resolver)

    def resolve_all(self, candidates: list[Candidate] | None = None) -> list[Candidate]:
        """Fit and price ``candidates`` (default: all); returns those that apply."""
        chosen = self.candidates if candidates is None else candidates
        return [c for c in chosen if self.resolver.resolve(c)]


def prepare(analysis, options, cut: list[str] | None = None, progress=None,
            cuts: list[tuple[str, ...]] | None = None) -> Space:
    """Build and price every (cut, variant) candidate of ``options.compress`` (a ``CompileOptions``).

    The cuts are ``joint.candidate_cuts``, or ``cut`` alone (forced), or the ``cuts`` given.
    """
    from splitc import joint
    from splitc.calibration import calibrate

    if options.calib is None:
        raise SplitcError("--compress needs --calib: rewrites are fitted, and their accuracy measured, on "
                          "calibration data")
    if options.edge_precision != "fp32":
        raise SplitcError("--compress chooses the edge precision itself (its fp16 and int8 variants); "
                          "use --edge-precision fp32")
    enc = options.encoding()
    enc.check()
    if cut is not None:
        analysis.partition_for(cut)  # a cut that is not valid is refused before anything is fitted
    if cuts is None:
        cuts = [tuple(cut)] if cut is not None else joint.candidate_cuts(analysis)
    calib = joint.context(analysis).calibration(analysis, enc)
    outputs = [{"name": v.name, "shape": list(v.shape or [])} for v in analysis.graph.outputs]
    metric = calibrate.choose_metric(enc.metric, outputs, calib.labels is not None)
    shares = split_calibration(calib)
    started = time.perf_counter()
    candidates, reasons, resolver = enumerate_candidates(analysis, options.compress, cuts, shares, progress)
    evaluator = Evaluator(analysis, enc, shares, metric)
    return Space(analysis, enc, tuple(options.compress), candidates, evaluator, reasons, resolver, shares,
                 time.perf_counter() - started)


__all__ = ["Measured", "SearchResult", "Space", "branch_and_bound", "exhaustive", "prepare"]
