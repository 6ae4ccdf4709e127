"""Building and pricing edge variants: the calibration shares, the rewrite builder, the pricer.

Nothing here measures accuracy. A variant's rewrites are fitted on the calibration set's *fit share*
(``split_calibration``) with the cut's edge nodes as their scope, and the rewritten model is priced by the
cost model on its real shapes: its edge half's nodes, its cut tensor (a bottleneck renames and narrows it)
and its cloud half (which changes only where a consumer was folded or refitted). ``fp16`` and ``int8`` keep
the model and price its edge half with ``Target.in_fp16()`` / ``Target.in_int8()``.

Rewritten models are cached by what they change: two cuts whose edge holds the same convolutions get the
same pruned model, so fitting costs grow with the number of layers, not of cuts.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import onnx

from splitc.calibration.data import CalibrationSet
from splitc.compress import _linear as lin
from splitc.compress.base import Activations
from splitc.compress.bottleneck import CutBottleneck
from splitc.compress.lowrank import LowRank
from splitc.compress.names import Spec
from splitc.compress.prune import ChannelPrune
from splitc.cost.model import annotate_costs
from splitc.errors import SplitcError
from splitc.frontend import import_model
from splitc.partition.problem import problem_from_graph
from splitc.partition.solve import Partition, forced_partition
from splitc.passes.base import PassManager
from splitc.passes.dce import DeadCodeElimination

MIN_SHARE = 8  # samples each share needs: fewer cannot fit a rewrite and still certify it
LINEAR = ("Gemm", "MatMul", "Conv")


@dataclass
class CalibrationShares:
    """The calibration set and its two halves: rewrites are fitted on ``fit`` and certified on ``certify``.

    Samples alternate (even indices fit, odd certify), so a set ordered by class gives both halves every
    class. A variant that changes no weight (``base``, ``fp16``) is measured on the whole set.
    """

    full: CalibrationSet
    fit: list[dict[str, np.ndarray]]
    certify: CalibrationSet

    @property
    def too_small(self) -> str | None:
        """Why no rewrite can be fitted and certified on this set, or None."""
        n = len(self.full.samples)
        if n < 2 * MIN_SHARE:
            return (f"the calibration set has {n} samples; fitting a rewrite on one half and certifying it on the "
                    f"other needs at least {2 * MIN_SHARE}")
        return None


def split_calibration(calib: CalibrationSet) -> CalibrationShares:
    """Even-indexed samples to fit, odd-indexed ones to certify."""
    labels = None if calib.labels is None else np.asarray(calib.labels)[1::2]
    certify = replace(calib, samples=list(calib.samples[1::2]), labels=labels, sha256=f"{calib.sha256}:certify")
    return CalibrationShares(calib, list(calib.samples[0::2]), certify)


@dataclass
class Built:
    """A rewritten model: its cut (renamed by a bottleneck), the edge nodes it added and what each step did."""

    model: onnx.ModelProto = field(repr=False)
    cut: tuple[str, ...]
    key: tuple
    steps: list[dict] = field(default_factory=list)


class Builder:
    """Fits rewrite chains on the fit share and caches the models (see the module doc)."""

    def __init__(self, model: onnx.ModelProto, fit: list[dict[str, np.ndarray]]) -> None:
        self.model = lin.prepare(model)
        self.fit = fit
        self._acts: dict[tuple, Activations] = {}
        self._built: dict[tuple, Built | str] = {}
        self.fits = 0  # rewrites fitted (cache misses)

    def activations(self, key: tuple, model: onnx.ModelProto) -> Activations:
        """The fit share's activations of the model built under ``key`` (one per model, cached)."""
        if key not in self._acts:
            self._acts[key] = Activations(model, self.fit)
        return self._acts[key]

    def build(self, spec: Spec, cut: tuple[str, ...], scope: frozenset[str]) -> Built | str:
        """The model of ``spec`` at ``cut`` (edge nodes ``scope``), or why it does not apply."""
        current = Built(self.model, tuple(cut), ())
        scope = frozenset(scope)
        for family, level in spec.steps:
            key = (current.key, family, level, _effect(family, current, scope))
            if key not in self._built:
                self.fits += 1
                self._built[key] = _apply(family, level, current, scope, key,
                                          self.activations(current.key, current.model))
            found = self._built[key]
            if isinstance(found, str):
                return f"{family} {level:g}: {found}"
            # a cached model may have been built for another cut with the same effect: keep this cut's name
            current = Built(found.model, found.cut if family == "bottleneck" else current.cut, key, found.steps)
            scope = scope | set(found.steps[-1].get("edge_nodes", []))
        return current


