"""A compressed compile: search the (cut, width, edge variant) space, emit the winner, record it in the plan.

The chosen variant's model (the original one for ``base``, ``fp16`` and ``int8``) is analysed again with
the variant's edge cost model and split at the chosen cut exactly as it was priced (the largest cloud side
that sends that cut), so the halves are ordinary ONNX models that ``splitc run`` and ``splitc serve`` run
unchanged: an INT8 edge half gets ``ToInt8Edge`` (calibrated on the fit share, as measured), a float16 one
the float16 rewrite. ``plan.json`` gets ``edge.compression`` (docs/plan.md): what was applied, at which
level, the FLOPs it saved and the drop measured, why every other requested rewrite did not apply, and the
search's cost.
"""

from __future__ import annotations

import time

import numpy as np

from splitc import joint
from splitc.calibration import calibrate
from splitc.calibration import confidence as conf
from splitc.compress.int8 import ToInt8Edge
from splitc.compress.search import Measured, SearchResult, Space, prepare
from splitc.compress.space import Pricer
from splitc.cost.model import annotate_costs
from splitc.frontend import import_model
from splitc.partition.problem import problem_from_graph
from splitc.partition.solve import partition
from splitc.passes.base import PassManager
from splitc.passes.dce import DeadCodeElimination
from splitc.passes.qdq import encoding_for


def compile_compressed(analysis, options, progress=None):
    """``splitc.compile`` with ``options.compress``: the best plan over every edge variant (a ``CompiledSplit``)."""
    step = progress or (lambda _s: None)
    cut = None if options.cut is None else list(options.cut)
    space = prepare(analysis, options, cut, progress)
    step("measuring the accuracy of the candidates that can still win")
    started = time.perf_counter()
    result = space.search()
    search_s = time.perf_counter() - started
    step("emitting the halves")
    split = emit_choice(space, result.best, result.ranked, options.alternatives, forced=cut is not None)
    split.plan["edge"]["compression"] = compression_record(space, result, search_s)
    return split


def emit_choice(space: Space, chosen: Measured, ranked: list[Measured], alternatives: int = 5,
                forced: bool = False):
    """The ``CompiledSplit`` of ``chosen`` (``ranked``: the options the plan lists as runners-up)."""
    table = _table(space)
    options = [m.option for m in ranked] or [chosen.option]
    if chosen.candidate.spec.is_base:
        choice = joint.make_choice(space.analysis, space.enc, chosen.option, options, table)
        return space.analysis.split(list(chosen.option.cut) if forced else None, alternatives, choice)
    return _emit_variant(space, chosen, options, table, alternatives, forced)


def _table(space: Space) -> calibrate.Table:
    """Every measured entry (``[cut, width, variant]`` keys), as ``calibration.json`` holds it."""
    ev = space.evaluator
    reference = ev.reference("full")
    first = [o[reference.first_output] for o in reference.outputs]
    labels = space.shares.full.labels
    score = calibrate.score(ev.metric, first, first, labels)
    return calibrate.Table(ev.metric, "", score, ev.entries(), samples=len(space.shares.full.samples),
                           labelled=labels is not None, confidence=conf.current())


def _analysis(space: Space, model, precision: str):
    """The variant's model analysed as ``splitc.analyse`` does, with the variant's edge cost model."""
    pricer = Pricer(space.analysis)
    models = (pricer.edge_model(precision), pricer.cloud_model())
    graph = PassManager([DeadCodeElimination()])(import_model(model)).graph
    costs = annotate_costs(graph, *models)
    problem = problem_from_graph(graph, costs, space.analysis.problem.bandwidth, space.analysis.problem.rtt_ms)
    return type(space.analysis)(graph, costs, problem, partition(problem), models)


def _emit_variant(space: Space, best: Measured, ranked: list, table, alternatives: int, forced: bool = False):
    cand, option = best.candidate, best.option
    model = cand.built.model if cand.built is not None else space.resolver.builder.model
    variant = _analysis(space, model, cand.spec.precision)
    variant.assignments.clear()  # split exactly as priced: the largest cloud side that sends the cut
    values, enc = variant.graph.values, space.enc
    encodings = [encoding_for(t, best.width, 1 if enc.per_channel and len(values[t].shape) > 1 else None,
                              enc.codec, values[t].dtype) for t in option.cut]
    meas, _ = space.evaluator.measurement(cand)
    books = {e.tensor: calibrate.train_codebook([a[e.tensor] for a in meas.activations], e)
             for e in encodings if e.quantized and e.codec == "huffman"}
    choice = joint.Choice(option, ranked, encodings, books, table, True, space.enc.max_drop)
    passes = [ToInt8Edge(space.shares.fit)] if cand.spec.precision == "int8" else []
    split = variant.split(list(option.cut) if forced else None, alternatives, choice, edge_passes=passes)
    original = space.analysis.result  # the speed-ups a report shows are against the model as given
    split.plan["baselines"] = {"edge_only_ms": original.edge_only.total_ms,
                               "cloud_only_ms": original.cloud_only.total_ms, "optimal_ms": original.best.total_ms}
    return split


