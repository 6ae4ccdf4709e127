"""Schedulers for many devices' tasks on shared edge servers, and the event simulator they run in.

Resource model (DeePar section III): a task holds, for its whole run, one of its edge server's ``slots``
(modes edge / full), device-edge bandwidth b1 <= B_i^1 out of B_e^1 (every mode but device) and backbone
bandwidth b2 <= B_i^2 out of B_e^2 (modes cloud / full); its samples run back to back, so it lasts
N_i x (per-sample delay at b1, b2). A task's delay is its finish time minus its arrival.

* :func:`solve_ilp` -- the offline batch problem, DeePar eqs. 20-25, exactly, with pulp/CBC: every task
  at once, b = B_i, one option per task. Its answer is feasible whatever the arrival times.
* :class:`DeeparOnline` -- Algorithm 1: at each arrival, for each known event not before it (now, and the
  start and end of every scheduled task) and each option j, allocate the maximal bandwidth; pick the least
  w_{i,j} + delta_t, where w is the precomputed matrix at the full bandwidths. The task then runs its
  precomputed partition at the bandwidth it actually got.
* :class:`SplitcOnline` (``splitc-greedy``) -- the same events, options and commitment at arrival, but each
  candidate is priced by what it will really take: the exact partition re-solved at the bandwidth actually
  allocable then (the three-tier solve takes about a millisecond), plus the wait.
* :class:`splitc.schedule.rolling.RollingOnline` (``splitc``) -- splitc's online policy: nothing is final
  until a task starts; the waiting tasks are re-planned together at every event.
* :class:`SingleMode` -- device-only / edge-only / cloud-only baselines, earliest finish.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from splitc.schedule.scenario import MODES, USES, Scenario, ScenarioError

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


class _Online(ABC):
    """An event-driven policy: tasks in arrival order, each placed by the cheapest ``candidate``."""

    name = "online"
    modes = MODES

    def run(self, scenario: Scenario) -> Schedule:
        book = Book(scenario)
        order = sorted(range(len(scenario.devices)), key=lambda i: (scenario.devices[i].arrival_s, i))
        for i in order:
            book.placed.append(self.place(scenario, book, i))
        arrivals = np.array([d.arrival_s for d in scenario.devices])
        return Schedule(self.name, sorted(book.placed, key=lambda p: p.task), arrivals)

    def place(self, scenario: Scenario, book: Book, i: int) -> Placement:
        now = scenario.devices[i].arrival_s
        best, best_key = None, math.inf
        options = scenario.options(i, self.modes)
        if not options:
            options = scenario.options(i, ("device",)) or scenario.options(i)
        for t in book.events(now):
            if best is not None and t - now >= best_key:
                break  # waiting longer cannot win
            for mode, e in options:
                cand = self.candidate(scenario, book, i, mode, e, t)
                if cand is None:
                    continue
                key, placement = cand
                key += t - now
                if key < best_key:
                    best, best_key = placement, key
        if best is None:
            raise ScenarioError(f"device {scenario.devices[i].name!r} cannot be placed by {self.name}")
        return best

    @abstractmethod
    def candidate(self, scenario, book, i, mode, e, t):
        """``(ranking key, placement)`` of task ``i`` in ``mode`` via edge ``e`` from time ``t``, or None."""


class DeeparOnline(_Online):
    """DeePar's Algorithm 1 (events, maximal bandwidth, delayed scheduling), ranked by the precomputed W."""

    name = "DeePar online"

    def candidate(self, scenario, book, i, mode, e, t):
        d = scenario.devices[i]
        w_ms, tier = scenario.sample_plan(i, mode, e, d.max_uplink, d.max_backbone)
        fit = book.fit(i, mode, e, t, lambda b1, b2: d.samples * scenario.priced(i, e, tier, b1, b2) / 1e3)
        if fit is None:
            return None
        b1, b2, seconds = fit
        return d.samples * w_ms / 1e3, Placement(i, mode, e, t, t + seconds, b1, b2, tier)


class SplitcOnline(_Online):
    """DeePar's events and commitment at arrival, ranked by the real finish: the exact partition re-solved
    at the bandwidth really allocable, plus the wait."""

    name = "splitc greedy"

    def candidate(self, scenario, book, i, mode, e, t):
        fit = book.fit(i, mode, e, t, lambda b1, b2: scenario.task_seconds(i, mode, e, b1, b2))
        if fit is None:
            return None
        b1, b2, seconds = fit
        return seconds, Placement(i, mode, e, t, t + seconds, b1, b2)