def _effect(family: str, built: Built, scope: frozenset[str]) -> tuple:
    """What a step's result depends on besides its input model: the nodes of its kind in scope."""
    nodes = built.model.graph.node
    if family == "bottleneck":
        tensor = built.cut[0]
        return (tensor, frozenset(n.name for n in nodes if tensor in n.input and n.name in scope))
    kinds = LINEAR if family == "lowrank" else ("Conv",)
    return (frozenset(n.name for n in nodes if n.op_type in kinds and n.name in scope),)


def _apply(family: str, level: float, built: Built, scope: frozenset[str], key: tuple,
           acts: Activations) -> Built | str:
    """One rewrite step on ``built`` (fitted on ``acts``), or the reason it does not apply."""
    model, cut = built.model, built.cut
    try:
        if family == "lowrank":
            rewrite = LowRank(acts, scope, level)
            result = rewrite(model)
            record = _lowrank_record(rewrite.variant) if result.modified else None
        elif family == "prune":
            rewrite = ChannelPrune(acts, scope, level)
            result = rewrite(model)
            record = _prune_record(rewrite.detail, model, result.model, scope) if result.modified else None
        else:
            rewrite = CutBottleneck(acts, cut[0], level=level, scope=scope)
            result = rewrite(model)
            record = _bottleneck_record(rewrite.variant) if result.modified else None
    except SplitcError as exc:
        return str(exc)
    if not result.modified:
        return result.reason
    if family == "bottleneck":
        cut = (rewrite.variant.renamed[cut[0]],)
    record = {"rewrite": family, "level": level, **record}
    return Built(result.model, cut, key, [*built.steps, record])


def _lowrank_record(variant) -> dict:
    layers = variant.detail["layers"]
    return {"flops_before": variant.flops_before, "flops_after": variant.flops_after,
            "layers": {name: {"rank": v["rank"], "full_rank": v["full_rank"], "fit_error": v["fit_error"]}
                       for name, v in layers.items()},
            "skipped": dict(variant.detail["skipped"]), "edge_nodes": list(variant.detail["added"])}


def _prune_record(detail: dict, before: onnx.ModelProto, after: onnx.ModelProto, scope: frozenset[str]) -> dict:
    flops = lin.flops_pair(before, after, scope, [])
    flops = (float("nan"), float("nan")) if isinstance(flops, str) else flops
    layers = {d["conv"]: {"channels": d["channels"], "kept": d["kept"], "consumer": d["consumer"],
                          "refit_error": d["refit_error"]} for d in detail["layers"]}
    return {"flops_before": flops[0], "flops_after": flops[1], "layers": layers, "skipped": dict(detail["skipped"])}


def _bottleneck_record(variant) -> dict:
    d = variant.detail
    return {"flops_before": variant.flops_before, "flops_after": variant.flops_after, "cut": d["cut"],
            "new_cut": d["new_cut"], "channels_in": d["channels_in"], "channels_out": d["channels_out"],
            "explained_variance": d["explained_variance"], "folded": d["folded"], "restored": d["restored"],
            "edge_nodes": list(d["edge_nodes"])}


