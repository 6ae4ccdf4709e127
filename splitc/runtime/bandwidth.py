"""Link estimates from the client's own transfers, and plan switching with hysteresis in value and time.

A round trip that moved ``n`` bytes in ``t`` ms is a point of the line
``t = base + n * x`` (``x`` = 1 / bandwidth): ``base`` is the RTT plus the
per-request overhead (HTTP, the server's scheduling), which no amount of
bandwidth removes. ``BandwidthEstimator`` keeps the two apart:

* **Base latency.** Round trips that carry (almost) no data - ``GET /healthz``
  and transfers too small to take measurable time - are latency samples; the
  base is the minimum of the last ``LATENCY_WINDOW`` of them, and their spread
  above it is the timing noise (``jitter_ms``).
* **Information.** A transfer whose time exceeds the base by less than the
  noise threshold (``MIN_INFO_MS``, or 4 x the jitter when larger) carries no
  bandwidth information: with 71-byte frames a 50 Mbps link and a 100 KB/s one
  look the same. Such a sample updates the base only, never the bandwidth
  (except that a transfer of at least ``LOWER_BOUND_BYTES`` that took no
  measurable time proves the link is at least ``n / threshold`` fast).
* **Throughput.** Informative transfers are fitted by exponentially weighted
  least squares (each new point multiplies the old weights by ``1 - alpha``);
  when their sizes vary the fit gives both slope and intercept, else the slope
  is taken above the measured base. Two informative samples in a row that
  both differ from the estimate by more than ``STEP`` on the same side are a
  step change of the link: the fit restarts from those two points.

``updates`` counts the observations that changed the bandwidth estimate: the
switcher counts only new evidence, and the client probes (``EdgeClient``) when
its requests stop producing any.
"""

from __future__ import annotations

import math
import time
from collections import deque

import numpy as np

SPREAD = 0.1  # sizes must vary by this (relative standard deviation) to fit both terms
LATENCY_WINDOW = 16  # latency samples the base (their minimum) is taken over
MIN_INFO_MS = 2.0  # a transfer must exceed the base by this much (or 4 x the jitter) to measure bandwidth
LOWER_BOUND_BYTES = 16 * 1024  # a transfer this large that took no measurable time bounds the bandwidth below
STEP = 1.5  # two samples in a row beyond this factor of the estimate, on one side: the link changed


