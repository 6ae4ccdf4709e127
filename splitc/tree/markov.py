"""A K-class Markov chain of the link's bandwidth, fitted from traces.

Each trace is cut into windows of ``step_s`` (the chain's step Δ); a window's
rate is the bytes its delivery opportunities carry divided by Δ.

* **Classes.** ``fit_chain(..., edges=...)`` takes the class edges (bytes/s)
  as given (``splitc.tree.edges`` places them where the best decision
  changes). Otherwise the edges between classes are the k/K quantiles of the pooled
  window rates (k = 1 .. K-1), each moved to the midpoint between two
  neighbouring *distinct* observed rates: the split index round(k n / K) of the
  sorted rates is moved to the nearest place where the rate changes, so a run
  of equal rates (rates are whole packets per window) is never split. Edges
  that coincide are merged, so the chain has at most K classes and every class
  holds at least one window (a constant link gives one class). A rate above
  an edge belongs to the class above it.
* **Transfer times.** The class is observed on the step *before* a decision,
  while the bytes of an offload cross in the windows *after* it, often many of
  them (an outage lasts several steps; a large tensor spans several windows).
  So the expected time of sending ``n`` bytes from a decision in class k is
  measured on the traces themselves (``TransferTimes``): decision times every
  ``step_s / 20`` over each trace (in its repeating regime), each classified by
  the rate of the step before it as the edge measures it, and per class the
  mean of the trace's exact delivery time of ``ceil(n / 1500)`` packets from
  those times (``Trace.delivery_ms``). ``chain.transfer_ms(n)`` returns it per
  class; the solver and ``evaluate`` price offloads with it.
* **Representative bandwidth.** ``bandwidth`` (b_k) is the *harmonic* mean of
  the window rates of class k (``representative="harmonic"``, the default;
  ``"mean"`` the arithmetic mean, also kept as ``mean_bandwidth``), a window
  with no opportunity counting as one packet per window. ``n / b_k`` is the
  transfer time of a chain without measured transfer times (one built by
  hand, or read back for a size its table does not hold); it is exact only
  for a transfer in a window of the measured class, so it is wrong in both
  directions on real links (too slow where a short dip is followed by a good
  window, too fast where an outage lasts several windows).
* **Transitions.** The class sequence of each trace's windows gives counts
  c[i, j] of steps i -> j (the last window is followed by the first when the
  period is a whole number of steps, since the trace repeats); the one-step
  matrix is (c + α) normalised by rows (Laplace smoothing, α = 1 by default).
* **Other durations.** ``matrix_for(d)`` with n = d / Δ is
  ``(1 - θ) P^floor(n) + θ P^ceil(n)``, θ = n - floor(n): exact at whole
  steps, a mixture of the two neighbouring powers in between (for d < Δ, the
  class has changed with probability proportional to the elapsed part of a
  step). Unlike a fractional matrix power it is always a stochastic matrix.
* **Stationary distribution**: the left eigenvector of P for eigenvalue 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from splitc.errors import SplitcError
from splitc.tree.traces import MTU, Trace

__all__ = ["BandwidthChain", "ChainFitter", "TransferTimes", "class_edges", "fit_chain", "last_step_rate"]


def last_step_rate(trace: Trace, t_ms, step_s: float) -> np.ndarray:
    """Rate (bytes/s) of the trace's opportunities in ``(t - step, t]``: what the edge measures at ``t``."""
    return (trace.count(t_ms) - trace.count(np.asarray(t_ms) - step_s * 1e3)) * MTU / step_s


def decision_times(traces: Sequence[Trace], step_s: float, resolution_s: float | None = None):
    """Per trace: (trace, decision times every ``resolution_s`` (default ``step_s / 20``), rate measured at each)."""
    every_ms = (resolution_s or step_s / 20) * 1e3
    found = []
    for trace in traces:
        # the repeating regime, at least one step after time 0, as the replays place requests
        offset = trace.period_ms * max(1, math.ceil(step_s * 1e3 / trace.period_ms))
        times = offset + np.arange(0.0, trace.period_ms, every_ms)
        found.append((trace, times, last_step_rate(trace, times, step_s)))
    return found


