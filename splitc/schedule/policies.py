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

import numpy as np

from splitc.schedule.book import _MIN_SHARE, Book, Placement, Schedule, check_feasible  # noqa: F401
from splitc.schedule.rolling import RollingOnline
from splitc.schedule.scenario import MODES, USES, Scenario, ScenarioError



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


def _at_allocable_bandwidth(scenario, book, i, mode, e, t):
    """(seconds, placement) of task ``i`` starting at ``t`` with the bandwidth allocable then, re-partitioned
    for it; None when it does not fit."""
    fit = book.fit(i, mode, e, t, lambda b1, b2: scenario.task_seconds(i, mode, e, b1, b2))
    if fit is None:
        return None
    b1, b2, seconds = fit
    return seconds, Placement(i, mode, e, t, t + seconds, b1, b2)


class SplitcOnline(_Online):
    """DeePar's events and commitment at arrival, ranked by the real finish: the exact partition re-solved
    at the bandwidth really allocable, plus the wait."""

    name = "splitc greedy"

    def candidate(self, scenario, book, i, mode, e, t):
        return _at_allocable_bandwidth(scenario, book, i, mode, e, t)


class SingleMode(_Online):
    """Every task in one mode (device / edge-only / cloud-only), earliest finish over its edge servers."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.modes = (mode,)
        self.name = {"device": "device-only"}.get(mode, mode)

    def candidate(self, scenario, book, i, mode, e, t):
        return _at_allocable_bandwidth(scenario, book, i, mode, e, t)


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


POLICIES = {
    "device-only": lambda: SingleMode("device"),
    "edge-only": lambda: SingleMode("edge-only"),
    "cloud-only": lambda: SingleMode("cloud-only"),
    "deepar": DeeparOnline,
    "splitc": RollingOnline,
    "splitc-greedy": SplitcOnline,
}


def run_policy(scenario: Scenario, name: str, time_limit: float = 60.0) -> Schedule:
    """Run policy ``name`` (a key of ``POLICIES``, or ``ilp``) on ``scenario``; ``time_limit`` is CBC's."""
    if name == "ilp":
        return solve_ilp(scenario, time_limit)
    if name not in POLICIES:
        raise ScenarioError(f"unknown policy {name!r}; choose from {', '.join([*POLICIES, 'ilp'])}")
    return POLICIES[name]().run(scenario)
