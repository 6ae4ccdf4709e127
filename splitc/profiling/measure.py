"""``splitc profile``: measure a model on this machine and build a ``splitc.profile/1`` document."""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Protocol

import numpy as np
import onnx

from splitc.ir.graph import Graph
from splitc.profiling.fusion import fused_groups, share_by_flops
from splitc.profiling.kernels import profile_kernels
from splitc.profiling.machine import machine_facts
from splitc.profiling.schema import SCHEMA, ProfileError
from splitc.profiling.timing import DEFAULT_PROVIDER, MIN_SECONDS, Stats, random_feeds, time_model


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
                  min_seconds: float = MIN_SECONDS) -> dict:
    """Measure ``model`` with onnxruntime here: per-node times, prefix/suffix times, machine facts.

    Returns the profile document (``splitc.profile/1``). ``threads=0`` keeps
    onnxruntime's default thread count; 1 gives the steadiest numbers. Each
    timing takes at least ``runs`` runs and ``min_seconds``.
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
    report.stage("whole model", runs)
    whole = time_model(graph.model, feeds, tick=report.advance, min_seconds=min_seconds, **config)[0]
    nodes, groups = measure_nodes(graph, feeds, whole, report, **config)
    segments = _segment_times(analysis, feeds, report, min_seconds=min_seconds, **config)
    report.stage("machine microbenchmarks", 1)
    machine = machine_facts(threads, provider)
    report.advance()
    return {
        "schema": SCHEMA,
        "splitc_version": _version(),
        "name": name,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "model": _model_entry(graph),
        "settings": {**config, "graph_optimization": "all"},
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


def measure_nodes(graph: Graph, feeds, whole: Stats, report: Reporter | None = None, *, runs: int, warmup: int,
                  threads: int = 0, provider: str = DEFAULT_PROVIDER) -> tuple[dict, list]:
    """Per-node statistics from onnxruntime's profiler, and the fused groups they came from.

    A fused group's time is shared among its nodes in proportion to FLOPs.
    The profiler adds a little time to every kernel, so all node times are
    scaled by one factor that makes their medians add up to ``whole``'s median.
    """
    report = report or _Silent()
    report.stage("per-node profile (onnxruntime profiler)", warmup + runs)
    kernels = profile_kernels(graph.model, feeds, runs, warmup, threads, provider, tick=report.advance)
    groups = fused_groups(graph, kernels.optimized)
    shares = share_by_flops(graph, groups, kernels.times, runs)
    group_times = [sum((kernels.times[k] for k in g.kernels if k in kernels.times), np.zeros(runs)) for g in groups]
    profiled = sum(float(np.median(t)) for t in group_times)
    scale = whole.median_ms / profiled if profiled > 0 else 1.0
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


def _segment_times(analysis, feeds, report: Reporter, **config) -> dict:
    """Measured latency of the prefix up to, and the suffix from, every cut vertex."""
    from splitc.errors import CutError

    cuts = analysis.result.cut_vertices
    report.stage(f"segments ({len(cuts)} cut vertices)", 2 * config["runs"] * len(cuts))
    prefix, suffix = {}, {}
    for cut in cuts:
        try:
            split = analysis.split([cut], alternatives=1)
        except CutError:
            report.advance(2 * config["runs"])
            continue
        stats, produced = time_model(split.edge_model, feeds, tick=report.advance, **config)
        prefix[cut] = stats.to_dict()
        if split.cloud_model is not None:
            suffix[cut] = time_model(split.cloud_model, {**feeds, **produced}, tick=report.advance, **config)[0].to_dict()
        else:
            report.advance(config["runs"])
    return {"cut_vertices": cuts, "prefix": prefix, "suffix": suffix}
