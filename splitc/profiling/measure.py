"""``splitc profile``: measure a model on this machine and build a ``splitc.profile/1`` document."""

from __future__ import annotations

import datetime as _dt
from collections import defaultdict
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from splitc.ir.graph import Graph
from splitc.profiling.fusion import fused_groups, share_by_flops
from splitc.profiling.kernels import profile_kernels
from splitc.profiling.machine import machine_facts
from splitc.cost.schema import SCHEMA, ProfileError
from splitc.profiling.timing import DEFAULT_PROVIDER, MIN_SECONDS, Stats, clock_for, random_feeds, sample_model


ROUNDS = 3  # whole-model and segment timings are pooled over this many rounds


class Reporter(Protocol):
    """Progress callbacks: a new stage with a number of steps, then steps done."""

    def stage(self, description: str, total: int) -> None: ...

    def advance(self, steps: int = 1) -> None: ...


class _Silent:
    def stage(self, description: str, total: int) -> None:
        pass

    def advance(self, steps: int = 1) -> None:
        pass


def profile_model(model: str | Path | onnx.ModelProto, runs: int = 50, threads: int = 0, warmup: int = 5,
                  input_shapes: dict[str, tuple[int, ...]] | None = None, provider: str = DEFAULT_PROVIDER,
                  name: str | None = None, reporter: Reporter | None = None,
                  min_seconds: float = MIN_SECONDS, clock: str = "auto") -> dict:
    """Measure ``model`` with onnxruntime here: per-node times, prefix/suffix times, machine facts.

    Returns the profile document (``splitc.profile/1``). ``threads=0`` keeps
    onnxruntime's default thread count; 1 gives the steadiest numbers. Each
    timing takes at least ``runs`` runs and ``min_seconds``, on ``clock``
    (see :func:`splitc.profiling.timing.clock_for`).
    """
    from splitc.api import analyse

    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        raise ProfileError(f"profile: execution provider {provider!r} is not available here "
                           f"(available: {', '.join(ort.get_available_providers())})")
    report = reporter or _Silent()
    analysis = analyse(model, input_shapes=input_shapes)
    graph = analysis.graph
    feeds = random_feeds(graph.inputs)
    config = dict(runs=runs, warmup=warmup, threads=threads, provider=provider)
    timing = dict(min_seconds=min_seconds, clock=clock_for(threads, clock))
    segments, whole = _segment_times(analysis, feeds, report, **timing, **config)
    call_ms = max((segments["prefix"][v.name]["median_ms"] for v in graph.inputs), default=0.0)
    nodes, groups = measure_nodes(graph, feeds, max(whole.median_ms - call_ms, 0.0), report, **config)
    report.stage("machine microbenchmarks", 1)
    machine = machine_facts(threads, provider)
    report.advance()
    return {
        "schema": SCHEMA,
        "splitc_version": _version(),
        "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": _model_entry(graph),
        "settings": {**config, "clock": timing["clock"], "graph_optimization": "all"},
        "machine": machine,
        "whole_model": whole.to_dict(),
        "nodes": nodes,
        "groups": groups,
        "segments": segments,
    }


def _version() -> str:
    from splitc import __version__

    return __version__


def _model_entry(graph: Graph) -> dict:
    return {
        "name": graph.name,
        "sha256": graph.sha256,
        "inputs": [{"name": v.name, "shape": list(v.shape), "dtype": str(v.dtype)} for v in graph.inputs],
        "nodes": [n.name for n in graph.data_nodes],
    }


