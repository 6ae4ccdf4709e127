"""What a schedule is and what it holds: placements, schedules, the feasibility check and the resource book.

A task holds, for its whole run, one of its edge server's slots (modes edge / full), device-edge
bandwidth b1 and backbone bandwidth b2 (see :mod:`splitc.schedule.policies`). ``Book`` records what is
held over time and answers when a task of a given mode fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from splitc.schedule.scenario import USES, Scenario

_MIN_SHARE = 1e-3  # an allocation below this fraction of the task's cap counts as no bandwidth


@dataclass
class Placement:
    """Task ``task`` in ``mode`` via edge server ``edge`` over [start, end) with bandwidths b1, b2 (B/s)."""

    task: int
    mode: str
    edge: int | None
    start: float
    end: float
    b1: float
    b2: float
    tier: np.ndarray | None = field(default=None, repr=False)


@dataclass
class Schedule:
    """One placement per task (in task order) and the tasks' arrival times."""

    policy: str
    placements: list[Placement]
    arrivals: np.ndarray
    optimal: bool | None = None  # ILP only: CBC proved optimality
    note: str = ""

    @property
    def delays(self) -> np.ndarray:
        return np.array([p.end for p in self.placements]) - self.arrivals

    @property
    def total_s(self) -> float:
        return float(self.delays.sum())

    @property
    def mean_s(self) -> float:
        return float(self.delays.mean())

    def to_dict(self, scenario: Scenario) -> dict:
        return {"policy": self.policy, "total_delay_s": self.total_s, "mean_delay_s": self.mean_s,
                "optimal": self.optimal, "note": self.note,
                "tasks": [{"device": scenario.devices[p.task].name, "mode": p.mode,
                           "edge": None if p.edge is None else scenario.edges[p.edge].name,
                           "arrival_s": float(self.arrivals[p.task]), "start_s": p.start, "end_s": p.end,
                           "delay_s": p.end - float(self.arrivals[p.task]),
                           "uplink_mbps": p.b1 * 8 / 1e6, "backbone_mbps": p.b2 * 8 / 1e6}
                          for p in sorted(self.placements, key=lambda p: p.task)]}


def check_feasible(scenario: Scenario, placements: list[Placement], tol: float = 1e-6) -> None:
    """Raise AssertionError if some edge server is over its slots or bandwidths at some instant."""
    for e, edge in enumerate(scenario.edges):
        mine = [p for p in placements if p.edge == e]
        for t in {p.start for p in mine}:
            live = [p for p in mine if p.start <= t < p.end]
            slots = sum(USES[p.mode][0] for p in live)
            b1 = sum(p.b1 * USES[p.mode][1] for p in live)
            b2 = sum(p.b2 * USES[p.mode][2] for p in live)
            assert slots <= edge.slots, f"{edge.name}: {slots} tasks > {edge.slots} slots at {t}"
            assert b1 <= edge.uplink * (1 + tol), f"{edge.name}: uplink over capacity at {t}"
            assert b2 <= edge.backbone * (1 + tol), f"{edge.name}: backbone over capacity at {t}"
    for p in placements:
        d = scenario.devices[p.task]
        assert p.b1 <= d.max_uplink * (1 + tol) and p.b2 <= d.max_backbone * (1 + tol)
        assert p.mode == "device" or p.edge in d.edges, f"{d.name} placed on an edge it does not reach"
        assert p.start >= d.arrival_s - tol


class Book:
    """Reservations per edge server, with the free capacity over a time interval."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.placed: list[Placement] = []

    def free(self, e: int, t0: float, t1: float) -> tuple[int, float, float]:
        """Least free (slots, b1, b2) of edge server ``e`` over [t0, t1)."""
        edge = self.scenario.edges[e]
        mine = [p for p in self.placed if p.edge == e and p.start < t1 and p.end > t0]
        worst = [0, 0.0, 0.0]
        for t in {t0, *[p.start for p in mine if p.start > t0]}:
            live = [p for p in mine if p.start <= t < p.end]
            worst[0] = max(worst[0], sum(USES[p.mode][0] for p in live))
            worst[1] = max(worst[1], sum(p.b1 * USES[p.mode][1] for p in live))
            worst[2] = max(worst[2], sum(p.b2 * USES[p.mode][2] for p in live))
        return edge.slots - worst[0], edge.uplink - worst[1], edge.backbone - worst[2]

    def events(self, now: float) -> list[float]:
        """``now`` and every start or end after it (DeePar's known events), in order."""
        return sorted({now, *[t for p in self.placed for t in (p.start, p.end) if t > now]})

    def fit(self, i: int, mode: str, e: int | None, t: float, duration) -> tuple[float, float, float] | None:
        """Maximal allocation for a task starting at t: (b1, b2, seconds), or None if it does not fit.

        ``duration(b1, b2)`` gives the run time; bandwidth is the least free over the whole run.
        """
        d = self.scenario.devices[i]
        if mode == "device":
            return 0.0, 0.0, duration(0.0, 0.0)
        slot, u1, u2 = USES[mode]
        b1 = d.max_uplink if u1 else 0.0
        b2 = d.max_backbone if u2 else 0.0
        end = t + 1e-9
        for _ in range(8):
            s, f1, f2 = self.free(e, t, end)
            if slot and s < 1:
                return None
            nb1, nb2 = (min(b1, f1) if u1 else 0.0), (min(b2, f2) if u2 else 0.0)
            if (u1 and nb1 < _MIN_SHARE * d.max_uplink) or (u2 and nb2 < _MIN_SHARE * d.max_backbone):
                return None
            seconds = duration(nb1 if u1 else math.inf, nb2 if u2 else math.inf)
            if nb1 == b1 and nb2 == b2 and t + seconds <= end:
                return b1, b2, seconds
            b1, b2, end = nb1, nb2, max(end, t + seconds)
        return None