@dataclass
class Priced:
    """A candidate's predicted times (bandwidth-free parts) and its partition in the model it emits."""

    edge_ms: float
    cloud_ms: float
    returned_bytes: float
    kind: str
    edge_flops: float
    part: Partition = field(repr=False)
    graph: object = field(repr=False)


class _Reprofiled:
    """A measured profile for a rewritten model: a node that kept its name and FLOPs keeps its measured
    time; the others are priced by the profile's roofline fallback."""

    def __init__(self, profile, graph) -> None:
        self.inner, self.name = profile, profile.name
        self.flops = {n.name: n.flops for n in graph.data_nodes}
        self.measured = profile.profile.node_ms()

    def node_ms(self, node) -> float:
        if node.constant:
            return 0.0
        if node.name in self.measured and self.flops.get(node.name) == node.flops:
            return self.measured[node.name]
        return self.inner._roofline().node_ms(node)

    def describe(self) -> dict:
        return {**self.inner.describe(), "rewritten": True}


class Pricer:
    """Prices candidates: the analysis itself for ``base``, the cost model on the rewritten graph otherwise."""

    def __init__(self, analysis) -> None:
        self.analysis = analysis
        self._graphs: dict[tuple, object] = {}
        self._problems: dict[tuple, object] = {}

    def edge_model(self, precision: str):
        """The edge cost model for ``precision``, or why there is none."""
        edge = self.analysis.models[0]
        if precision == "fp32":
            return _Reprofiled(edge, self.analysis.graph) if hasattr(edge, "profile") else edge
        target = getattr(edge, "target", None)
        if target is None:
            return f"{precision} is priced from a built-in --target's figures; a measured profile is for float32"
        from splitc.cost.roofline import roofline_for
        from splitc.errors import TargetError

        try:
            return roofline_for(target.in_fp16() if precision == "fp16" else target.in_int8())
        except TargetError as exc:
            return str(exc)

    def cloud_model(self):
        """The cloud cost model (a measured profile re-keyed to the rewritten model's nodes)."""
        cloud = self.analysis.models[1]
        return _Reprofiled(cloud, self.analysis.graph) if hasattr(cloud, "profile") else cloud

    def graph(self, key: tuple, model: onnx.ModelProto):
        """The IR of the model built under ``key`` (``()``: the analysed model), imported once."""
        if key == ():
            return self.analysis.graph
        if key not in self._graphs:
            self._graphs[key] = PassManager([DeadCodeElimination()])(import_model(model)).graph
        return self._graphs[key]

    def price(self, key: tuple, model: onnx.ModelProto, cut: tuple[str, ...], precision: str) -> Priced | str:
        """Times and partition of sending ``cut`` of ``model`` (``key`` () is the analysed model)."""
        if key == () and precision == "fp32":
            graph, part = self.analysis.graph, self.analysis.partition_for(cut)
        else:
            edge = self.edge_model(precision)
            if isinstance(edge, str):
                return edge
            try:
                graph = self.graph(key, model)
                if (key, precision) not in self._problems:
                    costs = annotate_costs(graph, edge, self.cloud_model())
                    problem = self.analysis.problem
                    self._problems[(key, precision)] = problem_from_graph(graph, costs, problem.bandwidth,
                                                                          problem.rtt_ms)
                part = forced_partition(self._problems[(key, precision)], list(cut))
            except SplitcError as exc:
                return str(exc)
        edge_nodes = set(part.edge_nodes)
        flops = float(sum(n.flops for n in graph.data_nodes if n.name in edge_nodes))
        return Priced(part.edge_ms, part.cloud_ms, float(part.down_bytes if part.cloud_nodes else 0.0), part.kind,
                      flops, part, graph)


def cut_text(cut: tuple[str, ...]) -> str:
    """A cut as reasons name it."""
    return ", ".join(cut) if cut else "(edge-only)"


__all__ = ["Builder", "Built", "CalibrationShares", "Priced", "Pricer", "cut_text", "split_calibration"]
