"""Building a model tree from a real model: forks, blocks and variants, measured options, the exact policy.

``build_tree(model, traces, TreeOptions(calib=...))`` does, in order:

1. read the traces' window rates and delivery times (``splitc.tree.markov.ChainFitter``);
2. analyse the model (``splitc.api.analyse``: costs, cut vertices) and load
   the calibration set;
3. measure at most ``max_candidates`` fork candidates as plain splits of the
   base model (``splitc.tree.forks.cap_candidates``; probed in groups that
   bound the activations held at once) and choose the forks
   (``splitc.tree.forks``: greedy by the solved policy's expected latency,
   then splitting the longest block) over a chain whose class edges follow
   ``class_rule`` for the tree of the base model cut at every candidate;
4. cut the model into blocks between the forks and make each block's variants
   (``splitc.tree.variants``: base, float16 where the target has an FP16 rate,
   and any ``TreeOptions.makers``);
5. measure every root-to-leaf composition on the calibration set
   (``splitc.tree.measure``): bytes per width with the runtime codec, and the
   certified drop bound of the *whole composed model*;
6. fit the chain's classes for the measured tree (``class_rule``:
   ``"decision"``, the default, puts the edges where the best decision
   changes, ``splitc.tree.edges``; ``"quantile"`` at quantiles of the window
   rates), solve the tree exactly (``splitc.tree.policy.solve``) and find the fixed
   plan for the traces' mean bandwidth (``splitc.tree.search.fixed_plan``).

Times are the cost model's (``splitc.cost``): a block's edge time is the
difference of the edge prefix times at its two forks (float16 prefix times
for the float16 variant); a fork's cloud time is that of the base model's
suffix from it. The reply (the model's outputs) is not counted: the traces
describe the uplink only. ``ModelTree.save`` writes the artifacts
(``splitc.tree.emit``; see docs/model-tree.md and docs/plan.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splitc import joint
from splitc.api import Analysis, analyse
from splitc.backends import onnx_backend as emit
from splitc.calibration import calibrate
from splitc.calibration.confidence import using as using_confidence
from splitc.cost.roofline import roofline_for
from splitc.errors import SplitcError
from splitc.passes.qdq import QUANT_BITS
from splitc.targets import DEFAULT_CLOUD, DEFAULT_EDGE, Target, get_target
from splitc.tree.edges import CLASS_RULES, fit_classes
from splitc.tree.emit import save_tree
from splitc.tree.forks import (
    ForkCandidate,
    base_spec,
    candidates,
    cap_candidates,
    measure_candidates,
    probe_groups,
    select_forks,
    suffix_model,
)
from splitc.tree.markov import BandwidthChain, ChainFitter
from splitc.tree.measure import (
    Composer,
    Scoring,
    Tables,
    measure_tree,
    spec_from_tables,
)
from splitc.tree.policy import TreePolicy, evaluate, solve
from splitc.tree.search import FixedPlan, fixed_plan, fixed_policy
from splitc.tree.spec import TreeSpec
from splitc.tree.traces import MTU, Trace, load_trace
from splitc.tree.variants import (
    BlockSource,
    BlockVariant,
    VariantMaker,
    fp16_variant,
    variants_of,
)

__all__ = ["MAX_FORKS", "ModelTree", "TreeOptions", "build_tree", "make_blocks", "mean_bandwidth"]

MAX_FORKS = 8
Progress = Callable[[str], None]


@dataclass
class TreeOptions:
    """Settings of ``build_tree``: devices, link, calibration, accuracy bound, tree shape, chain."""

    calib: str | Path
    target: str | Target = DEFAULT_EDGE  # a built-in name, a Target, or a measured profile (.json)
    cloud: str = DEFAULT_CLOUD
    rtt: str | float = "20ms"
    max_drop: float = 0.01
    confidence: float | None = None
    forks: int = 6
    classes: int = 3
    class_rule: str = "decision"  # class edges where the best decision changes, or "quantile"
    max_candidates: int | None = 8  # fork candidates measured (None or 0: every eligible cut vertex)
    step_s: float = 0.1
    widths: tuple[int, ...] = (32, 8, 6, 4)
    fp16: bool = True
    makers: tuple[VariantMaker, ...] = ()
    input_shapes: dict[str, tuple[int, ...]] | None = None
    preprocess: str | None = None
    threads: int = 1

    def check(self) -> None:
        """Refuse settings that cannot build a tree, with one line naming the setting."""
        if not 1 <= self.forks <= MAX_FORKS:
            raise SplitcError(f"--forks must be 1..{MAX_FORKS}, not {self.forks}")
        if not 0 <= self.max_drop <= 1:
            raise SplitcError(f"--max-drop must be between 0% and 100%, not {self.max_drop:.4g}")
        bad = [w for w in self.widths if w not in (*QUANT_BITS, 16, 32)]
        if bad or not self.widths:
            raise SplitcError(f"offload widths must be 1..8, 16 or 32 bits, not {list(self.widths)}")
        if self.classes < 1 or not self.step_s > 0:
            raise SplitcError(f"bad chain settings: {self.classes} classes (>= 1), step {self.step_s} s (> 0)")
        if self.class_rule not in CLASS_RULES:
            raise SplitcError(f"unknown class rule {self.class_rule!r}: use one of {', '.join(CLASS_RULES)}")
        if self.max_candidates is not None and self.max_candidates < 0:
            raise SplitcError(f"--candidates must be >= 1 (0: no cap), not {self.max_candidates}")


@dataclass
class ModelTree:
    """A built tree: the analysis, forks, block variants, measured tables, spec, chain, policy, fixed plan."""

    analysis: Analysis
    forks: list[ForkCandidate]
    blocks: list[list[BlockVariant]]
    tables: Tables
    spec: TreeSpec
    chain: BandwidthChain
    policy: TreePolicy
    fixed: FixedPlan
    fixed_ms: float  # the fixed plan's expected latency under the chain (stationary start class)
    mean_bandwidth: float  # bytes/s over all traces, the fixed plan's bandwidth
    traces: list[Trace]
    options: TreeOptions
    rtt_ms: float
    candidates: int = 0  # fork candidates measured
    suffixes: list = field(default_factory=list, repr=False)

    def composer(self, threads: int = 1) -> Composer:
        """Runs any composition of this tree in process (``Composer.run``)."""
        return Composer(self.blocks, self.suffixes, self.first_output, threads)

    @property
    def first_output(self) -> str:
        """The model output compositions are scored on."""
        return self.analysis.graph.outputs[0].name

    def save(self, out_dir: str | Path):
        """Write tree.json, blocks/ and the entry points (``splitc.tree.emit.save_tree``)."""
        return save_tree(self, out_dir)


def _traces(traces: Sequence[Trace | str | os.PathLike]) -> list[Trace]:
    loaded = [t if isinstance(t, Trace) else load_trace(t) for t in traces]
    if not loaded:
        raise SplitcError("a model tree needs at least one trace (--trace FILE)")
    return loaded


def mean_bandwidth(traces: Sequence[Trace]) -> float:
    """Bytes/s over all traces together (their opportunities over their periods)."""
    return sum(t.opportunities for t in traces) * MTU * 1e3 / sum(t.period_ms for t in traces)


def build_tree(model, traces: Sequence[Trace | str | os.PathLike], options: TreeOptions,
               progress: Progress | None = None) -> ModelTree:
    """Build, measure and solve the model tree of ``model`` over the links of ``traces`` (module docstring)."""
    step = progress or (lambda _stage: None)
    options.check()
    loaded = _traces(traces)
    step("reading the traces")
    fitter = ChainFitter(loaded, options.step_s)
    bandwidth = mean_bandwidth(loaded)
    with using_confidence(options.confidence):
        target = roofline_for(options.target) if isinstance(options.target, Target) else options.target
        analysis = analyse(model, target, options.cloud, bandwidth, options.rtt, options.input_shapes,
                           progress)
        rtt_ms = analysis.problem.rtt_ms
        found, scoring, samples = _measure_candidates(analysis, options, step)
        total = analysis.result.edge_only.edge_ms
        step("fitting the bandwidth chain for the fork candidates")
        chain = fit_classes(base_spec(found, total, rtt_ms), fitter, options.classes, max_drop=options.max_drop,
                            rule=options.class_rule)
        forks = [found[i] for i in select_forks(found, total, rtt_ms, chain, options.max_drop, options.forks, step)]
        blocks = make_blocks(analysis, forks, _fp16_prefix(model, options, forks, bandwidth), options)
        suffixes = [suffix_model(analysis, f.tensors) for f in forks]
        composer = Composer(blocks, suffixes, scoring.first_output, options.threads)
        tables = measure_tree(composer, scoring, [f.tensors for f in forks], samples, options.widths,
                              options.max_drop, progress=step)
    spec = spec_from_tables([f.cloud_ms for f in forks], blocks, tables, rtt_ms)
    step("fitting the bandwidth chain for the tree")
    chain = fit_classes(spec, fitter, options.classes, max_drop=options.max_drop, rule=options.class_rule)
    step("solving the tree")
    policy = solve(spec, chain, options.max_drop)
    fixed = fixed_plan(spec, bandwidth, options.max_drop)
    fixed_ms = float(np.dot(chain.stationary, evaluate(fixed_policy(fixed, spec, chain, options.max_drop), spec,
                                                       chain)))
    return ModelTree(analysis, forks, blocks, tables, spec, chain, policy, fixed, fixed_ms, bandwidth, loaded,
                     options, rtt_ms, len(found), suffixes)


def _measure_candidates(analysis: Analysis, options: TreeOptions, step: Progress):
    """Every fork candidate measured as a plain split; the scoring and the calibration samples."""
    encoding = joint.EncodingOptions(bits=32, codec="huffman", max_drop=options.max_drop, calib=options.calib,
                                     preprocess=options.preprocess)
    ctx = joint.context(analysis)
    calib = ctx.calibration(analysis, encoding)
    eligible = candidates(analysis)
    found = cap_candidates(analysis, eligible, options.max_candidates)
    step(f"calibrating {len(found)} fork candidates (of {len(eligible)})")
    outputs = [{"name": v.name, "shape": list(v.shape or [])} for v in analysis.graph.outputs]
    metric = calibrate.choose_metric("auto", outputs, calib.labels is not None)
    scoring = None
    for group in probe_groups(analysis, found, len(calib.samples)):
        chosen = [found[i] for i in group]
        meas = _probe(analysis, calib, sorted({t for c in chosen for t in c.tensors}))
        if scoring is None:
            scoring = Scoring(metric, meas.first_output, [o[meas.first_output] for o in meas.outputs],
                              calib.labels)
        measure_candidates(analysis, chosen, meas, scoring, options.widths, options.max_drop)
        del meas  # the group's activations go before the next group's are probed
    return found, scoring, calib.samples


def _probe(analysis: Analysis, calib, names: list[str]):
    """Activations of ``names`` on the calibration set (not kept by the compile context: the caller drops them)."""
    graph = analysis.graph
    types = {t: (graph.values[t].shape, graph.values[t].dtype) for t in names}
    return calibrate.run_probe(graph.model, names, types, calib, joint._rewrite(analysis))


def _edge_target(target) -> Target | None:
    """The built-in (or given) ``Target`` of the edge, None for a measured profile or a bare cost model."""
    if isinstance(target, Target):
        return target
    if isinstance(target, str) and not target.endswith(".json"):
        return get_target(target)
    return None


def _fp16_prefix(model, options: TreeOptions, forks: list[ForkCandidate], bandwidth: float) -> list[float] | None:
    """Edge prefix times (ms) at each fork and at the end in float16, when the target prices float16; else None."""
    target = _edge_target(options.target)
    if not options.fp16 or target is None or not target.fp16_flops:
        return None
    half = analyse(model, roofline_for(target.in_fp16()), options.cloud, bandwidth, options.rtt, options.input_shapes)
    return [half.partition_for(list(f.tensors)).edge_ms for f in forks] + [half.result.edge_only.edge_ms]


def make_blocks(analysis: Analysis, forks: list[ForkCandidate], fp16_prefix: list[float] | None,
                options: TreeOptions) -> list[list[BlockVariant]]:
    """Each block's ONNX model (the base model's nodes between two forks) and its variants."""
    graph = analysis.graph
    order = [n.name for n in graph.data_nodes]
    prefix = [f.prefix_ms for f in forks] + [analysis.result.edge_only.edge_ms]
    ends = [set(f.edge_nodes) for f in forks] + [set(order)]
    makers = ([fp16_variant] if options.fp16 else []) + list(options.makers)
    blocks = []
    for i, fork in enumerate(forks):
        nodes = [n for n in order if n in ends[i + 1] and n not in ends[i]]
        outputs = list(forks[i + 1].tensors) if i + 1 < len(forks) else [v.name for v in graph.outputs]
        model = emit.emit_half(graph, emit.HalfSpec(nodes, list(fork.tensors), outputs), f"{graph.name}_b{i}")
        fp16_ms = None if fp16_prefix is None else max(0.0, fp16_prefix[i + 1] - fp16_prefix[i])
        source = BlockSource(i, f"b{i}", model, max(0.0, prefix[i + 1] - prefix[i]), fp16_ms)
        blocks.append(variants_of(source, makers))
    return blocks