class SingleMode(_Online):
    """Every task in one mode (device / edge-only / cloud-only), earliest finish over its edge servers."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.modes = (mode,)
        self.name = {"device": "device-only"}.get(mode, mode)

    def candidate(self, scenario, book, i, mode, e, t):
        fit = book.fit(i, mode, e, t, lambda b1, b2: scenario.task_seconds(i, mode, e, b1, b2))
        if fit is None:
            return None
        b1, b2, seconds = fit
        return seconds, Placement(i, mode, e, t, t + seconds, b1, b2)


# -- the offline ILP -----------------------------------------------------------------------------------
FAMILIES = {"slots": "edge-slot constraints (21): sum of edge/full tasks <= r_e",
            "uplink": "device-edge bandwidth constraints (22): sum of b_i^1 <= B_e^1",
            "backbone": "backbone bandwidth constraints (23): sum of b_i^2 <= B_e^2"}


def _ilp(scenario: Scenario, W: np.ndarray, families=("slots", "uplink", "backbone"), time_limit: float = 60.0):
    import pulp

    n, m = W.shape[0], len(scenario.edges)
    prob = pulp.LpProblem("deepar", pulp.LpMinimize)
    q = {(i, j): pulp.LpVariable(f"q_{i}_{j}", cat="Binary") for i in range(n) for j in range(3 * m + 1)
         if np.isfinite(W[i, j])}
    prob += pulp.lpSum(float(W[i, j]) * v for (i, j), v in q.items())
    for i in range(n):  # (24)
        prob += pulp.lpSum(v for (k, _), v in q.items() if k == i) == 1, f"one_{i}"
    dev = scenario.devices
    for e, edge in enumerate(scenario.edges):
        j_edge, j_cloud, j_full = 1 + e, 1 + m + e, 1 + 2 * m + e
        if "slots" in families:  # (21)
            prob += pulp.lpSum(q[i, j] for i in range(n) for j in (j_edge, j_full) if (i, j) in q) <= edge.slots
        if "uplink" in families:  # (22)
            prob += pulp.lpSum(dev[i].max_uplink * q[i, j] for i in range(n) for j in (j_edge, j_cloud, j_full)
                               if (i, j) in q) <= edge.uplink
        if "backbone" in families:  # (23)
            prob += pulp.lpSum(dev[i].max_backbone * q[i, j] for i in range(n) for j in (j_cloud, j_full)
                               if (i, j) in q) <= edge.backbone
    status = prob.solve(pulp.PULP_CBC_CMD(msg=0, timeLimit=time_limit))
    return prob, q, pulp.LpStatus[status], prob.sol_status


def solve_ilp(scenario: Scenario, time_limit: float = 60.0) -> Schedule:
    """DeePar eqs. 20-25 with pulp/CBC; every task starts at its arrival with b = B_i."""
    W = scenario.delay_matrix()
    m = len(scenario.edges)
    prob, q, status, sol_status = _ilp(scenario, W, time_limit=time_limit)
    if status == "Infeasible":
        binding = [f for f in FAMILIES if _ilp(scenario, W, tuple(x for x in FAMILIES if x != f),
                                               time_limit)[2] != "Infeasible"]
        what = "; ".join(FAMILIES[f] for f in binding) or "more than one family at once (all three together)"
        raise ScenarioError(f"the ILP is infeasible: it binds on the {what} (some device cannot run locally "
                            "and its edge servers cannot take every such device)")
    if sol_status not in (1, 2):
        raise ScenarioError(f"CBC found no solution within {time_limit:g} s (status {status})")
    placements = []
    for i, d in enumerate(scenario.devices):
        j = next(j for j in range(3 * m + 1) if (i, j) in q and (q[i, j].value() or 0) > 0.5)
        mode = "device" if j == 0 else MODES[1 + (j - 1) // m]
        e = None if j == 0 else (j - 1) % m
        b1 = d.max_uplink if USES[mode][1] else 0.0
        b2 = d.max_backbone if USES[mode][2] else 0.0
        placements.append(Placement(i, mode, e, d.arrival_s, d.arrival_s + float(W[i, j]), b1, b2))
    arrivals = np.array([d.arrival_s for d in scenario.devices])
    return Schedule("offline ILP", placements, arrivals, optimal=sol_status == 1,
                    note="" if sol_status == 1 else f"CBC stopped at {time_limit:g} s (feasible, not proved optimal)")


def _rolling():
    from splitc.schedule.rolling import RollingOnline  # imports this module

    return RollingOnline()


POLICIES = {
    "device-only": lambda: SingleMode("device"),
    "edge-only": lambda: SingleMode("edge-only"),
    "cloud-only": lambda: SingleMode("cloud-only"),
    "deepar": DeeparOnline,
    "splitc": _rolling,
    "splitc-greedy": SplitcOnline,
}


def run_policy(scenario: Scenario, name: str, time_limit: float = 60.0) -> Schedule:
    """Run policy ``name`` (a key of ``POLICIES``, or ``ilp``) on ``scenario``; ``time_limit`` is CBC's."""
    if name == "ilp":
        return solve_ilp(scenario, time_limit)
    if name not in POLICIES:
        raise ScenarioError(f"unknown policy {name!r}; choose from {', '.join([*POLICIES, 'ilp'])}")
    return POLICIES[name]().run(scenario)
