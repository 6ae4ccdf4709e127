"""The Python API: ``splitc.compile(...)`` returns a ``CompiledSplit``."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import onnx

from splitc.artifacts.plan import Plan
from splitc.backends import onnx_backend as emit
from splitc.backends.manifest import build_manifest, codebook_files
from splitc.backends.output import write_directory
from splitc.errors import SplitcError
from splitc.frontend import import_model
from splitc.ir.graph import Graph
from splitc.passes.base import PassManager, PassResult
from splitc.cost.model import CostModel, annotate_costs
from splitc.cost.resolve import cost_model_for
from splitc.passes.dce import DeadCodeElimination
from splitc.partition.solve import Partition, PartitionResult, forced_partition, make_partition, partition
from splitc.passes import precision, qdq
from splitc.calibration.confidence import using as using_confidence
from splitc.partition.problem import problem_from_graph
from splitc.cost.profile import attach_measured
from splitc.joint import Choice, UncheckedAccuracy, choose
from splitc.options import CompileOptions
from splitc.targets import DEFAULT_CLOUD, DEFAULT_EDGE, get_target
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
    files: dict[str, bytes] = field(default_factory=dict)  # codebooks, calibration tables

    def save(self, out_dir: str | Path, backend: str = "onnx", tvm_fallback: str | None = None) -> Path:
        """Write ``edge.onnx``, ``cloud.onnx`` (unless edge-only) and ``plan.json`` atomically.

        ``backend="tvm"`` writes TVM builds ``edge.so``/``cloud.so`` instead (needs
        ``splitc[tvm]``); with ``tvm_fallback="onnx"`` a half TVM cannot import is
        written as ONNX, with a warning, instead of failing.
        """
        if backend not in ("onnx", "tvm") or (tvm_fallback is not None and backend != "tvm"):
            raise SplitcError(f"backend must be onnx or tvm (--tvm-fallback needs tvm), not {backend!r}")

        def fill(tmp: Path) -> None:
            plan = self.plan
            if backend == "tvm":
                from splitc.backends.tvm import write_tvm_halves

                plan = write_tvm_halves(self, tmp, tvm_fallback)
            else:
                emit.save_half(self.edge_model, tmp / "edge.onnx")
                if self.cloud_model is not None:
                    emit.save_half(self.cloud_model, tmp / "cloud.onnx")
            for name, data in self.files.items():
                (tmp / name).parent.mkdir(parents=True, exist_ok=True)
                (tmp / name).write_bytes(data)
            # the typed manifest checks what the runtime will read before anything is written
            (tmp / "plan.json").write_text(json.dumps(Plan.from_json(plan).to_json(), indent=2) + "\n")

        return write_directory(out_dir, fill)


def _rate(value: str | float) -> float:
    rate = parse_bandwidth(value) if isinstance(value, str) else float(value)
    if not (math.isfinite(rate) and rate > 0):
        raise SplitcError(f"bad bandwidth {value!r}: it must be a finite number above zero")
    return rate


def _time(value: str | float) -> float:
    ms = parse_time_ms(value) if isinstance(value, str) else float(value)
    if not (math.isfinite(ms) and ms >= 0):
        raise SplitcError(f"bad time {value!r}: it must be a finite number of milliseconds, at least 0")
    return ms


@dataclass
class Analysis:
    """A model lowered, costed and partitioned once; ``split()`` emits any cut of it."""

    graph: Graph
    costs: object
    problem: object
    result: PartitionResult
    models: tuple[CostModel, CostModel]
    assignments: dict = field(default_factory=dict, repr=False)  # sorted cut -> on_cloud, from the optimiser
    context: object = field(default=None, repr=False)  # splitc.joint.CompileContext: what a compile measures once

    def __post_init__(self) -> None:
        for part in [self.result.best, *self.result.candidates()]:
            if part.cloud_nodes:
                self.assignments.setdefault(tuple(sorted(part.cut_values)), part.on_cloud)

    def partition_for(self, cut) -> Partition:
        """The partition that sends exactly ``cut``: the optimiser's own when it found one, else the forced one.

        Several assignments can send the same tensors (a node may stay on the
        edge or not); the candidates the optimiser returned keep the assignment
        it found (shared by the analyses of one model at other links), so a
        chosen candidate is emitted exactly as it was priced.
        """
        on_cloud = self.assignments.get(tuple(sorted(cut)))
        if on_cloud is not None:
            return make_partition(self.problem, on_cloud)
        return forced_partition(self.problem, list(cut))

    def split(self, cut: list[str] | None = None, alternatives: int = 5, choice: Choice | None = None,
              edge_passes: tuple = ()) -> CompiledSplit:
        """The optimal split, or the one that sends exactly ``cut`` (``[]``: edge-only).

        With a ``choice`` (from ``splitc.joint.choose``) its cut is emitted with
        the quantize/dequantize nodes of its encodings. ``edge_passes`` run on
        the edge half before them (an INT8 edge: ``splitc.compress.ToInt8Edge``).
        """
        forced = cut is not None
        if choice is not None:
            cut = list(choice.option.cut)
        part = self.result.best if cut is None else self.partition_for(cut)
        link = (self.problem.bandwidth, self.problem.rtt_ms)
        return _assemble(self.graph, part, self.result, self.costs, self.models, link, alternatives, forced, choice,
                         edge_passes)


def analyse(
    model: str | Path | onnx.ModelProto,
    target: str | CostModel = DEFAULT_EDGE,
    cloud: str | CostModel = DEFAULT_CLOUD,
    bandwidth: str | float = "5Mbps",
    rtt: str | float = "20ms",
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    progress: Progress | None = None,
    edge_precision: str = "fp32",
) -> Analysis:
    """Load, cost and partition ``model``; see ``compile`` for the arguments."""
    step = progress or (lambda _stage: None)
    models = (_edge_model(target, edge_precision), cost_model_for(cloud))
    bandwidth_bps, rtt_ms = _rate(bandwidth), _time(rtt)
    step("loading and shape-inferring the model")
    graph = PassManager([DeadCodeElimination()])(import_model(model, input_shapes)).graph
    step("estimating costs")
    costs = annotate_costs(graph, *models)
    problem = problem_from_graph(graph, costs, bandwidth_bps, rtt_ms)
    problem = attach_measured(problem, *models)  # measured prefix/suffix times of a profile
    step("partitioning")
    return Analysis(graph, costs, problem, partition(problem), models)


def _edge_model(target: str | CostModel, edge_precision: str) -> CostModel:
    if precision.check(edge_precision) == "fp32":
        return cost_model_for(target)
    if not isinstance(target, str) or target.endswith(".json"):
        raise SplitcError("--edge-precision fp16 needs a built-in --target (a measured profile is for one precision)")
    from splitc.cost.roofline import roofline_for

    return roofline_for(get_target(target).in_fp16())


def compile(model: str | Path | onnx.ModelProto, options: CompileOptions | None = None,
            progress: Progress | None = None, **settings) -> CompiledSplit:
    """Split ``model`` between an edge device and a cloud server, as ``options`` say.

    ``options`` is a ``splitc.CompileOptions``; keyword ``settings`` are its fields by name and build it
    (or override its fields): ``splitc.compile("m.onnx", target="jetson-tx2", bandwidth="5Mbps")``.

    ``target`` and ``cloud`` name built-in devices (``splitc targets``), give
    a measured profile (a path ending in ``.json``, from ``splitc profile``)
    or pass a cost model. ``bandwidth`` is bytes/s or a string such as
    ``"5Mbps"``; ``rtt`` is ms or a string such as ``"20ms"``. ``cut`` forces
    the tensors to send (``[]`` for edge-only) instead of the optimum.

    ``bits`` is the width the cut tensor is quantized to (1..8, 16 or 32 for
    raw float32) or ``"auto"``: then the cut and the width are chosen together
    so that the accuracy drop measured on ``calib`` (an ``.npz`` keyed by input
    names, optionally with ``labels``) stays within ``max_drop`` (a fraction).
    ``calib`` may also be a folder of images, prepared as ``preprocess`` says
    (see ``splitc.calibration.images``). ``codec`` is ``"huffman"`` or
    ``"none"``; ``cache_dir`` holds an earlier output whose calibration tables
    may be reused. With ``bits="auto"``, ``codec="huffman"`` and ``calib``,
    ``jpeg`` also tries JPEG coding (lossy; qualities in
    ``splitc.joint.JPEG_QUALITIES``) for cut tensors shaped like images: in
    practice the model input, which then competes with sending a JPEG photo.
    ``edge_precision="fp16"`` emits the edge half in float16 (targets with an
    FP16 rate: ``splitc targets``); its accuracy cost is measured with ``calib``.
    ``confidence`` is the level of the certified upper bound on the drop that
    must be within ``max_drop`` (``splitc.calibration.confidence``).
    ``emit_fallback`` marks the plan ``fallback: true`` (ship the cloud half to the edge).
    ``compress`` (``"auto"`` or names from ``splitc.compress.names.FAMILIES``; needs ``calib``) lets the
    compile rewrite the edge half too: the cut, the width and the edge variant are chosen together,
    each variant's accuracy measured (docs/compression.md); the plan records it in ``edge.compression``.
    """
    opts = CompileOptions.build(_legacy(options, settings), **settings)
    analysis = analyse(model, opts.target, opts.cloud, opts.bandwidth, opts.rtt, opts.input_shapes, progress,
                       opts.edge_precision)
    step = progress or (lambda _stage: None)
    cut = None if opts.cut is None else list(opts.cut)
    choice = None
    if opts.compress:  # the edge variant is chosen with the cut and the width (docs/compression.md)
        from splitc.compress.emit import compile_compressed

        with using_confidence(opts.confidence):
            split = compile_compressed(analysis, opts, progress)
    else:
        if opts.bits != 32 or opts.calib is not None:
            with using_confidence(opts.confidence):
                choice = choose(analysis, opts.encoding(), cut, progress)
            calibration_warnings(choice.table, opts.max_drop)
        if opts.edge_precision == "fp16" and opts.calib is None:
            warnings.warn("no --calib data: the accuracy of the float16 edge half was NOT checked",
                          UncheckedAccuracy, stacklevel=2)
        step("emitting the halves")
        split = analysis.split(cut, opts.alternatives, choice)
    if opts.preprocess is not None:
        from splitc.calibration.images import Preprocess

        split.plan["preprocess"] = Preprocess.parse(opts.preprocess).to_json()
    if opts.emit_fallback:
        split.plan["fallback"] = True
    return split


def _legacy(options, settings: dict) -> CompileOptions | None:
    """A target passed positionally (``compile(model, "jetson-tx2")``), the old signature: deprecated."""
    if options is None or isinstance(options, CompileOptions):
        return options
    warnings.warn("splitc.compile(model, target) is deprecated: pass target=... or a CompileOptions",
                  DeprecationWarning, stacklevel=3)
    settings.setdefault("target", options)
    return None


def calibration_warnings(table, max_drop: float) -> None:
    """Warn (``CalibrationWarning``) about degenerate data and a set too small to certify ``max_drop``."""
    if table is None:
        return
    from splitc.calibration.data import CalibrationWarning

    for note in [*table.notes, table.too_small(max_drop)]:
        if note:
            warnings.warn(note, CalibrationWarning, stacklevel=3)


def _assemble(graph, part, result, costs, models, link, alternatives, forced, choice=None,
              edge_passes=()) -> CompiledSplit:
    edge_model, cloud_model = models
    edge_spec = emit.edge_spec(graph, part.edge_nodes, part.cut_values)
    encodings = list(choice.encodings) if choice else []
    fp16 = [precision.ToFloat16Edge()] if precision.edge_precision(models) == "fp16" and part.edge_nodes else []
    outputs = {t for t in part.cut_values if graph.values[t].is_graph_output}
    edge = _run_passes(emit.emit_half(graph, edge_spec, f"{graph.name}_edge"),
                       [*fp16, *(edge_passes if part.edge_nodes else ()), qdq.InsertQuantize(encodings, keep=outputs)])
    cloud = None
    if part.cloud_nodes:
        cloud_spec = emit.cloud_spec(part.cloud_nodes, part.cut_values, part.returned_values)
        cloud = _run_passes(emit.emit_half(graph, cloud_spec, f"{graph.name}_cloud"),
                            [qdq.InsertDequantize(encodings)])
    edge_half, cloud_half = edge.model, cloud.model if cloud else None
    plan = build_manifest(
        graph=graph,
        part=part,
        edge=(edge_half, edge_model.name, edge_model.describe()),
        cloud=(cloud_half, cloud_model.name, cloud_model.describe()) if cloud_half else None,
        costs=costs,
        link={"bandwidth_Bps": link[0], "bandwidth_bps": link[0] * 8, "rtt_ms": link[1]},
        baselines={"edge_only_ms": result.edge_only.total_ms, "cloud_only_ms": result.cloud_only.total_ms,
                   "optimal_ms": result.best.total_ms},
        alternatives=result.candidates(alternatives),
        cut_vertices=result.cut_vertices,
        solve_ms=result.solve_ms,
        forced=forced,
        cloud_target=cloud_model.name,
        choice=choice,
    )
    plan["edge"]["precision"] = precision.edge_precision(models)
    for side, ran in (("edge", edge), ("cloud", cloud)):
        if ran is not None:
            plan[side]["passes"] = [record.to_json() for record in ran.records]
    return CompiledSplit(graph, part, result, plan, edge_half, cloud_half, _files(choice))


def _run_passes(half: onnx.ModelProto, passes: list) -> PassResult:
    """Run a half's passes; a half no pass changed gets the full ONNX check here (a pass's ``ensures`` did it)."""
    result = PassManager(passes)(half)
    if not result.modified:
        emit.check_half(result.model)
    return result


def _files(choice: Choice | None) -> dict[str, bytes]:
    """Codebooks and the calibration table, saved beside the halves."""
    if choice is None:
        return {}
    files = {f"codebooks/{name}": book.to_bytes() for name, book in codebook_files(choice).items()}
    if choice.table is not None:
        files["calibration.json"] = (json.dumps(choice.table.to_json(), indent=1) + "\n").encode()
    return files
