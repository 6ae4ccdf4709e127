"""Choosing the forks of a model tree among the model's cut vertices.

A fork is a point where the edge may offload: fork 0 sends the model's inputs,
every other fork one cut vertex (a tensor that every input-to-output path
passes through, ``splitc.partition.cut_vertices``), so the model splits into a
chain of blocks between consecutive forks. Candidates are the cut vertices
that have a consumer, are not a model output and whose shape does not depend
on the input values (those never cross, as in ``splitc.joint``).

With a cap of N candidates (``TreeOptions.max_candidates``) only N are
measured (``cap_candidates``): the input and, from each of N - 1 runs of the
other candidates in model order (as equal in number as they divide), the one
whose tensors have the fewest bytes (the later one on a tie). The cut
vertices where a network narrows (pooling outputs, bottlenecks) are the ones
worth sending, and this spreads them over the depth. The candidates'
activations are probed in groups that fit ``PROBE_BYTES`` together, each group
measured and released before the next.

Each candidate is measured on the calibration set as a plain split of the base
model (``splitc.tree.measure.measure_fork``: every width, mean bytes with the
runtime codec, certified drop bound). The rule, over the bandwidth chain
fitted from the traces:

1. **Greedy by decision value.** Start from fork 0 alone; repeatedly add the
   candidate whose addition lowers most the expected latency of the *exactly
   solved* policy of the base tree (one variant per block, the candidates'
   measured options); stop when no candidate lowers it or ``count`` forks
   are chosen. A fork that no optimal decision ever uses adds nothing.
2. **Fill.** If fewer than ``count`` forks were chosen, split the block with
   the longest edge time at the candidate nearest its middle, and repeat:
   more forks give the full tree (with block variants) more places to decide
   mid-inference; the final exact solve values them.

Greedy selection is not guaranteed optimal (forks can be worth more together
than apart); it examines ``count x candidates`` small base trees, each solved
exactly in microseconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from splitc.backends import onnx_backend as emit
from splitc.errors import SplitcError
from splitc.tree.greedy import add_greedily
from splitc.tree.markov import BandwidthChain
from splitc.tree.measure import (
    Composer,
    OptionRecord,
    Scoring,
    measure_fork,
    train_books,
)
from splitc.tree.policy import solve
from splitc.tree.spec import Block, TreeSpec, Variant

__all__ = ["PROBE_BYTES", "ForkCandidate", "base_spec", "candidates", "cap_candidates", "measure_candidates", "select_forks", "suffix_model"]


@dataclass
class ForkCandidate:
    """A place to offload: the tensors sent, the base prefix before it (nodes, edge ms), the cloud's suffix ms."""

    tensors: tuple[str, ...]
    edge_nodes: list[str]
    prefix_ms: float
    cloud_ms: float
    options: list[OptionRecord] = field(default_factory=list)


def candidates(analysis) -> list[ForkCandidate]:
    """Fork 0 (the model inputs) and every eligible cut vertex, in model order."""
    graph = analysis.graph
    pinned, outputs = graph.data_dependent, {v.name for v in graph.outputs}
    inputs = tuple(v.name for v in graph.inputs if v.consumers)
    cuts = [inputs] + [(t,) for t in analysis.result.cut_vertices
                       if graph.values[t].consumers and t not in pinned and t not in outputs
                       and graph.values[t].producer is not None]
    found = []
    for cut in cuts:
        part = analysis.partition_for(list(cut))
        if part.cloud_nodes:
            found.append(ForkCandidate(cut, list(part.edge_nodes), part.edge_ms, part.cloud_ms))
    found.sort(key=lambda c: len(c.edge_nodes))
    if not found or found[0].tensors != inputs:
        raise SplitcError("the model's inputs cannot be sent to the cloud: a model tree needs fork 0 there")
    return found


def cap_candidates(analysis, found: list[ForkCandidate], cap: int | None) -> list[ForkCandidate]:
    """At most ``cap`` of ``found`` (model order; fork 0 kept): the smallest tensors of equal runs (module notes)."""
    if cap is None or cap <= 0 or len(found) <= cap:
        return list(found)
    if cap == 1:
        return found[:1]
    values = analysis.graph.values
    rest = found[1:]
    runs = [rest[round(i * len(rest) / (cap - 1)):round((i + 1) * len(rest) / (cap - 1))] for i in range(cap - 1)]
    picked = [min(reversed(run), key=lambda c: sum(values[t].nbytes for t in c.tensors)) for run in runs if run]
    return [found[0], *picked]