class TransferTimes:
    """Expected delivery time (ms) of ``n`` bytes from a decision in each class, measured on traces.

    ``starts`` holds, per trace, the decision times (ms, repeating regime) and
    their classes; ``transfer_ms(n)`` is, per class, the mean over that class's
    decision times of the exact delivery time of ``ceil(n / 1500)`` packets
    (one value per packet count, computed once and kept in ``table``). A table
    read back without traces answers the packet counts it holds exactly and
    interpolates linearly between them; outside them, or in a class without
    decision times, the caller's fallback (``n / b_k``) applies (NaN here).
    """

    def __init__(self, classes: int, starts: Sequence[tuple[Trace, np.ndarray, np.ndarray]] = (),
                 table: dict[int, np.ndarray] | None = None, taken: dict | None = None) -> None:
        self.classes = classes
        self.starts = list(starts)
        self.taken = {} if taken is None else taken  # (start index, packets) -> delivery times; may be shared
        self.table: dict[int, np.ndarray] = {int(p): np.asarray(v, float) for p, v in (table or {}).items()}

    @classmethod
    def measure(cls, traces: Sequence[Trace], edges: np.ndarray, step_s: float,
                resolution_s: float | None = None) -> TransferTimes:
        """Decision times every ``resolution_s`` (default ``step_s / 20``) over each trace, classified."""
        return cls.from_decisions(decision_times(traces, step_s, resolution_s), edges)

    @classmethod
    def from_decisions(cls, decisions: Sequence[tuple[Trace, np.ndarray, np.ndarray]], edges: np.ndarray,
                       taken: dict | None = None) -> TransferTimes:
        """From ``decision_times``' (trace, times, measured rates), classified by ``edges``."""
        starts = [(trace, times, np.searchsorted(edges, rates, side="left")) for trace, times, rates in decisions]
        return cls(len(edges) + 1, starts, taken=taken)

    def _packets(self, packets: int) -> np.ndarray:
        if packets not in self.table:
            if not self.starts:
                return self._interpolate(packets)
            total, count = np.zeros(self.classes), np.zeros(self.classes)
            for index, (trace, times, labels) in enumerate(self.starts):
                key = (index, packets)
                if key not in self.taken:
                    self.taken[key] = trace.delivery_ms(times, packets * MTU) - times
                taken = self.taken[key]
                total += np.bincount(labels, weights=taken, minlength=self.classes)
                count += np.bincount(labels, minlength=self.classes)
            with np.errstate(invalid="ignore", divide="ignore"):
                self.table[packets] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        return self.table[packets]

    def _interpolate(self, packets: int) -> np.ndarray:
        known = sorted(self.table)
        if not known or not known[0] <= packets <= known[-1]:
            return np.full(self.classes, np.nan)
        values = np.array([self.table[p] for p in known])
        return np.array([np.interp(packets, known, values[:, c]) for c in range(self.classes)])

    def __call__(self, nbytes: float) -> np.ndarray:
        """Expected delivery time (ms) of ``nbytes`` per class (NaN where not known)."""
        packets = math.ceil(float(nbytes) / MTU)  # as Trace.delivery_ms counts them
        return np.zeros(self.classes) if packets <= 0 else self._packets(packets)

    def to_json(self) -> dict:
        """The table measured so far: packet count -> ms per class (null where unknown)."""
        return {str(p): [None if np.isnan(x) else float(x) for x in v] for p, v in sorted(self.table.items())}

    @classmethod
    def from_json(cls, classes: int, data: dict) -> TransferTimes:
        """A table read back (no traces: known counts exact, others interpolated)."""
        return cls(classes, table={int(p): [np.nan if x is None else float(x) for x in v] for p, v in data.items()})


@dataclass(frozen=True, eq=False)
class BandwidthChain:
    """Bandwidth classes (slowest first) and their Markov transitions per step of ``step_s`` seconds.

    ``edges`` (K-1, bytes/s) separate the classes; ``bandwidth`` (K, bytes/s)
    are the representatives (harmonic means), ``mean_bandwidth`` the
    arithmetic means; ``matrix`` is the one-step transition matrix (rows sum
    to 1), ``counts`` the observed transitions, ``stationary`` its
    stationary distribution; ``transfer`` the delivery times measured on the
    traces the chain was fitted from (None: ``n / bandwidth``).
    """

    step_s: float
    edges: np.ndarray
    bandwidth: np.ndarray
    mean_bandwidth: np.ndarray
    matrix: np.ndarray
    counts: np.ndarray
    stationary: np.ndarray
    transfer: TransferTimes | None = field(default=None, repr=False, compare=False)
    _powers: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return len(self.bandwidth)

    def classify(self, rate):
        """Class of a rate (bytes/s) or of an array of rates: the number of edges below it."""
        return np.searchsorted(self.edges, rate, side="left")

    def transfer_ms(self, nbytes: float) -> np.ndarray:
        """Expected time (ms) to deliver ``nbytes`` from a decision in each class (see ``TransferTimes``)."""
        fallback = float(nbytes) / self.bandwidth * 1e3
        if self.transfer is None:
            return fallback
        measured = self.transfer(nbytes)
        return np.where(np.isnan(measured), fallback, measured)

    def power(self, steps: int) -> np.ndarray:
        """The transition matrix over ``steps`` whole steps."""
        if steps not in self._powers:
            self._powers[steps] = np.linalg.matrix_power(self.matrix, steps)
        return self._powers[steps]

    def matrix_for(self, duration_s: float) -> np.ndarray:
        """Transition matrix over ``duration_s`` seconds (see the module's notes on fractional steps)."""
        if not duration_s >= 0:
            raise SplitcError(f"a block duration must be >= 0 s, not {duration_s}")
        steps = duration_s / self.step_s
        low = math.floor(steps + 1e-9)
        theta = steps - low
        if theta < 1e-9:
            return self.power(low)
        return (1 - theta) * self.power(low) + theta * self.power(low + 1)