class BandwidthEstimator:
    """Estimates of the link's bandwidth (bytes/s), base latency and RTT (ms) from timed round trips."""

    def __init__(self, alpha: float = 0.3, bandwidth: float | None = None, rtt_ms: float | None = None) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], not {alpha}")
        self.decay = 1.0 - alpha
        self.sums = np.zeros(5)  # informative transfers, weighted: count, n, t, n*n, n*t
        self.ms_per_byte = 1e3 / bandwidth if bandwidth else None
        # latency samples per kind of round trip ("rtt": GET /healthz; each transfer kind its own, since a
        # POST /v1/infer carries more per-request overhead than a health check)
        self.windows: dict[str, deque[float]] = {"rtt": deque(maxlen=LATENCY_WINDOW)}
        if rtt_ms is not None:
            self.windows["rtt"].append(float(rtt_ms))
        self.rtt_ms = rtt_ms
        self.samples = 0  # every observation
        self.updates = 0  # observations that changed the bandwidth estimate
        self.informative: bool | None = None  # whether the latest transfer carried bandwidth information
        self._off = 0  # consecutive informative samples beyond STEP of the estimate (sign: which side)
        self._previous: tuple[float, float] | None = None

    @property
    def bandwidth(self) -> float | None:
        """Estimated bandwidth in bytes/s (None before any informative transfer)."""
        return 1e3 / self.ms_per_byte if self.ms_per_byte else None

    def _window(self, kind: str) -> deque[float]:
        window = self.windows.get(kind)
        return window if window else self.windows["rtt"]

    def base(self, kind: str = "rtt") -> float:
        """The latency of a round trip of ``kind`` that carries no data: RTT plus per-request overhead."""
        window = self._window(kind)
        return min(window) if window else (self.rtt_ms or 0.0)

    @property
    def base_ms(self) -> float:
        """The base latency of a health check (0 when unknown)."""
        return self.base("rtt")

    def jitter(self, kind: str = "rtt") -> float:
        """Timing noise: the mean of the latency samples above their minimum."""
        window = self._window(kind)
        return float(np.mean(window)) - min(window) if len(window) >= 2 else 0.0

    @property
    def jitter_ms(self) -> float:
        return self.jitter("rtt")

    def threshold(self, kind: str = "rtt") -> float:
        """How long a transfer must take above the base to say anything about the bandwidth."""
        return max(MIN_INFO_MS, 4.0 * self.jitter(kind))

    @property
    def threshold_ms(self) -> float:
        return self.threshold("rtt")

    def observe_rtt(self, ms: float) -> None:
        """A round trip that carried (almost) no data."""
        if math.isfinite(ms):
            self._latency(max(0.0, float(ms)), "rtt")

    def observe_transfer(self, nbytes: float, ms: float, kind: str = "transfer") -> None:
        """A round trip of ``kind`` that moved ``nbytes`` (up and down together) in ``ms``.

        It measures the bandwidth only when both its predicted transfer time
        (at the current estimate) and its measured time above the base exceed
        the noise threshold; else it is a latency sample of its kind.
        """
        if not (nbytes > 0 and math.isfinite(nbytes) and math.isfinite(ms) and ms > 0):
            return
        n, t = float(nbytes), float(ms)
        threshold, base = self.threshold(kind), self.base(kind)
        too_small = self.ms_per_byte is not None and n * self.ms_per_byte < threshold
        if too_small or t - base < threshold:
            self.informative = False
            self._latency(t, kind)
            if too_small:
                return
            floor_x = threshold / n  # ms per byte: at least this fast
            if n >= LOWER_BOUND_BYTES:  # evidence that the link is fast: raise the estimate to the bound if below
                if self.ms_per_byte is None or self.ms_per_byte > floor_x:
                    self.ms_per_byte = floor_x
                    self.sums[:] = 0.0
                    self._previous, self._off = None, 0
                self.updates += 1
            return
        self.informative = True
        self.samples += 1
        x = (t - base) / n
        if self.ms_per_byte is not None:
            ratio = x / self.ms_per_byte
            side = 1 if ratio > STEP else -1 if ratio < 1 / STEP else 0
            self._off = self._off + side if side and self._off * side > 0 else side
        if abs(self._off) >= 2 and self._previous is not None:  # a step: forget the old link
            self.sums[:] = 0.0
            self._add(*self._previous)
            self._off = 0
        self._add(n, t - base)
        self._previous = (n, t - base)
        self._fit()
        self.updates += 1

    def _latency(self, ms: float, kind: str) -> None:
        self.windows.setdefault(kind, deque(maxlen=LATENCY_WINDOW)).append(ms)
        self.samples += 1
        if not self.sums[0] and self.windows["rtt"]:
            self.rtt_ms = min(self.windows["rtt"])

    def _add(self, n: float, t: float) -> None:
        self.sums = self.sums * self.decay + np.array([1.0, n, t, n * n, n * t])

    def _fit(self) -> None:
        w, sn, st, snn, snt = self.sums
        mean_n, mean_t = sn / w, st / w
        var, cov = snn / w - mean_n**2, snt / w - mean_n * mean_t
        if var > (SPREAD * mean_n) ** 2 and cov > 0:
            slope = cov / var
            intercept = mean_t - slope * mean_n
            if intercept < 0:
                slope, intercept = snt / snn, 0.0
            self.ms_per_byte = slope
            self.rtt_ms = self.base_ms + intercept
        else:
            self.ms_per_byte = max(mean_t, 1e-9) / mean_n
            self.rtt_ms = self.base_ms


class PlanSwitcher:
    """Keeps the current plan until the evidence says another is better, for long enough.

    ``plans`` is a ``splitc.runtime.plans.PlanSet``; intervals are ``[lo, hi)``
    in bytes/s. Hysteresis in value: with hysteresis ``h`` the current plan
    holds while ``lo / (1 + h) <= bandwidth < hi * (1 + h)``. Hysteresis in
    time: a switch needs the estimate outside that band on ``confirm``
    consecutive pieces of new evidence (``select``'s ``updates`` must change
    between them; without it each call counts), and at least ``dwell_s``
    seconds on the current plan. The first estimate ever seen switches at once.
    """

    def __init__(self, plans, hysteresis: float = 0.15, initial_bandwidth: float | None = None,
                 dwell_s: float = 1.0, confirm: int = 2) -> None:
        self.plans = plans
        self.hysteresis = hysteresis
        self.dwell_s = dwell_s
        self.confirm = confirm
        start = initial_bandwidth if initial_bandwidth is not None else plans.entries[0].interval[0]
        self.current = plans.for_bandwidth(start)
        self.switches = 0
        self.since = time.monotonic()
        self._streak = 0
        self._seen: int | None = None
        self._informed = initial_bandwidth is not None

    @property
    def pending(self) -> bool:
        """The estimate has left the current plan's band but the switch awaits confirmation."""
        return self._streak > 0

    def select(self, bandwidth: float | None, updates: int | None = None):
        """The plan to use for the next request, given the current estimate (and its evidence count)."""
        if bandwidth is None:
            return self.current
        lo, hi = self.current.interval
        fresh = updates is None or updates != self._seen
        self._seen = updates
        if lo / (1 + self.hysteresis) <= bandwidth < hi * (1 + self.hysteresis):
            self._streak = 0
            self._informed = True
            return self.current
        if fresh:
            self._streak += 1
        now = time.monotonic()
        ready = self._streak >= self.confirm and now - self.since >= self.dwell_s
        if self._informed and not ready:
            return self.current
        self._informed = True
        chosen = self.plans.for_bandwidth(bandwidth)
        if chosen.id != self.current.id:
            self.current = chosen
            self.switches += 1
            self.since = now
        self._streak = 0
        return self.current
