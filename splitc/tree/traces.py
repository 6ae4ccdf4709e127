"""Link traces in mahimahi's format: parsing, rates, exact transfer times, and synthetic traces.

A trace file holds one integer per line: a millisecond at which one
1500-byte packet may cross the link. Several lines may share a millisecond;
the trace repeats with its period, its last timestamp (a file holding just
``1`` is a 12 Mbps link). Parsing is shared with the runtime's link emulator
(:func:`splitc.runtime.netem.read_trace`), so both accept and reject the same
files, with the same one-line messages naming the file and the line.

Rates: :meth:`Trace.rate_bps` is in **bits** per second (the ``bps`` of the
command line); the tree's Markov chain and plans use bytes per second.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import numpy as np

from splitc.errors import SplitcError
from splitc.runtime.netem import MTU, TraceError, check_trace, read_trace

__all__ = ["MTU", "Trace", "TraceError", "load_trace", "synthetic_trace"]


class Trace:
    """A trace's delivery opportunities (``timestamps``, ms) repeating every ``period_ms``.

    Opportunity ``g`` (0-based, counting through the repeats) is at
    ``timestamps[g % n] + (g // n) * period_ms`` with ``n`` lines.
    """

    def __init__(self, timestamps: Sequence[int], source: str = "trace") -> None:
        self.timestamps = np.asarray(check_trace(timestamps, source), dtype=np.int64)
        self.period_ms = int(self.timestamps[-1])
        self.source = source

    @property
    def opportunities(self) -> int:
        """Delivery opportunities in one period."""
        return len(self.timestamps)

    @property
    def mean_rate_bps(self) -> float:
        """Mean rate over one period, bits/s."""
        return self.opportunities * MTU * 8 * 1e3 / self.period_ms

    def count(self, t_ms, inclusive: bool = True) -> np.ndarray:
        """Opportunities at times ``<= t_ms`` (``< t_ms`` if not ``inclusive``) since time 0; vectorised."""
        t = np.asarray(t_ms, dtype=float)
        side = "right" if inclusive else "left"
        cycle = np.floor(np.maximum(t, 0.0) / self.period_ms)
        total = np.maximum(cycle - 1, 0) * self.opportunities
        for shift in (1, 0):  # the cycle before the one containing t, and that one
            n = cycle - shift
            hits = np.searchsorted(self.timestamps, t - n * self.period_ms, side=side)
            total = total + np.where(n >= 0, hits, 0)
        return total.astype(np.int64)

    def opportunity_ms(self, index) -> np.ndarray:
        """Time (ms) of opportunity ``index`` (0-based, through the repeats); vectorised."""
        cycle, position = np.divmod(np.asarray(index, dtype=np.int64), self.opportunities)
        return self.timestamps[position] + cycle * self.period_ms

    def delivery_ms(self, start_ms, nbytes) -> np.ndarray:
        """When the last of ``nbytes`` sent at ``start_ms`` has crossed, on an otherwise idle link.

        The bytes take ``ceil(nbytes / 1500)`` consecutive opportunities, the
        first at or after ``start_ms``; zero bytes arrive at once.
        """
        start = np.asarray(start_ms, dtype=float)
        packets = np.ceil(np.asarray(nbytes, dtype=float) / MTU).astype(np.int64)
        last = self.count(start, inclusive=False) + np.maximum(packets, 1) - 1
        return np.where(packets > 0, self.opportunity_ms(last), start).astype(float)

    def rate_bps(self, window_s: float, duration_s: float | None = None) -> np.ndarray:
        """Rate (bits/s) of consecutive windows of ``window_s`` from time 0: 1500 x 8 bits per opportunity.

        Windows are ``(i w, (i + 1) w]`` in ms, so an opportunity at the end of a
        window counts in it. By default they cover one period (its whole
        windows, at least one); ``duration_s`` covers a longer stretch of the
        repeating trace.
        """
        if not window_s > 0:
            raise SplitcError(f"{self.source}: the rate window must be positive, not {window_s}")
        window_ms = window_s * 1e3
        span_ms = self.period_ms if duration_s is None else duration_s * 1e3
        windows = max(1, math.floor(span_ms / window_ms + 1e-9))
        counts = np.diff(self.count(np.arange(windows + 1) * window_ms))
        return counts * MTU * 8 / window_s

    def __repr__(self) -> str:
        return (f"Trace({self.source!r}, {self.opportunities} opportunities, {self.period_ms} ms, "
                f"{self.mean_rate_bps / 1e6:.2f} Mbps)")


def load_trace(path: str | os.PathLike) -> Trace:
    """Read and check a mahimahi trace file (``TraceError``, naming the file and line, if it is bad)."""
    return Trace(read_trace(path), str(path))


def synthetic_trace(rates_mbps: Sequence[float], seconds_each: float) -> list[int]:
    """A mahimahi trace (timestamps, ms) holding each rate of ``rates_mbps`` for ``seconds_each`` in turn.

    Packets are spread evenly: a running total of the bits the rates allow is
    kept, and a millisecond gets as many opportunities as whole packets the
    total completes in it. The last packet is moved to the final millisecond,
    so the period is exactly ``len(rates_mbps) * seconds_each`` seconds.
    Rates may be 0 (an outage) but not all of them.
    """
    rates = np.asarray(list(rates_mbps), dtype=float)
    if rates.size == 0 or not np.all(np.isfinite(rates)) or np.any(rates < 0):
        raise SplitcError(f"synthetic trace: the rates must be a non-empty list of numbers >= 0, not {rates_mbps}")
    each_ms = round(seconds_each * 1e3)
    if each_ms < 1:
        raise SplitcError(f"synthetic trace: each rate must last at least 1 ms, not {seconds_each} s")
    per_ms = np.repeat(rates * 1e6 / 8 / MTU / 1e3, each_ms)  # packets per millisecond
    whole = np.floor(np.cumsum(per_ms) + 1e-9).astype(np.int64)
    delivered = np.diff(whole, prepend=0)
    stamps = np.repeat(np.arange(1, per_ms.size + 1), delivered)
    if stamps.size == 0:
        raise SplitcError(f"synthetic trace: rates {list(rates_mbps)} for {seconds_each} s carry no packet")
    stamps[-1] = per_ms.size
    return stamps.tolist()
