"""splitc's online scheduler: decisions deferred until a task starts, re-planned at every event.

A task's mode, edge server, bandwidth and start are final only when it starts. At every event (an arrival,
the end of a running task, a planned start) the tasks that have arrived but not started are planned again,
together, over the capacity the running tasks leave free:

* candidate orders of the waiting tasks: arrival order, shortest run first, largest saving over device-only
  per second of run first, and the order of the exact optimum of a relaxation (below);
* each order is list-scheduled: every task in turn takes its earliest finish over its options and the
  times capacity frees (now, and the end of every running or already planned task), with the exact
  partition re-solved at the bandwidth allocable then and every capacity booked as in DeePar's Algorithm 1;
* the plan with the least total finish time of the waiting tasks wins; its tasks that start now start, the
  others wait for the next event.

Relaxation: with bandwidth left out, placing the waiting tasks on the edge slots is scheduling to minimise
total completion time on unrelated parallel machines, which is an assignment problem (Horn; Bruno, Coffman
and Sethi): a task in the k-th last position of a slot free from time a costs (a - now) + k x (its run
time there), and a task off the slots (device-only, or device + cloud) costs its run time. The assignment is
solved exactly (:func:`scipy.optimize.linear_sum_assignment`); its slots and order seed one more plan, still
checked against every capacity.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import linear_sum_assignment

from splitc.schedule.book import Book, Placement, Schedule
from splitc.schedule.scenario import USES, Scenario, ScenarioError

_EPS = 1e-9
_BIG = 1e15


class Ledger(Book):
    """Capacity booked on each edge server: (start, end, slot, b1, b2) of started and planned tasks."""

    def __init__(self, scenario: Scenario) -> None:
        super().__init__(scenario)
        self.rows: list[list[tuple]] = [[] for _ in scenario.edges]

    @staticmethod
    def _row(p: Placement) -> tuple:
        slot, u1, u2 = USES[p.mode]
        return p.start, p.end, slot, p.b1 * u1, p.b2 * u2

    def add(self, p: Placement) -> None:
        if p.edge is not None and p.mode != "device":
            self.rows[p.edge].append(self._row(p))

    def remove(self, p: Placement) -> None:
        if p.edge is not None and p.mode != "device":
            self.rows[p.edge].remove(self._row(p))

    def prune(self, now: float) -> None:
        """Forget what is over by ``now``."""
        self.rows = [[r for r in rows if r[1] > now] for rows in self.rows]

    def free(self, e: int, t0: float, t1: float) -> tuple[int, float, float]:
        """Least free (slots, b1, b2) of edge server ``e`` over [t0, t1)."""
        edge = self.scenario.edges[e]
        mine = [r for r in self.rows[e] if r[0] < t1 and r[1] > t0]
        worst = [0, 0.0, 0.0]
        for t in {t0, *[r[0] for r in mine if r[0] > t0]}:
            live = [r for r in mine if r[0] <= t < r[1]]
            for k in range(3):
                worst[k] = max(worst[k], sum(r[2 + k] for r in live))
        return edge.slots - worst[0], edge.uplink - worst[1], edge.backbone - worst[2]

    def ends(self, now: float, edges) -> list[float]:
        """``now`` and every later end on the given edge servers, in order: the only times capacity frees."""
        return sorted({now, *[r[1] for e in edges for r in self.rows[e] if r[1] > now]})

    def slot_free_at(self, e: int, now: float) -> list[float]:
        """When each slot of edge server ``e`` is free from (``now`` for the idle ones), started tasks only."""
        busy = sorted(r[1] for r in self.rows[e] if r[2] and r[0] <= now + _EPS < r[1])
        slots = self.scenario.edges[e].slots
        return [now] * max(slots - len(busy), 0) + busy[:slots]


class RollingOnline:
    """splitc's online policy (see the module docstring): re-plan the waiting tasks at every event."""

    name = "splitc online"

    def __init__(self, relaxation: bool = True) -> None:
        self.relaxation = relaxation

    # -- one task ------------------------------------------------------------------------------------
    def nominal(self, scn: Scenario, i: int, mode: str, e: int | None) -> float:
        """Task i's run time (s) in ``mode`` via ``e`` at its full bandwidth caps."""
        d = scn.devices[i]
        return scn.task_seconds(i, mode, e, d.max_uplink, d.max_backbone)

    def best(self, scn: Scenario, ledger: Ledger, i: int, now: float, options=None) -> Placement:
        """Task i's earliest finish from ``now`` over ``options`` (default: all of its options)."""
        d = scn.devices[i]
        opts = [(mode, e, self.nominal(scn, i, mode, e)) for mode, e in options or scn.options(i)]
        best, finish, settled = None, math.inf, set()
        for t in ledger.ends(now, d.edges):
            if t >= finish:
                break
            for k, (mode, e, fastest) in enumerate(opts):
                if k in settled or t + fastest >= finish or (mode == "device" and t > now):
                    continue
                fit = ledger.fit(i, mode, e, t, lambda b1, b2, m=mode, x=e: scn.task_seconds(i, m, x, b1, b2))
                if fit is None:
                    continue
                b1, b2, seconds = fit
                if seconds <= fastest * (1 + 1e-9):
                    settled.add(k)  # full bandwidth already: starting later cannot finish earlier
                if t + seconds < finish:
                    best, finish = Placement(i, mode, e, t, t + seconds, b1, b2), t + seconds
        if best is None:
            raise ScenarioError(f"device {d.name!r} cannot be placed by {self.name}")
        return best

    # -- all waiting tasks ---------------------------------------------------------------------------
    def list_schedule(self, scn: Scenario, ledger: Ledger, order, now: float) -> tuple[float, list[Placement]]:
        """Place ``order`` (task ids, or (task, mode, edge) to fix the option) in turn: (total finish, plan)."""
        plan = []
        for item in order:
            i, options = (item[0], [item[1:]]) if isinstance(item, tuple) else (item, None)
            p = self.best(scn, ledger, i, now, options)
            ledger.add(p)
            plan.append(p)
        for p in plan:
            ledger.remove(p)
        return sum(p.end for p in plan), plan

    def orders(self, scn: Scenario, ledger: Ledger, waiting: list[int], now: float) -> list[tuple]:
        """The candidate orders of the waiting tasks (see the module docstring)."""
        out = [tuple(waiting)]  # waiting is in arrival order
        if len(waiting) > 1:
            run = {i: min(self.nominal(scn, i, m, e) for m, e in scn.options(i)) for i in waiting}
            out.append(tuple(sorted(waiting, key=lambda i: (run[i], i))))
            out.append(tuple(sorted(waiting, key=lambda i: (-self.saving_rate(scn, i), i))))
            if self.relaxation:
                fixed = assignment_order(scn, ledger, waiting, now, self.nominal)
                out += [tuple(fixed), tuple(i for i, _, _ in fixed)]
        return list(dict.fromkeys(out))

    def saving_rate(self, scn: Scenario, i: int) -> float:
        """Seconds saved over device-only per second of the fastest option that holds edge resources."""
        d = scn.devices[i]
        remote = min((self.nominal(scn, i, m, e) for m, e in scn.options(i) if m != "device"), default=math.inf)
        local = self.nominal(scn, i, "device", None) if d.local else math.inf
        return (local - remote) / remote if remote < math.inf else -math.inf

    def plan(self, scn: Scenario, ledger: Ledger, waiting: list[int], now: float) -> list[Placement]:
        """The cheapest of the candidate orders' list schedules."""
        return min((self.list_schedule(scn, ledger, o, now) for o in self.orders(scn, ledger, waiting, now)),
                   key=lambda cost_plan: cost_plan[0])[1]

    # -- the simulator ---------------------------------------------------------------------------------
    def run(self, scn: Scenario) -> Schedule:
        """Simulate the arrivals; a task is committed when a plan starts it at the current event."""
        n = len(scn.devices)
        arrival = [float(d.arrival_s) for d in scn.devices]
        pending = sorted(range(n), key=lambda i: (arrival[i], i))[::-1]
        ledger, started, waiting, planned = Ledger(scn), [], [], []
        now = 0.0
        while pending or waiting:
            times = [arrival[pending[-1]]] if pending else []
            if waiting:
                times += [r[1] for rows in ledger.rows for r in rows if r[1] > now + _EPS]
                times += [p.start for p in planned if p.start > now + _EPS]
            now = max(now, min(times))
            while pending and arrival[pending[-1]] <= now + _EPS:
                waiting.append(pending.pop())
            ledger.prune(now)
            planned = []
            for p in self.plan(scn, ledger, waiting, now):
                if p.start <= now + _EPS:
                    ledger.add(p)
                    started.append(p)
                    waiting.remove(p.task)
                else:
                    planned.append(p)
        return Schedule(self.name, sorted(started, key=lambda p: p.task), np.array(arrival))


