"""Skip the accuracy measurement of cuts that cannot be optimal anywhere in the bandwidth range.

Measuring a cut's accuracy drop runs its cloud half over the whole calibration
set at every bit width, the slow part of a compile. Many cuts never win: their
best case is slower than an option that is known to be feasible without any
measurement. In ``x = 1/bandwidth`` every option's latency is a line
``a + b·x`` (``a`` = edge + cloud + RTT ms, ``b`` = bytes on the wire, scaled):

* known feasible (no drop): edge-only, and every cut sent as raw float32;
* a cut's best case: its times with its smallest frame (the narrowest width
  allowed; a tensor quantized to fewer bits is never larger on the wire).

A cut is dropped when its best-case line lies strictly above the lower
envelope of the known-feasible lines at every ``x`` of the range. During
calibration the envelope keeps tightening (``FeasibleEnvelope.add``): every
(cut, width) found within the bound joins it, and a later cut or width whose
line is above it everywhere is not measured either (for instance, once a
JPEG-coded input passes, most cuts of a network cannot beat it). The
difference is convex in ``x`` (a line minus a concave envelope), so checking
the range's ends and the envelope's breakpoints inside it is exact.
"""

from __future__ import annotations

from itertools import combinations
from typing import Callable


RAW_HEADER_BYTES = 64  # a generous bound on a raw frame's header, so the upper lines stay upper


def times(analysis, cut: tuple[str, ...]) -> tuple[float, float]:
    """(fixed ms, bytes on the wire besides the cut tensors) of sending ``cut``."""
    part = analysis.partition_for(cut)
    fixed = part.edge_ms + part.cloud_ms + (analysis.problem.rtt_ms if cut else 0.0)
    return fixed, float(part.down_bytes if cut else 0.0)


def raw_bytes(analysis, cut: tuple[str, ...]) -> float:
    return float(sum(4 * analysis.graph.values[t].numel + RAW_HEADER_BYTES for t in cut))


def prune(analysis, cuts: list[tuple[str, ...]], bandwidths: tuple[float, float],
          smallest_bytes: Callable[[tuple[str, ...]], float], edge_only: bool = True,
          raw: bool | Callable[[tuple[str, ...]], bool] = True) -> list[tuple[str, ...]]:
    """The cuts of ``cuts`` (non-empty) that could be optimal somewhere in ``bandwidths`` (bytes/s).

    ``edge_only`` and ``raw`` (for all cuts, or per cut) say whether edge-only
    and the raw float32 cuts are known to meet the bound: with a float16 edge
    half only the model inputs sent raw are.
    """
    known = FeasibleEnvelope(analysis, cuts, bandwidths, edge_only, raw)
    return [cut for cut in cuts if known.worth(cut, smallest_bytes(cut))]


class FeasibleEnvelope:
    """The lower envelope of options known to meet the accuracy bound, over a bandwidth range.

    It starts with the options feasible without measurement (edge-only, raw
    float32 cuts); ``add`` puts in each option that calibration finds within
    the bound, so that later candidates face the best feasible option so far.
    """

    def __init__(self, analysis, cuts: list[tuple[str, ...]], bandwidths: tuple[float, float],
                 edge_only: bool = True, raw: bool | Callable[[tuple[str, ...]], bool] = True) -> None:
        lo, hi = bandwidths
        self.x_range = (1e3 / hi, 1e3 / lo)  # ms per byte
        self.base = {cut: times(analysis, cut) for cut in cuts}
        self.lines = [(times(analysis, ())[0], 0.0)] if edge_only else []
        exact = raw if callable(raw) else (lambda _cut: raw)
        self.lines += [(a, down + raw_bytes(analysis, cut)) for cut, (a, down) in self.base.items() if exact(cut)]
        self._refresh()

    def _refresh(self) -> None:
        self.points, self.envelope = envelope_at(self.lines, self.x_range) if self.lines else ([], [])

    def worth(self, cut: tuple[str, ...], sent_bytes: float) -> bool:
        """False when sending ``cut`` as ``sent_bytes`` is slower than a known-feasible option everywhere."""
        if not self.lines:
            return True
        a, down = self.base[cut]
        return witness((a, down + sent_bytes), self.points, self.envelope) is not None

    def add(self, cut: tuple[str, ...], sent_bytes: float) -> None:
        """A (cut, size) found to meet the bound."""
        a, down = self.base[cut]
        self.lines.append((a, down + sent_bytes))
        self._refresh()


def witness(line: tuple[float, float], points: list[float], envelope: list[float]) -> float | None:
    """An ``x`` where ``line`` is not above the envelope (given at ``points``), or None if it is above everywhere."""
    a, b = line
    for x, bound in zip(points, envelope):
        if a + b * x <= bound * (1 + 1e-9):
            return x
    return None


def envelope_at(lines: list[tuple[float, float]], x_range: tuple[float, float]) -> tuple[list[float], list[float]]:
    """The points that decide ``witness`` for ``lines`` over ``x_range``, and the envelope's value there."""
    points = _points(lines, x_range)
    return points, [min(a + b * x for a, b in lines) for x in points]


def _points(lines: list[tuple[float, float]], x_range: tuple[float, float]) -> list[float]:
    """The range's ends and every crossing of two lines inside it (a superset of the envelope's breakpoints)."""
    x_lo, x_hi = x_range
    points = {x_lo, x_hi}
    unique = sorted(set(lines))
    for (a1, b1), (a2, b2) in combinations(unique, 2):
        if b1 != b2:
            x = (a2 - a1) / (b1 - b2)
            if x_lo < x < x_hi:
                points.add(x)
    return sorted(points)