def measure_nodes(graph: Graph, feeds, compute_ms: float, report: Reporter | None = None, *, runs: int,
                  warmup: int, threads: int = 0, provider: str = DEFAULT_PROVIDER) -> tuple[dict, list]:
    """Per-node statistics from onnxruntime's profiler, and the fused groups they came from.

    A fused group's time is shared among its nodes in proportion to FLOPs.
    The profiler adds a little time to every kernel, so all node times are
    scaled by one factor that makes their medians add up to ``compute_ms``:
    the whole model's latency less the fixed cost of a call.
    """
    report = report or _Silent()
    report.stage("per-node profile (onnxruntime profiler)", warmup + runs)
    kernels = profile_kernels(graph.model, feeds, runs, warmup, threads, provider, tick=report.advance)
    groups = fused_groups(graph, kernels.optimized)
    shares = share_by_flops(graph, groups, kernels.times, runs)
    group_times = [sum((kernels.times[k] for k in g.kernels if k in kernels.times), np.zeros(runs)) for g in groups]
    profiled = sum(float(np.median(t)) for t in group_times)
    scale = compute_ms / profiled if profiled > 0 else 1.0
    nodes = {}
    for index, group in enumerate(groups):
        for name in group.nodes:
            node = graph.node(name)
            nodes[name] = {"op_type": node.op_type, "flops": node.flops, "group": index,
                           **Stats.of(shares[name] * scale).to_dict()}
    entries = [{"nodes": g.nodes, "kernels": g.kernels, "kernel_ops": [kernels.op_types.get(k, "") for k in g.kernels],
                "profiled_ms": float(np.median(t)), **Stats.of(t * scale).to_dict()}
               for g, t in zip(groups, group_times)]
    return nodes, entries


def _segment_times(analysis, feeds, report: Reporter, **config) -> tuple[dict, Stats]:
    """Measured latency of the whole model, and of the prefix up to and the suffix from every cut vertex.

    Every model is timed in ``ROUNDS`` rounds over all of them (a fresh
    session each time, the samples pooled), so that a slow spell of the
    machine spreads over all measurements instead of spoiling a few. The
    prefix of a graph input and the suffix of a final output are a session
    that computes nothing: the fixed cost of a call.
    """
    from splitc.partition.solve import forced_partition

    graph, problem = analysis.graph, analysis.problem
    readers = dict(zip(problem.value_names, np.diff(problem.cons_ptr)))
    cuts = [c for c in analysis.result.cut_vertices if readers[c] and forced_partition(problem, [c]).cloud_nodes]
    per_round = {**config, "runs": max(1, -(-config["runs"] // ROUNDS)), "min_seconds": config["min_seconds"] / ROUNDS}
    samples: dict[tuple[str, str], list[float]] = defaultdict(list)
    steps = (2 * len(cuts) + 3) * per_round["runs"] * ROUNDS
    report.stage(f"whole model and {len(cuts)} cut vertices ({ROUNDS} rounds)", steps)
    for _ in range(ROUNDS):
        times, outputs = sample_model(graph.model, feeds, tick=report.advance, **per_round)
        samples[("whole", "")] += times
        _time_pass_through(graph, {**feeds, **outputs}, samples, report, per_round)
        for cut in cuts:
            split = analysis.split([cut], alternatives=1)
            times, produced = sample_model(split.edge_model, feeds, tick=report.advance, **per_round)
            samples[("prefix", cut)] += times
            samples[("suffix", cut)] += sample_model(split.cloud_model, {**feeds, **produced}, tick=report.advance,
                                                     **per_round)[0]
    segments = {"cut_vertices": analysis.result.cut_vertices, "prefix": {}, "suffix": {}}
    for (side, name), values in samples.items():
        if side != "whole":
            segments[side][name] = Stats.of(values).to_dict()
    return segments, Stats.of(samples[("whole", "")])


def _time_pass_through(graph: Graph, values: dict, samples: dict, report: Reporter, per_round: dict) -> None:
    """Time a session that only passes the inputs (and one that passes the final outputs) through."""
    from splitc.backends.onnx_backend import HalfSpec, emit_half

    inputs = [v.name for v in graph.inputs]
    finals = [v.name for v in graph.outputs if not v.consumers]
    for side, names in (("prefix", inputs), ("suffix", finals)):
        if not names:
            continue
        model = emit_half(graph, HalfSpec([], names, names), f"{side}_pass_through")
        times = sample_model(model, values, tick=report.advance, **per_round)[0]
        for name in names:
            samples[(side, name)] += times
