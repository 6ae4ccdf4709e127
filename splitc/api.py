"""The Python API: ``splitc.compile(...)`` returns a ``CompiledSplit``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx

from splitc.backends import onnx_backend as emit
from splitc.backends.manifest import build_manifest
from splitc.backends.output import write_directory
from splitc.frontend import import_model
from splitc.ir.graph import Graph
from splitc.passes.base import PassManager
from splitc.passes.cost import CostModel, annotate_costs, cost_model_for
from splitc.passes.dce import DeadCodeElimination
from splitc.passes.partition import Partition, PartitionResult, forced_partition, partition
from splitc.passes.problem import problem_from_graph
from splitc.targets import DEFAULT_CLOUD, DEFAULT_EDGE
from splitc.units import parse_bandwidth, parse_time_ms

Progress = Callable[[str], None]


@dataclass
class CompiledSplit:
    """A compiled split: the two halves, the chosen partition and the plan manifest."""

    graph: Graph
    partition: Partition
    result: PartitionResult
    plan: dict
    edge_model: onnx.ModelProto
    cloud_model: onnx.ModelProto | None

    def save(self, out_dir: str | Path) -> Path:
        """Write ``edge.onnx``, ``cloud.onnx`` (unless edge-only) and ``plan.json`` atomically."""

        def fill(tmp: Path) -> None:
            emit.save_half(self.edge_model, tmp / "edge.onnx")
            if self.cloud_model is not None:
                emit.save_half(self.cloud_model, tmp / "cloud.onnx")
            (tmp / "plan.json").write_text(json.dumps(self.plan, indent=2) + "\n")

        return write_directory(out_dir, fill)


def _rate(value: str | float) -> float:
    return parse_bandwidth(value) if isinstance(value, str) else float(value)


def _time(value: str | float) -> float:
    return parse_time_ms(value) if isinstance(value, str) else float(value)


@dataclass
class Analysis:
    """A model lowered, costed and partitioned once; ``split()`` emits any cut of it."""

    graph: Graph
    costs: object
    problem: object
    result: PartitionResult
    models: tuple[CostModel, CostModel]

    def split(self, cut: list[str] | None = None, alternatives: int = 5) -> CompiledSplit:
        """The optimal split, or the one that sends exactly ``cut`` (``[]``: edge-only)."""
        part = self.result.best if cut is None else forced_partition(self.problem, cut)
        link = (self.problem.bandwidth, self.problem.rtt_ms)
        return _assemble(self.graph, part, self.result, self.costs, self.models, link, alternatives, cut)


def analyse(
    model: str | Path | onnx.ModelProto,
    target: str | CostModel = DEFAULT_EDGE,
    cloud: str | CostModel = DEFAULT_CLOUD,
    bandwidth: str | float = "5Mbps",
    rtt: str | float = "20ms",
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    progress: Progress | None = None,
) -> Analysis:
    """Load, cost and partition ``model``; see ``compile`` for the arguments."""
    step = progress or (lambda _stage: None)
    models = (cost_model_for(target), cost_model_for(cloud))
    bandwidth_bps, rtt_ms = _rate(bandwidth), _time(rtt)
    step("loading and shape-inferring the model")
    graph = PassManager([DeadCodeElimination()])(import_model(model, input_shapes)).graph
    step("estimating costs")
    costs = annotate_costs(graph, *models)
    problem = problem_from_graph(graph, costs, bandwidth_bps, rtt_ms)
    step("partitioning")
    return Analysis(graph, costs, problem, partition(problem), models)


def compile(
    model: str | Path | onnx.ModelProto,
    target: str | CostModel = DEFAULT_EDGE,
    cloud: str | CostModel = DEFAULT_CLOUD,
    bandwidth: str | float = "5Mbps",
    rtt: str | float = "20ms",
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    cut: list[str] | None = None,
    alternatives: int = 5,
    progress: Progress | None = None,
) -> CompiledSplit:
    """Split ``model`` between an edge device and a cloud server.

    ``target`` and ``cloud`` name built-in devices (``splitc targets``) or
    pass a cost model. ``bandwidth`` is bytes/s or a string such as
    ``"5Mbps"``; ``rtt`` is ms or a string such as ``"20ms"``. ``cut`` forces
    the tensors to send (``[]`` for edge-only) instead of the optimum.
    """
    analysis = analyse(model, target, cloud, bandwidth, rtt, input_shapes, progress)
    (progress or (lambda _stage: None))("emitting the halves")
    return analysis.split(cut, alternatives)

def _assemble(graph, part, result, costs, models, link, alternatives, cut) -> CompiledSplit:
    edge_model, cloud_model = models
    edge_spec = emit.edge_spec(graph, part.edge_nodes, part.cut_values)
    edge_half = emit.emit_half(graph, edge_spec, f"{graph.name}_edge")
    cloud_spec = cloud_half = None
    if part.cloud_nodes:
        cloud_spec = emit.cloud_spec(part.cloud_nodes, part.cut_values, part.returned_values)
        cloud_half = emit.emit_half(graph, cloud_spec, f"{graph.name}_cloud")
    for half in (edge_half, cloud_half):
        if half is not None:
            emit.check_half(half)
    plan = build_manifest(
        graph=graph,
        part=part,
        edge=(edge_spec, edge_model.name, edge_model.describe()),
        cloud=(cloud_spec, cloud_model.name, cloud_model.describe()) if cloud_spec else None,
        costs=costs,
        link={"bandwidth_Bps": link[0], "bandwidth_bps": link[0] * 8, "rtt_ms": link[1]},
        baselines={"edge_only_ms": result.edge_only.total_ms, "cloud_only_ms": result.cloud_only.total_ms,
                   "optimal_ms": result.best.total_ms},
        alternatives=result.candidates(alternatives),
        cut_vertices=result.cut_vertices,
        solve_ms=result.solve_ms,
        forced=cut is not None,
        cloud_target=cloud_model.name,
    )
    return CompiledSplit(graph, part, result, plan, edge_half, cloud_half)
