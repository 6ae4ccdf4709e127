"""A K-class Markov chain of the link's bandwidth, fitted from traces.

Each trace is cut into windows of ``step_s`` (the chain's step Δ); a window's
rate is the bytes its delivery opportunities carry divided by Δ.

* **Classes.** The edges between classes are the k/K quantiles of the pooled
  window rates (k = 1 .. K-1), each moved to the midpoint between two
  neighbouring *distinct* observed rates: the split index round(k n / K) of the
  sorted rates is moved to the nearest place where the rate changes, so a run
  of equal rates (rates are whole packets per window) is never split. Edges
  that coincide are merged, so the chain has at most K classes and every class
  holds at least one window (a constant link gives one class). A rate above
  an edge belongs to the class above it.
* **Representative bandwidth.** An offload of ``n`` bytes in class k takes
  ``n / b_k``. Over the windows of class k its mean is ``n * mean(1 / r_w)``,
  i.e. ``n`` over the *harmonic* mean of the window rates, so that is the
  default representative (``representative="harmonic"``); the arithmetic mean
  underestimates every transfer time in a class whose rates vary. The
  harmonic mean is exact for transfers shorter than a window; a transfer
  spanning many windows averages rates over time, which the arithmetic mean
  (``"mean"``) describes better. A window with no opportunity counts as one
  packet per window (a transfer started in it waits at most about a window),
  else one outage would make the class's transfers take forever.
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

__all__ = ["BandwidthChain", "class_edges", "fit_chain"]


@dataclass(frozen=True, eq=False)
class BandwidthChain:
    """Bandwidth classes (slowest first) and their Markov transitions per step of ``step_s`` seconds.

    ``edges`` (K-1, bytes/s) separate the classes; ``bandwidth`` (K, bytes/s)
    are the representatives used for transfer times, ``mean_bandwidth`` the
    arithmetic means; ``matrix`` is the one-step transition matrix (rows sum
    to 1), ``counts`` the observed transitions, ``stationary`` its
    stationary distribution.
    """

    step_s: float
    edges: np.ndarray
    bandwidth: np.ndarray
    mean_bandwidth: np.ndarray
    matrix: np.ndarray
    counts: np.ndarray
    stationary: np.ndarray
    _powers: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_classes(self) -> int:
        """K, the number of classes."""
        return len(self.bandwidth)

    def classify(self, rate):
        """Class of a rate (bytes/s) or of an array of rates: the number of edges below it."""
        return np.searchsorted(self.edges, rate, side="left")

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


def _representatives(rates: np.ndarray, labels: np.ndarray, k: int, step_s: float, kind: str):
    floor = MTU / step_s  # one packet per window
    harmonic, mean = np.empty(k), np.empty(k)
    for c in range(k):
        members = np.maximum(rates[labels == c], floor)
        harmonic[c] = members.size / np.sum(1.0 / members)
        mean[c] = members.mean()
    return (harmonic if kind == "harmonic" else mean), mean


def _stationary(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eig(matrix.T)
    vector = np.real(vectors[:, np.argmin(np.abs(values - 1.0))])
    vector = np.abs(vector)
    return vector / vector.sum()


def fit_chain(traces: Trace | Sequence[Trace], classes: int = 2, step_s: float = 0.1,
              representative: str = "harmonic", smoothing: float = 1.0) -> BandwidthChain:
    """Fit a bandwidth chain with at most ``classes`` classes and a step of ``step_s`` s from traces."""
    traces = [traces] if isinstance(traces, Trace) else list(traces)
    if not traces:
        raise SplitcError("fitting a bandwidth chain needs at least one trace")
    if classes < 1 or not step_s > 0 or smoothing < 0:
        raise SplitcError(f"bad chain options: classes={classes} (>= 1), step_s={step_s} (> 0), "
                          f"smoothing={smoothing} (>= 0)")
    if representative not in ("harmonic", "mean"):
        raise SplitcError(f"unknown class representative {representative!r}: use 'harmonic' or 'mean'")
    series = [trace.rate_bps(step_s) / 8 for trace in traces]
    pooled = np.concatenate(series)
    edges = class_edges(pooled, classes)
    k = len(edges) + 1
    counts = np.zeros((k, k))
    for trace, rates in zip(traces, series):
        labels = np.searchsorted(edges, rates, side="left")
        np.add.at(counts, (labels[:-1], labels[1:]), 1)
        whole = abs(trace.period_ms / (step_s * 1e3) - len(rates)) < 1e-6
        if whole and len(rates) > 1:
            counts[labels[-1], labels[0]] += 1
    smoothed = counts + smoothing
    rows = smoothed.sum(axis=1, keepdims=True)
    matrix = np.where(rows > 0, smoothed / np.where(rows > 0, rows, 1), np.eye(k))
    labels = np.searchsorted(edges, pooled, side="left")
    bandwidth, mean = _representatives(pooled, labels, k, step_s, representative)
    return BandwidthChain(step_s, edges, bandwidth, mean, matrix, counts, _stationary(matrix))