PROBE_BYTES = 1 << 30  # activations held at once while measuring fork candidates


def probe_groups(analysis, found: Sequence[ForkCandidate], samples: int,
                 budget: int = PROBE_BYTES) -> list[list[int]]:
    """Indices of ``found`` in groups whose tensors, over ``samples`` samples, take at most ``budget`` bytes."""
    values = analysis.graph.values
    groups: list[list[int]] = []
    held = 0
    for index, cand in enumerate(found):
        size = samples * sum(values[t].nbytes for t in cand.tensors)
        if not groups or held + size > budget:
            groups.append([])
            held = 0
        groups[-1].append(index)
        held += size
    return groups


def suffix_model(analysis, cut: Sequence[str]):
    """The base model's suffix from ``cut``: the cloud half that reads the tensors unquantized."""
    part = analysis.partition_for(list(cut))
    spec = emit.cloud_spec(part.cloud_nodes, part.cut_values, part.returned_values)
    return emit.emit_half(analysis.graph, spec, f"{analysis.graph.name}_suffix")


def measure_candidates(analysis, found: list[ForkCandidate], meas, scoring: Scoring, widths: Sequence[int],
                       max_drop: float, codec: str = "huffman") -> None:
    """Fill each candidate's ``options``: the base model split there, from the probe's activations ``meas``."""
    acts = meas.activations  # the probe holds every candidate's tensors, the model inputs included
    composer = Composer([], [suffix_model(analysis, c.tensors) for c in found], scoring.first_output)
    for index, cand in enumerate(found):
        books = {bits: train_books(acts, cand.tensors, bits, codec) for bits in widths}

        def finish(encodings, index=index):
            return composer.finish(acts, index, encodings)

        cand.options = measure_fork(finish, scoring, acts, cand.tensors, widths, books.__getitem__, True, max_drop,
                                    codec)


def base_spec(chosen: Sequence[ForkCandidate], total_ms: float, rtt_ms: float) -> TreeSpec:
    """The tree of the base model cut at ``chosen`` forks: one variant per block, the forks' measured options."""
    prefix = [c.prefix_ms for c in chosen] + [total_ms]
    blocks = [Block(f"b{i}", [Variant("base", max(0.0, prefix[i + 1] - prefix[i]))]) for i in range(len(chosen))]

    def offload_options(fork: int, path) -> list[tuple]:
        return [(o.label, o.nbytes, o.bound) for o in chosen[fork].options if o.bound is not None]

    return TreeSpec(blocks, offload_options, lambda fork, path: chosen[fork].cloud_ms, lambda path: 0.0, rtt_ms)


def _value(found, indices, total_ms, rtt_ms, chain, max_drop) -> float:
    spec = base_spec([found[i] for i in sorted(indices)], total_ms, rtt_ms)
    try:
        return solve(spec, chain, max_drop).mean_ms
    except SplitcError:
        return math.inf


def select_forks(found: list[ForkCandidate], total_ms: float, rtt_ms: float, chain: BandwidthChain,
                 max_drop: float, count: int, progress: Callable[[str], None] | None = None) -> list[int]:
    """Indices into ``found`` of the chosen forks, in model order (see the module's rule)."""
    if count < 1:
        raise SplitcError(f"a model tree needs at least 1 fork, not {count}")
    def announce(chosen: list[int]) -> None:
        if progress is not None:
            progress(f"choosing forks: {len(chosen)} of at most {count}")

    chosen, _ = add_greedily([0], range(1, len(found)),
                             lambda forks: _value(found, forks, total_ms, rtt_ms, chain, max_drop), count, announce)
    while len(chosen) < count and _split_longest(found, chosen, total_ms):
        pass
    return sorted(chosen)


def _split_longest(found: list[ForkCandidate], chosen: list[int], total_ms: float) -> bool:
    """Add the candidate nearest the middle of the longest block that has one inside; False if none has."""
    order = sorted(chosen)
    ends = [found[i].prefix_ms for i in order] + [total_ms]
    spans = sorted(range(len(order)), key=lambda b: ends[b] - ends[b + 1])
    for b in spans:
        lo, hi = len(found[order[b]].edge_nodes), (len(found[order[b + 1]].edge_nodes)
                                                     if b + 1 < len(order) else math.inf)
        inside = [c for c in range(len(found)) if c not in chosen and lo < len(found[c].edge_nodes) < hi]
        if inside:
            middle = (ends[b] + ends[b + 1]) / 2
            chosen.append(min(inside, key=lambda c: (abs(found[c].prefix_ms - middle), c)))
            return True
    return False