def assignment_order(scn: Scenario, ledger: Ledger, waiting: list[int], now: float, nominal) -> list[tuple]:
    """The exact optimum of the slot relaxation, as (task, mode, edge) in planned start order.

    Columns: position k (from the end) on each slot of each edge server, then one off-slot column per task
    (its fastest of device-only and device + cloud). ``nominal(scn, i, mode, e)`` gives run times.
    """
    w = len(waiting)
    slots = [(e, a) for e in range(len(scn.edges)) for a in ledger.slot_free_at(e, now)]
    cost = np.full((w, len(slots) * w + w), _BIG)
    on_slot, off_slot = {}, {}
    for r, i in enumerate(waiting):
        d = scn.devices[i]
        off = [(nominal(scn, i, m, e), m, e) for m, e in scn.options(i, ("device", "cloud"))]
        if off:
            off_slot[r] = min(off)
            cost[r, len(slots) * w + r] = off_slot[r][0]
        for e in d.edges:
            on_slot[r, e] = min((nominal(scn, i, m, e), m) for m in ("edge", "full"))
        for s, (e, a) in enumerate(slots):
            if (r, e) in on_slot:
                cost[r, s * w:(s + 1) * w] = (a - now) + np.arange(1, w + 1) * on_slot[r, e][0]
    rows, cols = linear_sum_assignment(cost)
    starts, queues = [], {}
    for r, c in zip(rows, cols):
        if c >= len(slots) * w:
            _, mode, e = off_slot[r]
            starts.append((now, waiting[r], mode, e))
        else:
            queues.setdefault(c // w, []).append((c % w, r))
    for s, queue in queues.items():
        e, t = slots[s]
        for _, r in sorted(queue, reverse=True):  # last position first from the end = first to run
            starts.append((t, waiting[r], on_slot[r, e][1], e))
            t += on_slot[r, e][0]
    return [(i, mode, e) for _, i, mode, e in sorted(starts, key=lambda x: (x[0], x[1]))]
