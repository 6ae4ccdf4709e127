"""Segment-aware latency: measured prefix and suffix times at cut vertices.

A problem may carry ``edge_prefix_ms`` and ``cloud_suffix_ms`` (one entry per
value, NaN where unknown): the measured edge latency of everything a value
depends on, and the measured cloud latency of everything that depends on it.
They are read at the *anchors*: the virtual source (prefix 0; suffix = the
whole model on the cloud, read at the model's only input if it has one), the
cut vertices d_1 .. d_k, and the virtual sink (prefix = the whole model on the
edge, read at the model's only output if it has one; suffix 0). Where an
anchor has no measurement it borrows the nearest measured one and adds the
per-node times in between (the prefix looks back, the suffix ahead).

An assignment is priced from its *anchor*: the last cut vertex whose producer
and all ancestors run on the edge (the source if none, the sink for
edge-only). With N the edge nodes after the anchor:

    edge  = prefix(anchor) + sum of edge_ms over N
    cloud = suffix(anchor) - sum of cloud_ms over N

so a split exactly at a cut vertex gets the two measured times, and any other
split corrects the nearest such split by the per-node times of the nodes that
move. Both are modular inside a segment, so the min-cut is unchanged; only
edge-only is special (it has no suffix), see :func:`settle_last_segment`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from splitc.passes.problem import SplitProblem


def has_measured(problem: SplitProblem) -> bool:
    """Whether the problem carries measured prefix or suffix times."""
    return getattr(problem, "edge_prefix_ms", None) is not None or getattr(problem, "cloud_suffix_ms", None) is not None


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
    sink = _measured(prefix, _only(problem.is_output))
    source = _measured(suffix, _only(problem.producer < 0))
    cut_prefix = prefix[cut_values] if prefix is not None else np.full(k, np.nan)
    cut_suffix = suffix[cut_values] if suffix is not None else np.full(k, np.nan)
    edge = _fill(np.concatenate([[0.0], cut_prefix, [sink]]) - before, backward=False) + before
    cloud = _fill(np.concatenate([[source], cut_suffix, [0.0]]) - after, backward=True) + after
    return edge, cloud


def measured_sides(problem: SplitProblem, on_cloud: np.ndarray) -> tuple[float, float]:
    """Edge and cloud time of an assignment, priced from its anchor (see the module docstring)."""
    cut_values, segment = segments_of(problem)
    edge, cloud = anchor_times(problem, cut_values, segment)
    k = len(cut_values)
    anchor = int(segment[on_cloud].min()) - 1 if on_cloud.any() else k
    moved = ~on_cloud & (segment > anchor)
    return (float(edge[anchor + 1] + problem.edge_ms[moved].sum()),
            float(cloud[anchor + 1] - problem.cloud_ms[moved].sum()))


def measured_constants(problem: SplitProblem, cut_values: np.ndarray, segment: np.ndarray,
                       download: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per candidate j: the edge time before segment j, and the cloud time (with downloads) outside it."""
    k = len(cut_values)
    edge, cloud = anchor_times(problem, cut_values, segment)
    own_cloud = np.bincount(segment, weights=problem.cloud_ms, minlength=k + 1)
    down = np.bincount(segment, weights=download, minlength=k + 1)
    down_after = np.concatenate([np.cumsum(down[::-1])[::-1][1:], [0.0]])
    return edge[: k + 1], cloud[: k + 1] - own_cloud + down_after


def settle_last_segment(problem: SplitProblem, cut_values: np.ndarray, segment: np.ndarray, on_cloud: np.ndarray,
                        totals: np.ndarray, price: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Price edge-only exactly when the last segment's min-cut keeps it all on the edge.

    Candidate k prices every assignment of the last segment by one modular
    function g plus the round trip; edge-only alone is priced differently
    (prefix at the sink, no suffix). If g(all-edge) + RTT >= edge-only, no
    other assignment of the segment can beat edge-only. Otherwise the best
    assignment with a cloud node is found by forcing, in turn, each node of
    the segment that makes a graph output onto the cloud (one of them must be
    there) and re-solving. ``price`` gives every candidate's total for an assignment.
    """
    from splitc.passes.mincut import build_network, source_side

    k, n = len(cut_values), problem.num_nodes
    last = segment == k
    if on_cloud[last].any():
        return on_cloud, totals
    totals = totals.copy()
    modular, totals[k] = totals[k], anchor_times(problem, cut_values, segment)[0][k + 1]
    if modular + problem.rtt_ms >= totals[k]:
        return on_cloud, totals
    makers = np.unique(problem.producer[problem.is_output & (problem.producer >= 0)])
    for node in makers[last[makers]]:
        side = source_side(build_network(problem, cut_values, force_cloud=np.array([node])))
        other = np.where(last, ~side[2 : 2 + n], on_cloud)
        total = price(other)[k]
        if total < totals[k]:
            on_cloud, totals[k] = other, total
    return on_cloud, totals
