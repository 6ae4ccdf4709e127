"""Link estimates from the client's own transfers, and plan switching with hysteresis.

A round trip that moved ``n`` bytes in ``t`` ms is a point of the line
``t = rtt + n * x`` (``x`` = 1 / bandwidth). ``BandwidthEstimator`` fits that
line by exponentially weighted least squares over its points (each new point
multiplies the old weights by ``1 - alpha``), so it tracks a changing link
within a few requests. Pure RTT samples (``GET /healthz``, ``n = 0``) anchor
the intercept; while all recent points have about the same size the slope
alone is updated, with the last RTT estimate. A probe (``EdgeClient.probe``)
adds one point of each kind.
"""

from __future__ import annotations

import math

import numpy as np

SPREAD = 0.1  # sizes must vary by this (relative standard deviation) to fit both terms


class BandwidthEstimator:
    """Estimates of the link's bandwidth (bytes/s) and RTT (ms) from timed round trips."""

    def __init__(self, alpha: float = 0.3, bandwidth: float | None = None, rtt_ms: float | None = None) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], not {alpha}")
        self.decay = 1.0 - alpha
        self.sums = np.zeros(5)  # weighted: count, n, t, n*n, n*t
        self.ms_per_byte = 1e3 / bandwidth if bandwidth else None
        self.rtt_ms = rtt_ms
        self.samples = 0

    @property
    def bandwidth(self) -> float | None:
        """Estimated bandwidth in bytes/s (None before any transfer)."""
        return 1e3 / self.ms_per_byte if self.ms_per_byte else None

    def observe_rtt(self, ms: float) -> None:
        """A round trip that carried (almost) no data."""
        self._add(0.0, max(0.0, float(ms)))

    def observe_transfer(self, nbytes: float, ms: float) -> None:
        """A round trip that moved ``nbytes`` (up and down together) in ``ms``."""
        if nbytes > 0 and math.isfinite(ms) and ms > 0:
            self._add(float(nbytes), float(ms))

    def _add(self, n: float, t: float) -> None:
        self.sums = self.sums * self.decay + np.array([1.0, n, t, n * n, n * t])
        self.samples += 1
        self._fit()

    def _fit(self) -> None:
        w, sn, st, snn, snt = self.sums
        mean_n, mean_t = sn / w, st / w
        var, cov = snn / w - mean_n**2, snt / w - mean_n * mean_t
        if mean_n <= 0:
            self.rtt_ms = mean_t
        elif var > (SPREAD * mean_n) ** 2 and cov > 0:
            slope = cov / var
            intercept = mean_t - slope * mean_n
            if intercept < 0:
                slope, intercept = snt / snn, 0.0
            self.ms_per_byte, self.rtt_ms = slope, intercept
        else:
            rtt = min(self.rtt_ms or 0.0, 0.9 * mean_t)
            self.ms_per_byte = (mean_t - rtt) / mean_n


class PlanSwitcher:
    """Keeps the current plan until the estimate leaves its interval by more than ``hysteresis``.

    ``plans`` is a ``splitc.runtime.plans.PlanSet``; intervals are ``[lo, hi)``
    in bytes/s. With hysteresis ``h`` the current plan holds while
    ``lo / (1 + h) <= bandwidth < hi * (1 + h)``.
    """

    def __init__(self, plans, hysteresis: float = 0.15, initial_bandwidth: float | None = None) -> None:
        self.plans = plans
        self.hysteresis = hysteresis
        start = initial_bandwidth if initial_bandwidth is not None else plans.entries[0].interval[0]
        self.current = plans.for_bandwidth(start)
        self.switches = 0

    def select(self, bandwidth: float | None):
        """The plan to use for the next request, given the current estimate."""
        if bandwidth is None:
            return self.current
        lo, hi = self.current.interval
        if lo / (1 + self.hysteresis) <= bandwidth < hi * (1 + self.hysteresis):
            return self.current
        chosen = self.plans.for_bandwidth(bandwidth)
        if chosen.id != self.current.id:
            self.current = chosen
            self.switches += 1
        return self.current