def class_edges(rates: np.ndarray, classes: int) -> np.ndarray:
    """Edges (increasing) between at most ``classes`` classes of ``rates``: quantiles between distinct rates."""
    ordered = np.sort(np.asarray(rates, dtype=float))
    n = ordered.size
    changes = np.flatnonzero(np.diff(ordered) > 0) + 1  # split indices where the rate changes
    splits = set()
    for k in range(1, classes):
        if changes.size:
            target = round(k * n / classes)
            splits.add(int(changes[np.argmin(np.abs(changes - target))]))
    return np.array([(ordered[i - 1] + ordered[i]) / 2 for i in sorted(splits)])


def _representatives(rates: np.ndarray, labels: np.ndarray, k: int, step_s: float, kind: str,
                     edges: np.ndarray | None = None):
    floor = MTU / step_s  # one packet per window
    harmonic, mean = np.empty(k), np.empty(k)
    for c in range(k):
        members = np.maximum(rates[labels == c], floor)
        if not members.size:  # a class no window falls in (given edges): its bounds stand for it
            bounds = [] if edges is None else [e for e in edges[max(c - 1, 0):c + 1]]
            members = np.array([max(float(np.mean(bounds)) if bounds else floor, floor)])
        harmonic[c] = members.size / np.sum(1.0 / members)
        mean[c] = members.mean()
    return (harmonic if kind == "harmonic" else mean), mean


def _stationary(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eig(matrix.T)
    vector = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
    vector = np.abs(vector)
    return vector / vector.sum()


class ChainFitter:
    """Fits chains with any class edges from the same traces, sharing the work that does not depend on them.

    The window rates, the decision times and the delivery time of each packet
    count from each decision time are computed once, so trying many sets of
    edges (``splitc.tree.edges``) costs a classification and a few sums each.
    """

    def __init__(self, traces: Trace | Sequence[Trace], step_s: float = 0.1, representative: str = "harmonic",
                 smoothing: float = 1.0) -> None:
        traces = [traces] if isinstance(traces, Trace) else list(traces)
        if not traces:
            raise SplitcError("fitting a bandwidth chain needs at least one trace")
        if not step_s > 0 or smoothing < 0:
            raise SplitcError(f"bad chain options: step_s={step_s} (> 0), smoothing={smoothing} (>= 0)")
        if representative not in ("harmonic", "mean"):
            raise SplitcError(f"unknown class representative {representative!r}: use 'harmonic' or 'mean'")
        self.traces, self.step_s = traces, step_s
        self.representative, self.smoothing = representative, smoothing
        self.series = [trace.rate_bps(step_s) / 8 for trace in traces]
        self.pooled = np.concatenate(self.series)
        self.decisions = decision_times(traces, step_s)
        self.taken: dict = {}

    def quantile_edges(self, classes: int) -> np.ndarray:
        """The quantile edges of the pooled window rates (``class_edges``)."""
        return class_edges(self.pooled, classes)

    def fit(self, edges) -> BandwidthChain:
        """The chain whose classes are separated by ``edges`` (bytes/s; sorted, duplicates merged)."""
        edges = np.unique(np.asarray(edges, dtype=float).reshape(-1))
        if edges.size and not np.all(np.isfinite(edges)):
            raise SplitcError(f"class edges must be finite rates, not {edges.tolist()}")
        k = len(edges) + 1
        counts = np.zeros((k, k))
        for trace, rates in zip(self.traces, self.series):
            labels = np.searchsorted(edges, rates, side="left")
            np.add.at(counts, (labels[:-1], labels[1:]), 1)
            whole = abs(trace.period_ms / (self.step_s * 1e3) - len(rates)) < 1e-6
            if whole and len(rates) > 1:
                counts[labels[-1], labels[0]] += 1
        smoothed = counts + self.smoothing
        rows = smoothed.sum(axis=1, keepdims=True)
        matrix = np.where(rows > 0, smoothed / np.where(rows > 0, rows, 1), np.eye(k))
        labels = np.searchsorted(edges, self.pooled, side="left")
        bandwidth, mean = _representatives(self.pooled, labels, k, self.step_s, self.representative, edges)
        return BandwidthChain(self.step_s, edges, bandwidth, mean, matrix, counts, _stationary(matrix),
                              TransferTimes.from_decisions(self.decisions, edges, self.taken))


def fit_chain(traces: Trace | Sequence[Trace], classes: int = 2, step_s: float = 0.1,
              representative: str = "harmonic", smoothing: float = 1.0, edges=None) -> BandwidthChain:
    """Fit a bandwidth chain with at most ``classes`` classes and a step of ``step_s`` s from traces.

    With ``edges`` (bytes/s) the classes are separated there (``classes`` is
    then ignored); otherwise at the quantiles of the window rates. Its
    ``transfer`` times are measured on the same traces (``TransferTimes``).
    """
    if edges is None and classes < 1:
        raise SplitcError(f"bad chain options: classes={classes} (>= 1)")
    fitter = ChainFitter(traces, step_s, representative, smoothing)
    return fitter.fit(fitter.quantile_edges(classes) if edges is None else edges)
