"""Segment-aware latency: measured prefix and suffix times at cut vertices.

A problem may carry ``edge_prefix_ms`` and ``cloud_suffix_ms`` (one entry per
value, NaN where unknown): the measured edge latency of the model computing
that value from the inputs, and the measured cloud latency of the model
computing the outputs from it. They are read at the *anchors*:

* the virtual source: prefix = a session computing nothing (the largest
  prefix measured at a graph input, 0 if none); suffix = the whole model on
  the cloud (read at the model's only input, if it has one);
* the cut vertices d_1 .. d_k;
* the virtual sink: prefix = the whole model on the edge (read at the model's
  only output, if it has one); suffix = a session computing nothing (the
  largest suffix measured at an unread graph output, 0 if none).

Where an anchor has no measurement it borrows the nearest measured one and
adds the per-node times in between (the prefix looks back, the suffix ahead).

An assignment is priced from two anchors. The *edge anchor* is the last one
whose producer and all ancestors run on the edge; the *cloud anchor* is the
first one whose consumers and all descendants run on the cloud:

    edge  = prefix(edge anchor)  + edge_ms of the other edge nodes
    cloud = suffix(cloud anchor) + cloud_ms of the other cloud nodes

and edge-only runs no cloud half (cloud = 0). So a split exactly at a cut
vertex is priced by the two measured times, and any other split by the
nearest measured prefix and suffix plus the per-node times of the nodes in
between. Inside the segment where the split happens this is modular, except
for two assignments: the whole segment on the cloud (then the cloud anchor is
the cut vertex that opens the segment) and, in the last segment, edge-only.
:func:`settle_segments` prices those exactly.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from splitc.partition.problem import SplitProblem

Pricing = Callable[[np.ndarray], np.ndarray]


def has_measured(problem: SplitProblem) -> bool:
    """Whether the problem carries measured prefix or suffix times."""
    return problem.edge_prefix_ms is not None or problem.cloud_suffix_ms is not None


def segments_of(problem: SplitProblem) -> tuple[np.ndarray, np.ndarray]:
    """Cut-vertex values and the segment (0..k) of every node."""
    from splitc.partition.cut_vertices import find_cut_vertices, layout

    cut_values = find_cut_vertices(problem)
    lay = layout(problem)
    return cut_values, np.searchsorted(lay.value_pos[cut_values], lay.node_pos)


def _only(mask: np.ndarray) -> int | None:
    found = np.flatnonzero(mask)
    return int(found[0]) if len(found) == 1 else None


def _measured(array: np.ndarray | None, index: int | None) -> float:
    return float(array[index]) if array is not None and index is not None else np.nan


def _largest(array: np.ndarray | None, mask: np.ndarray) -> float:
    """The largest measured entry among ``mask``, 0 if none."""
    found = array[mask] if array is not None else np.array([])
    found = found[~np.isnan(found)]
    return float(found.max()) if len(found) else 0.0


def _fill(base: np.ndarray, backward: bool) -> np.ndarray:
    """Carry known entries forward (or backward) over NaNs; the first (last) entry must be known."""
    values = base[::-1] if backward else base
    index = np.maximum.accumulate(np.where(np.isnan(values), 0, np.arange(len(values))))
    filled = values[index]
    return filled[::-1] if backward else filled


def anchor_times(problem: SplitProblem, cut_values: np.ndarray, segment: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prefix and suffix time at the anchors (source, cut vertices, sink): two (k + 2,) arrays."""
    k = len(cut_values)
    prefix, suffix = problem.edge_prefix_ms, problem.cloud_suffix_ms
    own_edge = np.bincount(segment, weights=problem.edge_ms, minlength=k + 1)
    own_cloud = np.bincount(segment, weights=problem.cloud_ms, minlength=k + 1)
    before = np.concatenate([[0.0], np.cumsum(own_edge)])  # per-node time of the segments before anchor i
    after = np.concatenate([np.cumsum(own_cloud[::-1])[::-1], [0.0]])  # ... and from anchor i on
    cut_prefix = prefix[cut_values] if prefix is not None else np.full(k, np.nan)
    cut_suffix = suffix[cut_values] if suffix is not None else np.full(k, np.nan)
    edge = [_largest(prefix, problem.producer < 0), *cut_prefix, _measured(prefix, _only(problem.is_output))]
    unread = problem.is_output & (np.diff(problem.cons_ptr) == 0)
    cloud = [_measured(suffix, _only(problem.producer < 0)), *cut_suffix, _largest(suffix, unread)]
    return (_fill(np.array(edge) - before, backward=False) + before,
            _fill(np.array(cloud) - after, backward=True) + after)


def measured_sides(problem: SplitProblem, on_cloud: np.ndarray) -> tuple[float, float]:
    """Edge and cloud time of an assignment, priced from its anchors (see the module docstring)."""
    cut_values, segment = segments_of(problem)
    edge, cloud = anchor_times(problem, cut_values, segment)
    if not on_cloud.any():
        return float(edge[-1]), 0.0
    j = int(segment[on_cloud].min())  # the edge anchor is index j: d_j, or the source for j = 0
    later = segment >= j
    edge_ms = edge[j] + problem.edge_ms[~on_cloud & later].sum()
    if on_cloud[later].all():  # the cloud anchor is the same cut vertex
        return float(edge_ms), float(cloud[j])
    cloud_ms = (cloud[j + 1] + problem.cloud_ms[on_cloud & (segment <= j)].sum()
                - problem.cloud_ms[~on_cloud & (segment > j)].sum())
    return float(edge_ms), float(cloud_ms)