def compression_record(space: Space, result: SearchResult, search_s: float = 0.0) -> dict:
    """``edge.compression`` of the plan (docs/plan.md)."""
    best = result.best
    cand, option = best.candidate, best.option
    samples = len((space.shares.certify if cand.spec.fitted else space.shares.full).samples)
    applied = [_step(s, option) for s in (cand.built.steps if cand.built is not None else [])]
    if cand.spec.precision != "fp32":
        applied.append({"rewrite": cand.spec.precision, "level": None, "flops_saved": 0.0, "drop": option.drop,
                        "drop_bound": option.bound})
    record = {
        "requested": list(space.families),
        "variant": cand.spec.name,
        "cut": list(cand.cut),
        "sent": list(option.cut),
        "applied": applied,
        "edge_flops_before": cand.base_flops,
        "edge_flops_after": cand.priced.edge_flops,
        "flops_saved": cand.flops_saved,
        "drop": option.drop,
        "drop_bound": option.bound,
        "samples": samples,
        "fit_samples": len(space.shares.fit) if cand.spec.fitted else 0,
        "uncompressed": _uncompressed(space, result),
        "not_applied": {f: _why_not(f, space, result) for f in space.families if f not in cand.spec.families},
        "search": {"candidates": result.candidates, "visited": result.visited, "evaluations": result.evaluations,
                   "fits": space.resolver.builder.fits, "build_s": space.build_s, "search_s": search_s},
    }
    return _plain(record)


def _step(step: dict, option) -> dict:
    before, after = step.get("flops_before", 0.0), step.get("flops_after", 0.0)
    saved = 0.0 if not before or not np.isfinite(before) else 1.0 - after / before
    detail = {k: v for k, v in step.items() if k not in ("rewrite", "level", "flops_before", "flops_after")}
    return {"rewrite": step["rewrite"], "level": step["level"], "flops_saved": saved, "flops_before": before,
            "flops_after": after, "drop": option.drop, "drop_bound": option.bound, "detail": detail}


def _uncompressed(space: Space, result: SearchResult) -> dict | None:
    """The best option of the unchanged model the search knows: measured, or edge-only (exact, unmeasured)."""
    known = [(result.total_ms(m), m.option) for m in result.ranked if m.candidate.spec.is_base]
    edge = [c for c in space.candidates if c.spec.is_base and not c.cut]
    known += [(c.lower_bound(result.bandwidth, result.rtt_ms), None) for c in edge]
    if not known:
        return None
    total, option = min(known, key=lambda k: k[0])
    if option is None:
        return {"cut": [], "bits": 32, "total_ms": total, "drop": 0.0, "drop_bound": 0.0}
    return {"cut": list(option.cut), "bits": option.bits, "total_ms": total, "drop": option.drop,
            "drop_bound": option.bound}


def _ms(value: float, other: float) -> str:
    """``value`` in ms with two decimals, or more when two decimals would not tell it from ``other``."""
    return f"{value:.2f}" if f"{value:.2f}" != f"{other:.2f}" else f"{value:.4f}"


def _why_not(family: str, space: Space, result: SearchResult) -> str:
    """Why no option of ``family`` was chosen, in one sentence."""
    cands = [c for c in space.candidates if family in c.spec.families and c.reason is None]
    reasons = space.reasons.get(family, [])
    if not cands:
        more = f" (and {len(reasons) - 1} more candidates)" if len(reasons) > 1 else ""
        return f"did not apply: {reasons[0]}{more}" if reasons else "did not apply: no cut has an edge to rewrite"
    chosen = result.total_ms()
    feasible = [m for m in result.ranked if family in m.candidate.spec.families]
    if feasible:
        m = feasible[0]
        mine = result.total_ms(m)
        return (f"slower: its best option ({m.candidate.spec.name}, {m.option.bits} bits) is predicted "
                f"{_ms(mine, chosen)} ms, the chosen plan {_ms(chosen, mine)} ms")
    measured = [m for m in result.measured if family in m.candidate.spec.families]
    if measured:
        smallest = min(m.option.bound for m in measured)
        return (f"over the bound: none of its {len(measured)} measured options met it (smallest certified drop "
                f"bound {smallest:.2%} > {result.max_drop:.2%})")
    lowest = min(result.bounds[c.key] for c in cands)
    if lowest > chosen:
        return (f"cannot pay: its candidates' lower bound ({lowest:.2f} ms, nothing sent) is above the chosen "
                f"plan's {chosen:.2f} ms, so none was measured")
    return f"cannot pay: even its smallest frames make every candidate slower than the chosen plan's {chosen:.2f} ms"


def _plain(value):
    """``value`` with numpy scalars and tuples made JSON-ready."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
