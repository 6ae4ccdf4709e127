"""Benchmark: how well each latency model predicts the real time of a split's two halves.

For every zoo model and a few ONNX ``light_*`` models, on this machine
(onnxruntime, one intra-op thread):

1. ``splitc profile`` the model (per-node times from onnxruntime's profiler,
   prefix/suffix times at every cut vertex);
2. pick cuts: every cut vertex, edge-only and cloud-only ("cut-vertex cuts"),
   and splits that are *not* at a cut vertex ("other cuts": the partitioner's
   per-segment candidates and "this node and everything after it on the
   cloud" for nodes spread over the model);
3. in a separate measurement pass (fresh sessions, its own repeats) emit each
   cut's edge and cloud half and time them: the real latencies. Like the
   profile, every half is timed in three rounds over all halves, samples
   pooled, and with one intra-op thread the clock is the CPU time of the
   thread running the session (this 2-core machine is shared: the wall clock
   would count the time other processes took the core);
4. predict each half with
   (a) the sum of per-layer times measured layer by layer, each node alone in
       its own model (Neurosurgeon/JALAD style),
   (a') the sum of the profile's per-node times (onnxruntime profiler, fused
       groups shared by FLOPs, scaled to the whole-model time),
   (b) splitc's segment-aware model (measured prefix/suffix at the nearest
       cut vertex plus per-node times in between: ``evaluate`` on the problem
       with the profile's measured arrays),
   (c) the roofline ``host`` target calibrated per op type.

Error = |predicted - measured| / measured, per half. Writes
``bench/results/latency_model.md`` and ``.json``.

    python bench/latency_model.py            # about 15 minutes on 2 cores
    python bench/latency_model.py --quick    # zoo models only, fewer runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

from splitc.testing import zoo
from splitc.api import analyse
from splitc.backends import onnx_backend as emit
from splitc.cost.model import annotate_costs
from splitc.cost.resolve import cost_model_for
from splitc.partition.solve import forced_partition, make_partition
from splitc.partition.pricing import evaluate
from splitc.profiling.command import write_profile
from splitc.profiling.measure import ROUNDS, profile_model
from splitc.profiling.timing import MIN_SECONDS, random_feeds, sample_model, time_model

RESULTS = Path(__file__).resolve().parent / "results"
LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
LIGHT_MODELS = ["squeezenet", "shufflenet", "inception_v1"]
PREDICTORS = {"a_layers": "(a) sum of per-layer times, each layer alone", "a_nodes": "(a') sum of profiled node times",
              "b_segment": "(b) splitc segment-aware", "c_roofline": "(c) roofline `host` (calibrated)"}
THREADS = 1


def log(msg: str) -> None:
    print(msg, flush=True)


def models(quick: bool) -> dict:
    found = {name: zoo.build(name) for name in zoo.MODELS}
    for name in [] if quick else LIGHT_MODELS:
        path = LIGHT / f"light_{name}.onnx"
        if path.exists():
            found[f"light_{name}"] = str(path)
    return found


def descendants(problem, start: int) -> np.ndarray:
    """``start`` and every node after it that depends on it (nodes are in topological order)."""
    cloud = np.zeros(problem.num_nodes, dtype=bool)
    cloud[start] = True
    made = {}
    for v in np.flatnonzero(problem.producer >= 0):
        made.setdefault(int(problem.producer[v]), []).append(int(v))
    for node in range(start, problem.num_nodes):
        if cloud[node]:
            for v in made.get(node, []):
                cloud[problem.cons_idx[problem.cons_ptr[v] : problem.cons_ptr[v + 1]]] = True
    return cloud


def cut_assignments(analysis, limit: int) -> list[tuple[str, np.ndarray]]:
    """(kind, on_cloud) for the cut-vertex cuts and up to ``limit`` other cuts."""
    problem = analysis.problem
    n = problem.num_nodes
    clean = [np.zeros(n, bool), np.ones(n, bool)]
    for cut in analysis.result.cut_vertices:
        part = forced_partition(problem, [cut]) if _has_readers(problem, cut) else None
        if part is not None and part.cloud_nodes:
            clean.append(part.on_cloud)
    seen = {a.tobytes() for a in clean}
    others = [c.on_cloud for c in analysis.result.candidates()]
    picks = np.unique(np.linspace(0, n - 1, 4 * limit).astype(int))
    others += [descendants(problem, int(i)) for i in picks]
    chosen = []
    for on_cloud in others:
        if on_cloud.tobytes() not in seen and on_cloud.any() and not on_cloud.all():
            seen.add(on_cloud.tobytes())
            chosen.append(on_cloud)
    step = max(1, len(chosen) // limit)
    return [("cut vertex", a) for a in clean] + [("other", a) for a in chosen[::step][:limit]]


def _has_readers(problem, tensor: str) -> bool:
    v = problem.value_names.index(tensor)
    return bool(problem.cons_ptr[v + 1] > problem.cons_ptr[v])


def halves(graph, problem, on_cloud):
    part = make_partition(problem, on_cloud)
    edge = emit.emit_half(graph, emit.edge_spec(graph, part.edge_nodes, part.cut_values), "edge")
    cloud = None
    if part.cloud_nodes:
        cloud = emit.emit_half(graph, emit.cloud_spec(part.cloud_nodes, part.cut_values, part.returned_values), "cloud")
    return part, edge, cloud


def measure(graph, problem, assignments, feeds, runs: int) -> list[tuple[float | None, float | None]]:
    """Real medians (ms) of each assignment's edge and cloud half (None for a half with no node).

    Like the profile, every half is timed in ``ROUNDS`` rounds over all of them, samples pooled.
    """
    pooled = [([], []) for _ in assignments]
    config = dict(runs=-(-runs // ROUNDS), warmup=3, threads=THREADS, min_seconds=MIN_SECONDS / ROUNDS)
    for _ in range(ROUNDS):
        for (_, on_cloud), (edge_times, cloud_times) in zip(assignments, pooled):
            part, edge, cloud = halves(graph, problem, on_cloud)
            times, produced = sample_model(edge, feeds, **config)
            edge_times += times if part.edge_nodes else []
            cloud_times += sample_model(cloud, {**feeds, **produced}, **config)[0] if cloud is not None else []
    return [(float(np.median(e)) if e else None, float(np.median(c)) if c else None) for e, c in pooled]


def layer_times(graph, runs: int) -> dict[str, float]:
    """Each data node alone in its own model, timed (the per-layer measurement of Neurosurgeon)."""
    times = {}
    for node in graph.data_nodes:
        inputs = [v for v in node.all_inputs if not v.is_constant]
        outputs = [v.name for v in node.outputs if v.consumers or v.is_graph_output]
        model = emit.emit_half(graph, emit.HalfSpec([node.name], [v.name for v in inputs], outputs), node.name)
        times[node.name] = time_model(model, random_feeds(inputs), runs, 3, THREADS)[0].median_ms
    return times


def predictions(problem, on_cloud, layers, host) -> dict[str, tuple[float, float]]:
    """(edge ms, cloud ms) of each predictor."""
    names = np.array(problem.node_names)
    layer = np.array([layers[n] for n in names])
    side = lambda arr: (float(arr[~on_cloud].sum()), float(arr[on_cloud].sum()))  # noqa: E731
    segment = evaluate(problem, on_cloud)
    return {"a_layers": side(layer), "a_nodes": side(problem.edge_ms),
            "b_segment": (segment.edge_ms, segment.cloud_ms), "c_roofline": side(host.edge_ms)}


def bench_model(name: str, model, runs: int, limit: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{name}.json"
        write_profile(profile_model(model, runs=runs, threads=THREADS, name="host-profile"), path)
        analysis = analyse(model, target=str(path), cloud=str(path), bandwidth="10Mbps", rtt="5ms")
    graph, problem = analysis.graph, analysis.problem
    host = annotate_costs(graph, cost_model_for("host"), cost_model_for("host"))
    layers = layer_times(graph, runs)
    feeds = random_feeds(graph.inputs, seed=1)
    rows = []
    assignments = cut_assignments(analysis, limit)
    for (kind, on_cloud), real in zip(assignments, measure(graph, problem, assignments, feeds, runs)):
        pred = predictions(problem, on_cloud, layers, host)
        cut = make_partition(problem, on_cloud).cut_values
        for index, half in enumerate(("edge", "cloud")):
            if real[index] is not None:
                rows.append({"model": name, "kind": kind, "half": half, "cut": cut, "measured_ms": real[index],
                             **{p: pred[p][index] for p in PREDICTORS}})
    return rows


def errors(rows: list[dict], predictor: str) -> np.ndarray:
    return np.array([abs(r[predictor] - r["measured_ms"]) / r["measured_ms"] for r in rows])


SMALL_MS = 0.05  # below this, the fixed cost of a call and layout reorders are over a tenth of a half


def summary(rows: list[dict]) -> dict:
    out = {}
    for kind in ("cut vertex", "other", "all", f"all, halves >= {SMALL_MS} ms"):
        chosen = [r for r in rows if kind.startswith("all") or r["kind"] == kind]
        chosen = [r for r in chosen if r["measured_ms"] >= SMALL_MS or "halves" not in kind]
        if chosen:
            out[kind] = {"halves": len(chosen), **{p: {"median": float(np.median(errors(chosen, p))),
                                                        "max": float(np.max(errors(chosen, p)))} for p in PREDICTORS}}
    return out


def table(title: str, stats: dict) -> list[str]:
    lines = [f"### {title}", "", "| cuts | halves | " + " | ".join(PREDICTORS[p] for p in PREDICTORS) + " |",
             "|---|---:|" + "---:|" * len(PREDICTORS)]
    for kind, entry in stats.items():
        cells = [f"{100 * entry[p]['median']:.1f}% / {100 * entry[p]['max']:.1f}%" for p in PREDICTORS]
        lines.append(f"| {kind} | {entry['halves']} | " + " | ".join(cells) + " |")
    return lines + [""]


def per_model_table(rows: list[dict]) -> list[str]:
    lines = ["### Per model (all cuts): median / max error", "",
             "| model | halves | " + " | ".join(PREDICTORS[p] for p in PREDICTORS) + " |",
             "|---|---:|" + "---:|" * len(PREDICTORS)]
    for name in dict.fromkeys(r["model"] for r in rows):
        mine = [r for r in rows if r["model"] == name]
        cells = [f"{100 * np.median(errors(mine, p)):.1f}% / {100 * np.max(errors(mine, p)):.1f}%" for p in PREDICTORS]
        lines.append(f"| {name} | {len(mine)} | " + " | ".join(cells) + " |")
    return lines + [""]


def misses(rows: list[dict]) -> list[str]:
    """A note on the halves (b) gets most wrong."""
    wrong = [r for r in rows if abs(r["b_segment"] - r["measured_ms"]) / r["measured_ms"] > 0.25]
    if not wrong:
        return []
    largest = max(r["measured_ms"] for r in wrong) * 1e3
    return ["### Where (b) misses", "",
            f"{len(wrong)} of {len(rows)} halves are off by more than 25%; the largest of them takes "
            f"{largest:.1f} us. They are splits inside a block of a tiny model, where a half lasts a few tens of "
            "microseconds: such a split adds a layout reorder for each tensor sent out of an NCHWc-fused block "
            "and the fixed cost of another call, which neither the measured segments nor the per-node times "
            "contain, and which is a large share of so short a half.", ""]


def write(rows: list[dict], meta: dict) -> None:
    stats = summary(rows)
    RESULTS.mkdir(exist_ok=True)
    document = {"meta": meta, "summary": stats, "rows": rows}
    (RESULTS / "latency_model.json").write_text(json.dumps(document, indent=1) + "\n")
    b_all, b_big = stats["all"]["b_segment"], stats[f"all, halves >= {SMALL_MS} ms"]["b_segment"]
    verdict = lambda b: "met" if b["median"] <= 0.10 and b["max"] <= 0.25 else "NOT met"  # noqa: E731
    lines = ["# Latency model: predicted vs measured split halves", "",
             f"Machine: {meta['cpu']}, {meta['cores']} cores, onnxruntime {meta['onnxruntime']}, "
             f"{THREADS} intra-op thread; {meta['runs']} runs per measurement in {ROUNDS} rounds (at least 0.25 s), "
             "medians of the CPU time of the thread running the session. "
             f"Generated by `bench/latency_model.py` in {meta['seconds']:.0f} s.", "",
             "Cells are median / max of |predicted - measured| / measured over the edge and cloud halves of every "
             "cut. The profile and the measurement are separate passes (fresh sessions, their own repeats). "
             "At a cut vertex (b) is the profiled segment time by construction, so its error there is run-to-run "
             "noise; *other* cuts are splits inside a segment, where (b) adds per-node times to the nearest "
             "measured split.", "",
             f"Target for (b): median <= 10% and max <= 25%. Over all halves: **{verdict(b_all)}** "
             f"({100 * b_all['median']:.1f}% / {100 * b_all['max']:.1f}%); over halves of at least {SMALL_MS} ms: "
             f"**{verdict(b_big)}** ({100 * b_big['median']:.1f}% / {100 * b_big['max']:.1f}%).", ""]
    lines += table("All models", stats) + per_model_table(rows) + misses(rows)
    (RESULTS / "latency_model.md").write_text("\n".join(lines))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="zoo models only, fewer runs")
    args = parser.parse_args()
    runs, limit = (30, 6) if args.quick else (60, 10)
    start, rows = time.perf_counter(), []
    for name, model in models(args.quick).items():
        log(f"{name}: profiling, measuring layers and cuts")
        rows += bench_model(name, model, runs, limit)
    from splitc.profiling.machine import machine_facts

    facts = machine_facts(THREADS)
    meta = {"cpu": facts["cpu"], "cores": facts["cores"], "onnxruntime": facts["onnxruntime"], "runs": runs,
            "python": platform.python_version(), "seconds": time.perf_counter() - start}
    write(rows, meta)
    log((RESULTS / "latency_model.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