def measured_constants(problem: SplitProblem, cut_values: np.ndarray, segment: np.ndarray,
                       download: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate j: the edge time before segment j, and the cloud time (with downloads) after it."""
    k = len(cut_values)
    edge, cloud = anchor_times(problem, cut_values, segment)
    down = np.bincount(segment, weights=download, minlength=k + 1)
    down_after = np.concatenate([np.cumsum(down[::-1])[::-1][1:], [0.0]])
    return edge[: k + 1], cloud[1:] + down_after


def settle_segments(problem: SplitProblem, cut_values: np.ndarray, segment: np.ndarray, on_cloud: np.ndarray,
                    totals: np.ndarray, price: Pricing) -> tuple[np.ndarray, np.ndarray]:
    """Price the non-modular assignments of each candidate exactly, and keep each candidate's best.

    Candidate j prices its segment's assignments by one modular function g_j
    (the min-cut's; ``price`` gives every candidate's g for an assignment).
    Two are priced otherwise: the whole segment on the cloud (its cloud anchor
    is the cut vertex opening the segment) and, in the last segment, all on
    the edge (edge-only). The best *mixed* assignment (a node on each side) is
    the min-cut's answer when that is mixed; when the min-cut chose a special
    one and a mixed one could still win, the segment is re-solved with, in
    turn, each of its first nodes pinned to the edge (any mixed assignment
    has one there) and, in the last segment, each node making a graph output
    pinned to the cloud. Segments are independent, so each round of pins is
    one max-flow over all of them.
    """
    k, n = len(cut_values), problem.num_nodes
    edge, cloud = anchor_times(problem, cut_values, segment)
    count = np.bincount(segment, minlength=k + 1)
    clouds = np.bincount(segment, weights=on_cloud.astype(np.float64), minlength=k + 1)
    own_cloud = np.bincount(segment, weights=problem.cloud_ms, minlength=k + 1)
    all_cloud = price(np.ones(n, dtype=bool)) + cloud[: k + 1] - cloud[1:] - own_cloud
    mixed = (clouds > 0) & (clouds < count)
    best, assign = np.where(mixed, totals, np.inf), on_cloud.copy()
    take = (count > 0) & (all_cloud < best)
    best[take], assign[take[segment]] = all_cloud[take], True
    if edge[-1] < best[k]:
        best[k], assign[segment == k] = edge[-1], False
    lower = totals + np.where(clouds == 0, problem.rtt_ms, 0.0)  # the min-cut's g, plus the RTT a split adds
    need = np.flatnonzero((count > 0) & ~mixed & (lower < best))
    pins = _pins(problem, cut_values, segment, need)
    for r in range(max((len(p) for p in pins.values()), default=0)):
        chosen = {j: p[r] for j, p in pins.items() if r < len(p)}
        found = pinned_cuts_of(problem, cut_values, chosen.values())
        priced, better = price(found), np.zeros(k + 1, dtype=bool)
        better[list(chosen)] = True
        better &= priced < best
        best = np.where(better, priced, best)
        assign = np.where(better[segment], found, assign)
    return assign, best


def pinned_cuts_of(problem: SplitProblem, cut_values: np.ndarray, pins) -> np.ndarray:
    """Min-cuts of all segments with (edge node, cloud node or None) pairs pinned."""
    from splitc.partition.network import pinned_cuts

    pins = list(pins)
    return pinned_cuts(problem, cut_values, np.array([c for _, c in pins if c is not None], dtype=np.int64),
                       np.array([e for e, _ in pins], dtype=np.int64))


def _pins(problem: SplitProblem, cut_values: np.ndarray, segment: np.ndarray, need: np.ndarray) -> dict:
    """Per segment in ``need``: the (first node to the edge, output maker to the cloud) pairs to try."""
    k = len(cut_values)
    value_of = problem.value_of_consumer_edge()
    producer = problem.producer[value_of]
    inside = (producer >= 0) & (segment[np.maximum(producer, 0)] == segment[problem.cons_idx])
    fed = np.zeros(problem.num_nodes, dtype=bool)
    fed[problem.cons_idx[inside]] = True
    fed[problem.producer[cut_values]] = True  # pinned to the cloud already
    makers = [int(p) for p in np.unique(problem.producer[problem.is_output & (problem.producer >= 0)])
              if segment[p] == k]
    firsts = np.flatnonzero(~fed & np.isin(segment, need))  # segments never decrease along the nodes
    pins = {}
    for group in np.split(firsts, np.flatnonzero(np.diff(segment[firsts])) + 1) if len(firsts) else []:
        j = int(segment[group[0]])
        pins[j] = [(int(m), p) for m in group for p in (makers if j == k else [None]) if m != p]
    return pins
