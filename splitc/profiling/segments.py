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

from splitc.passes.problem import SplitProblem

Pricing = Callable[[np.ndarray], np.ndarray]


def has_measured(problem: SplitProblem) -> bool:
    """Whether the problem carries measured prefix or suffix times."""
    return problem.edge_prefix_ms is not None or problem.cloud_suffix_ms is not None


def segments_of(problem: SplitProblem) -> tuple[np.ndarray, np.ndarray]:
    """Cut-vertex values and the segment (0..k) of every node."""
    from splitc.passes.cut_vertices import find_cut_vertices, layout

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
    before = np.concatenate([[0.0], np.cumsum(np.bincount(segment, weights=problem.edge_ms, minlength=k + 1))])
    after = np.concatenate([np.cumsum(np.bincount(segment, weights=problem.cloud_ms, minlength=k + 1)[::-1])[::-1], [0.0]])
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
    cloud_ms = cloud[j + 1] + problem.cloud_ms[on_cloud & (segment <= j)].sum() - problem.cloud_ms[~on_cloud & (segment > j)].sum()
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

    Candidate j prices its segment's assignments A by one modular function
    g_j(A) (the min-cut's, via ``price``). Two are priced otherwise: the whole
    segment on the cloud (g + ``bonus[j]``: its cloud anchor is the cut vertex
    opening the segment) and, in the last segment, all on the edge
    (edge-only). The best *mixed* assignment (a node on each side) is the
    min-cut's answer when that is mixed; when the min-cut chose a special one
    and a mixed one could still win, it is found by pinning, in turn, each of
    the segment's first nodes to the edge (and in the last segment each node
    making a graph output to the cloud) and re-solving exactly.
    """
    k = len(cut_values)
    edge, cloud = anchor_times(problem, cut_values, segment)
    bonus = cloud[: k + 1] - cloud[1:] - np.bincount(segment, weights=problem.cloud_ms, minlength=k + 1)
    all_cloud = price(np.ones(problem.num_nodes, dtype=bool)) + bonus
    on_cloud, totals = on_cloud.copy(), totals.copy()
    for j in range(k + 1):
        mine = segment == j
        if not mine.any():  # an empty last segment: candidate k is edge-only
            totals[j] = edge[-1] if j == k else totals[j]
            continue
        chosen = on_cloud[mine]
        options = [(all_cloud[j], np.ones(int(mine.sum()), dtype=bool))]
        if j == k:
            options.append((edge[-1], np.zeros(int(mine.sum()), dtype=bool)))
        mixed = chosen.any() and not chosen.all()
        if mixed:
            options.append((totals[j], chosen))
        elif totals[j] + (problem.rtt_ms if not chosen.any() else 0.0) < min(o[0] for o in options):
            options += [(price(np.where(mine, _spread(mine, a), on_cloud))[j], a)
                        for a in _mixed_assignments(problem, cut_values, segment, j)]
        best, assignment = min(options, key=lambda option: option[0])
        on_cloud[mine], totals[j] = assignment, best
    return on_cloud, totals


def _spread(mine: np.ndarray, values: np.ndarray) -> np.ndarray:
    full = np.zeros(len(mine), dtype=bool)
    full[mine] = values
    return full


def _mixed_assignments(problem: SplitProblem, cut_values, segment, j: int) -> list[np.ndarray]:
    """Exact min-cuts of segment j with one first node pinned to the edge (and, in the last
    segment, one output-making node pinned to the cloud): together they cover every mixed assignment."""
    from splitc.passes.mincut import exact_segment_cut

    k = len(cut_values)
    mine = segment == j
    has_prod = problem.producer >= 0
    fed = np.zeros(problem.num_nodes, dtype=bool)  # nodes fed by another node of the segment
    value_of = problem.value_of_consumer_edge()
    inner = has_prod[value_of] & mine[np.maximum(problem.producer[value_of], 0)]
    fed[problem.cons_idx[inner]] = True
    forced = set(problem.producer[cut_values].tolist())
    firsts = [int(v) for v in np.flatnonzero(mine & ~fed) if int(v) not in forced]
    makers = np.unique(problem.producer[problem.is_output & has_prod])
    clouds = [int(p) for p in makers if mine[p]] if j == k else [None]
    return [exact_segment_cut(problem, cut_values, segment, j, None if p is None else np.array([p]), np.array([m]))[mine]
            for m in firsts for p in clouds if m != p]
