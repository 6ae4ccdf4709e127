"""Benchmark: the context-aware model tree over real cellular uplink traces (emulated compute, trace transfers).

One model tree is built (``splitc.tree.build``) from a model, its calibration set and the traces in
TRACE_DIR (pooled chain for the choice of forks); for each trace the chain is refitted from that trace
and the tree re-solved exactly over the same measured compositions. Requests start every ``--every``
seconds over the whole trace (at most ``--max-requests``, spread evenly over it). Four ways to serve
them, all choosing among the same feasible compositions (every one within the certified accuracy
bound):

1. **fixed plan** (DNN surgery): the composition of least latency at the trace's mean bandwidth;
2. **switching**: between requests, the best composition for the rate the last step measured, clamped to
   ``--bw LO..HI`` (what a ``--bw LO..HI`` plan set does, without hysteresis);
3. **model tree**: the exact policy, deciding at every fork from the last step's rate;
4. **oracle**: per request, the best composition knowing the coming trace (a lower bound).

Compute times are the cost model's (emulated); transfer times are the trace's own delivery
opportunities (``splitc.tree.simulate``). Accuracy is measured on the held-out set: request i runs its
composition on held-out sample i mod N. Also compared: the exact solver against random search and
ε-greedy at equal evaluation budgets (on the pooled chain), the same compositions re-solved with other
numbers of bandwidth classes and at other round trips. Writes bench/results/tree.md, tree.json, tree.png.

Models (``--model``):

* ``vgg16`` (default): the VGG-16-shaped network of ``splitc.schedule.models`` (seeded random backbone)
  at 224x224, its classifier fitted on the 12-class photo task of ``bench/photos.py``; training,
  calibration and held-out crops are generated here, seeded (held-out crops from parts of the
  photographs never seen in training). Fork candidates are capped as splitc tree caps them
  (``--candidates``, default 8: the input and the smallest tensors over the depth; ``--all-forks``:
  every cut vertex, probed in groups that bound the activations held at once).
* ``digits``: the trained digits CNN of ``examples/digits`` (a smoke run of a minute or two).
* a path to an ONNX model, with ``--calib`` and ``--heldout`` (.npz, with ``labels`` when known).

    python bench/tree.py TRACE_DIR [--model vgg16|digits|M.onnx] [--target jetson-nano] [--rtt 20ms]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from splitc.tree import leaves, oracle, simulate, solve  # noqa: E402
from splitc.tree.build import TreeOptions, build_tree  # noqa: E402
from splitc.tree.edges import fit_classes  # noqa: E402
from splitc.tree.forks import candidates as fork_candidates  # noqa: E402
from splitc.tree.markov import ChainFitter  # noqa: E402
from splitc.tree.measure import spec_from_tables  # noqa: E402
from splitc.tree.search import epsilon_greedy, fixed_plan, leaf_ms, random_search  # noqa: E402
from splitc.tree.simulate import leaf_latencies, measured_rate  # noqa: E402
from splitc.tree.spec import Leaf  # noqa: E402
from splitc.tree.traces import load_trace  # noqa: E402
from splitc.units import parse_bandwidth, parse_fraction, parse_time_ms  # noqa: E402

RESULTS = ROOT / "bench" / "results"
TRACES = ["TMobile-LTE-short", "Verizon-LTE-short", "TMobile-UMTS-driving"]
METHODS = ["fixed plan", "switching", "model tree", "oracle"]
DIGITS = ROOT / "examples" / "digits"
DEFAULT_TARGET = {"vgg16": "jetson-nano", "digits": "raspberry-pi-4"}


# ----------------------------------------------------------------------------- the workload


def prepare(args, work: Path) -> dict:
    """The model, calibration and held-out files of ``--model`` (the photo VGG is made here)."""
    if args.model == "digits":
        return {"name": "digits", "model": DIGITS / "digits_cnn.onnx", "calib": DIGITS / "calib.npz",
                "heldout": DIGITS / "test.npz", "note": "the trained digits CNN of examples/digits"}
    if args.model != "vgg16":
        if not (args.calib and args.heldout):
            raise SystemExit("a model file needs --calib and --heldout")
        return {"name": Path(args.model).stem, "model": Path(args.model), "calib": Path(args.calib),
                "heldout": Path(args.heldout), "note": "given"}
    import onnx
    import photos
    from splitc.schedule.models import vgg16

    model = vgg16()
    facts = photos.fit_head(model, *photos.crops(args.train, "train", seed=11))
    print(f"vgg16: classifier fitted on {facts['train_images']} crops, {facts['classes']} classes "
          f"(train accuracy {facts['train_accuracy']:.3f})", flush=True)
    onnx.save(model, work / "vgg16.onnx")
    calib, calib_labels = photos.crops(args.calib_size, "train", seed=21)
    heldout, heldout_labels = photos.crops(args.heldout_size, "test", seed=31)
    np.savez(work / "calib.npz", input=calib, labels=calib_labels)
    np.savez(work / "heldout.npz", input=heldout, labels=heldout_labels)
    return {"name": "vgg16", "model": work / "vgg16.onnx", "calib": work / "calib.npz",
            "heldout": work / "heldout.npz", "train": facts,
            "note": (f"VGG-16-shaped network of splitc.schedule.models at 224x224 (seeded random backbone), "
                     f"classifier fitted on {facts['train_images']} crops of the 12-class photo task of "
                     f"bench/photos.py (train accuracy {facts['train_accuracy']:.3f}); "
                     f"{args.calib_size} calibration crops and {args.heldout_size} held-out crops generated "
                     "here, seeded, the held-out ones from parts of the photographs never seen in training")}


def heldout_set(path: Path, inputs: list[str], limit: int) -> tuple[list[dict], np.ndarray | None]:
    data = np.load(path)
    count = min(limit, len(data[inputs[0]]))
    samples = [{name: data[name][i:i + 1] for name in inputs} for i in range(count)]
    return samples, (data["labels"][:count] if "labels" in data else None)


class Accuracy:
    """Per composition, whether it gets each held-out sample right (top-1 against labels or the float model).

    ``measure`` runs the compositions asked for depth first, each block of a shared prefix once, holding
    one chain of held-out activations at a time.
    """

    def __init__(self, tree, samples, labels) -> None:
        self.tree, self.samples, self.composer = tree, samples, tree.composer()
        self.base = Leaf(tree.spec.num_blocks, (0,) * tree.spec.num_blocks, None, None)
        self.given = labels
        self.predicted: dict[Leaf, np.ndarray] = {}

    def measure(self, wanted) -> None:
        todo = {leaf for leaf in set(wanted) | {self.base} if leaf not in self.predicted}
        self._visit(0, (), self.samples, todo)

    def _visit(self, fork: int, path: tuple, acts, todo: set) -> None:
        for leaf in [leaf for leaf in todo if leaf.path == path]:
            if leaf.option is None:
                out = [a[self.composer.first_output] for a in acts]
            else:
                out = self.composer.run(acts, (), leaf.fork, int(leaf.label[1:]))
            self.predicted[leaf] = np.array([o.reshape(-1).argmax() for o in out])
        for v in sorted({leaf.path[fork] for leaf in todo if len(leaf.path) > fork}):
            below = {leaf for leaf in todo if leaf.path[:fork + 1] == path + (v,)}
            self._visit(fork + 1, path + (v,), self.composer.advance(acts, fork, v), below)

    @property
    def labels(self) -> np.ndarray:
        return self.given if self.given is not None else self.predicted[self.base]

    def correct(self, leaf) -> np.ndarray:
        return self.predicted[leaf] == self.labels

    @property
    def float_accuracy(self) -> float:
        """The base model's held-out top-1 (all-base blocks on the edge compute exactly the model)."""
        return float(np.mean(self.correct(self.base)))


# ----------------------------------------------------------------------------- serving the requests


def request_starts(trace, every: float, cap: int) -> np.ndarray:
    """A request every ``every`` s over the trace; at most ``cap`` of them, spread evenly."""
    starts = np.arange(0.0, trace.period_ms / 1e3 - 1e-9, every)
    if cap and len(starts) > cap:
        starts = starts[np.round(np.linspace(0, len(starts) - 1, cap)).astype(int)]
    return starts


def replay(policy, spec, trace, starts) -> tuple[np.ndarray, list]:
    """``simulate``'s replay, also returning the composition each request ended in."""
    offset = trace.period_ms * max(1, math.ceil(policy.step_s * 1e3 / trace.period_ms))
    latency, taken = np.empty(len(starts)), []
    for i, start in enumerate(starts):
        t0 = t = start * 1e3 + offset
        fork, path = 0, ()
        leaf = None
        while fork < spec.num_blocks:
            action = policy.action(fork, path, int(policy.classify(measured_rate(trace, t, policy.step_s))))
            if action.kind == "offload":
                option = spec.options(fork, path)[action.index]
                t = float(trace.delivery_ms(t, option.nbytes)) + spec.rtt_ms + spec.cloud_ms(fork, path)
                leaf = Leaf(fork, path, action.index, action.label)
                break
            t += spec.blocks[fork].variants[action.index].edge_ms
            fork, path = fork + 1, path + (action.index,)
        latency[i] = t - t0
        taken.append(leaf or Leaf(fork, path, None, None))
    return latency, taken


def by_leaf(spec, trace, starts, chosen: list) -> np.ndarray:
    """Latency of each request playing its chosen composition from its start."""
    out = np.empty(len(starts))
    for leaf in set(chosen):
        idx = [i for i, c in enumerate(chosen) if c == leaf]
        out[idx] = leaf_latencies(spec, leaf, trace, starts[idx])
    return out


def switching(spec, trace, starts, step_s, span, max_drop) -> tuple[np.ndarray, list]:
    options = list(leaves(spec, max_drop))
    rates = np.clip(measured_rate(trace, starts * 1e3 + trace.period_ms, step_s), *span)
    best: dict[float, object] = {}
    for rate in set(rates.tolist()):
        best[rate] = min(options, key=lambda leaf: leaf_ms(spec, leaf, rate))
    chosen = [best[rate] for rate in rates.tolist()]
    return by_leaf(spec, trace, starts, chosen), chosen


def oracle_choice(spec, trace, starts, max_drop) -> tuple[np.ndarray, list]:
    options = list(leaves(spec, max_drop))
    table = np.array([leaf_latencies(spec, leaf, trace, starts) for leaf in options])
    pick = np.argmin(table, axis=0)
    latency = table[pick, np.arange(len(starts))]
    np.testing.assert_allclose(latency, oracle(spec, trace, starts, max_drop))
    return latency, [options[j] for j in pick]


def sent_bytes(spec, chosen) -> np.ndarray:
    return np.array([0.0 if leaf.option is None else spec.options(leaf.fork, leaf.path)[leaf.option].nbytes
                     for leaf in chosen])


def tree_replay(spec, trace, chain, starts, max_drop) -> tuple[np.ndarray, list]:
    policy = solve(spec, chain, max_drop)
    latency, taken = replay(policy, spec, trace, starts)
    np.testing.assert_allclose(latency, simulate(policy, spec, trace, starts))
    return latency, taken


def serve_trace(spec, trace, chain, starts, args, max_drop) -> tuple[dict, object]:
    """Each method's (latency per request, composition per request) over the trace, and the fixed plan."""
    fixed = fixed_plan(spec, trace.mean_rate_bps / 8, max_drop).leaf
    return {"fixed plan": (leaf_latencies(spec, fixed, trace, starts), [fixed] * len(starts)),
            "switching": switching(spec, trace, starts, args.step, args.span, max_drop),
            "model tree": tree_replay(spec, trace, chain, starts, max_drop),
            "oracle": oracle_choice(spec, trace, starts, max_drop)}, fixed


def break_even(spec, max_drop) -> dict | None:
    """The rate above which the cheapest offload of the input beats the best edge-only composition."""
    edge = [leaf for leaf in leaves(spec, max_drop) if leaf.option is None]
    sends = [leaf for leaf in leaves(spec, max_drop) if leaf.fork == 0 and leaf.option is not None]
    if not edge or not sends:
        return None
    local = min(edge, key=lambda leaf: spec.edge_ms(leaf.path))
    send = min(sends, key=lambda leaf: spec.options(0, ())[leaf.option].nbytes)
    nbytes = spec.options(0, ())[send.option].nbytes
    spare = spec.edge_ms(local.path) - spec.rtt_ms - spec.cloud_ms(0, ())
    return {"edge_ms": spec.edge_ms(local.path), "send_label": send.label, "send_bytes": nbytes,
            "rate_Bps": nbytes / (spare / 1e3) if spare > 0 else math.inf}


def run_trace(name, trace, chain, starts, results, fixed, tree, args, accuracy, even) -> dict:
    spec = tree.spec
    n = len(accuracy.samples)
    rows = {}
    for method, (latency, chosen) in results.items():
        hits = [accuracy.correct(leaf)[i % n] for i, leaf in enumerate(chosen)]
        rows[method] = {"mean_ms": float(latency.mean()), "p50_ms": float(np.percentile(latency, 50)),
                        "p95_ms": float(np.percentile(latency, 95)), "accuracy": float(np.mean(hits)),
                        "bytes_mean": float(sent_bytes(spec, chosen).mean()),
                        "offloaded": float(np.mean([leaf.option is not None for leaf in chosen])),
                        "mid_offloads": float(np.mean([leaf.option is not None and leaf.fork > 0
                                                       for leaf in chosen])),
                        "compositions": len(set(chosen))}
    windows = trace.rate_bps(args.step) / 8
    shown = starts <= args.plot_s
    return {"trace": name, "period_s": trace.period_ms / 1e3, "mean_Mbps": trace.mean_rate_bps / 1e6,
            "requests": len(starts), "spacing_s": float(np.median(np.diff(starts))) if len(starts) > 1 else 0.0,
            "classes": chain.num_classes, "class_edges_Mbps": (chain.edges * 8 / 1e6).round(3).tolist(),
            "expected_ms": solve(spec, chain, tree.options.max_drop).mean_ms, "fixed": _leaf_text(tree, fixed),
            "above_break_even": None if even is None else float(np.mean(windows > even["rate_Bps"])),
            "rows": rows,
            "series_t": starts[shown].round(3).tolist(),
            "series": {m: results[m][0][shown].round(2).tolist() for m in METHODS},
            "rate_Mbps": (trace.rate_bps(args.every, args.plot_s) / 1e6).round(3).tolist()}


def class_sweep(tree, traces, starts, served, args) -> list[dict]:
    """The tree's mean latency with the same compositions and chains of other numbers of classes."""
    rows = []
    fitters = {name: ChainFitter(trace, args.step) for name, trace in traces.items()}
    for classes in args.class_sweep:
        for name, trace in traces.items():
            chain = fit_classes(tree.spec, fitters[name], classes, max_drop=tree.options.max_drop,
                                rule=args.class_rule)
            latency, _ = tree_replay(tree.spec, trace, chain, starts[name], tree.options.max_drop)
            # the same chain pricing an offload of n bytes at n / b_k (no measured transfer times)
            harmonic = dataclasses.replace(chain, transfer=None, _powers={})
            priced, _ = tree_replay(tree.spec, trace, harmonic, starts[name], tree.options.max_drop)
            other = "quantile" if args.class_rule == "decision" else "decision"
            alternative = fit_classes(tree.spec, fitters[name], classes, max_drop=tree.options.max_drop, rule=other)
            compared, _ = tree_replay(tree.spec, trace, alternative, starts[name], tree.options.max_drop)
            base = {m: float(served[name][m][0].mean()) for m in ("fixed plan", "switching", "oracle")}
            rows.append({"classes": classes, "fitted": chain.num_classes, "trace": name,
                         "model tree": float(latency.mean()), "model tree, n / b_k": float(priced.mean()),
                         "other rule": other, "model tree, other rule": float(compared.mean()),
                         "other fitted": alternative.num_classes, **base})
    return rows


def sensitivity(tree, traces, chains, starts, args) -> list[dict]:
    """Mean latency of each method with the same measured compositions at other round trips."""
    rows = []
    for rtt in args.rtts:
        spec = spec_from_tables([f.cloud_ms for f in tree.forks], tree.blocks, tree.tables, parse_time_ms(rtt))
        for name, trace in traces.items():
            results, _ = serve_trace(spec, trace, chains[name], starts[name], args, tree.options.max_drop)
            rows.append({"rtt": rtt, "trace": name, **{m: float(results[m][0].mean()) for m in METHODS},
                         "offloaded": float(np.mean([leaf.option is not None for leaf in results["model tree"][1]]))})
    return rows


def _leaf_text(tree, leaf) -> str:
    path = "/".join(tree.blocks[f][v].name for f, v in enumerate(leaf.path)) or "-"
    return f"edge-only ({path})" if leaf.option is None else f"fork {leaf.fork} {leaf.label} after {path}"


def search_comparison(tree, budgets, seeds) -> dict:
    spec, chain, max_drop = tree.spec, tree.chain, tree.options.max_drop
    started = time.perf_counter()
    exact = solve(spec, chain, max_drop)
    solve_ms = (time.perf_counter() - started) * 1e3
    rows, curves = [], {}
    for name, search in (("random search", random_search), ("ε-greedy", epsilon_greedy)):
        runs = [search(spec, chain, max(budgets), max_drop, seed=s) for s in range(seeds)]
        curves[name] = np.median([r.history for r in runs], axis=0).round(4).tolist()
        for budget in budgets:
            values = [r.history[budget - 1] for r in runs]
            rows.append({"method": name, "budget": budget, "median_ms": float(np.median(values)),
                         "worst_ms": float(np.max(values)), "gap": float(np.median(values) / exact.mean_ms - 1)})
    return {"exact_ms": exact.mean_ms, "examined": exact.examined, "solve_ms": solve_ms, "rows": rows,
            "curves": curves, "seeds": seeds}


def _ratio(value: float) -> float:
    """A relative difference without float noise (and no negative zero)."""
    return round(value, 6) + 0.0


def targets(traces: list[dict], float_accuracy: float, max_drop: float) -> dict:
    mean = [{m: t["rows"][m]["mean_ms"] for m in METHODS} for t in traces]
    cut = [_ratio(1 - m["model tree"] / m["fixed plan"]) for m in mean]
    gap = [_ratio(m["model tree"] / m["oracle"] - 1) for m in mean]
    reach = [_ratio(1 - m["oracle"] / m["fixed plan"]) for m in mean]
    drop = [_ratio(float_accuracy - t["rows"]["model tree"]["accuracy"]) for t in traces]
    return {"below_fixed": cut, "above_oracle": gap, "oracle_below_fixed": reach, "heldout_drop": drop,
            "below_fixed_met": sum(c >= 0.30 for c in cut) >= 2, "oracle_met": all(g <= 0.15 for g in gap),
            "accuracy_met": all(d <= max_drop for d in drop),
            "below_switching": [_ratio(1 - m["model tree"] / m["switching"]) for m in mean]}


# ----------------------------------------------------------------------------- the report


def markdown(result: dict) -> str:
    cfg, lines = result["config"], []
    lines += ["# Model tree over real uplink traces (bench/tree.py)", "",
              f"Model `{cfg['model']}`: {cfg['model_note']}. Edge {cfg['edge']} and cloud {cfg['cloud']} "
              f"(compute times **emulated** by splitc's cost model: the whole model takes "
              f"{_ms(cfg['edge_only_ms'])} ms on the edge in float32, {_ms(cfg['fastest_edge_ms'])} ms as the "
              f"fastest edge-only composition, {_ms(cfg['cloud_ms'])} ms on the cloud), RTT {cfg['rtt']}, certified "
              f"accuracy bound {cfg['max_drop']:.0%} at 95% on {cfg['calib_samples']} calibration samples "
              f"({cfg['metric']}); held-out accuracy on {cfg['heldout']} samples (float model "
              f"{cfg['float_accuracy']:.3f}). Tree: {cfg['forks']} forks ({cfg['fork_names']}) chosen among "
              f"{_candidate_text(cfg)}, block variants {cfg['variants']}, "
              f"widths {cfg['widths']}, chain of at most {cfg['classes']} classes with a "
              f"{cfg['step_s'] * 1e3:g} ms step refitted per trace, {_rule_text(cfg['class_rule'])}. A request every {cfg['every_s'] * 1e3:g} ms "
              f"over each whole trace (at most {cfg['max_requests']} per trace, spread evenly); transfer times "
              f"from the trace's delivery opportunities. Switching range {cfg['bw']}. Bytes on disk: tree output "
              f"{cfg['disk_bytes'] / 1e6:.1f} MB (blocks {cfg['block_bytes'] / 1e6:.1f} MB, entry points "
              f"{cfg['entry_bytes'] / 1e6:.1f} MB) against the model's {cfg['model_bytes'] / 1e6:.1f} MB. "
              f"Benchmark wall time {result['wall_s']:.0f} s ({_stages(result['stages_s'])}), "
              f"{result['cpu_s']:.0f} s of CPU, on {cfg['host']}.", ""]
    lines += ["| trace | mean Mbps | requests | method | mean ms | p50 ms | p95 ms | held-out top-1 | mean bytes sent "
              "| offloaded | of which mid-inference | compositions |",
              "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for t in result["traces"]:
        for m in METHODS:
            r = t["rows"][m]
            lines.append(f"| {t['trace']} | {t['mean_Mbps']:.2f} | {t['requests']} | {m} | {_ms(r['mean_ms'])} | "
                         f"{_ms(r['p50_ms'])} | {_ms(r['p95_ms'])} | {r['accuracy']:.3f} | {r['bytes_mean']:.0f} | "
                         f"{r['offloaded']:.0%} | {r['mid_offloads']:.0%} | {r['compositions']} |")
    lines += ["", "Fixed plans: " + "; ".join(f"{t['trace']}: {t['fixed']}" for t in result["traces"]) + ".", ""]
    even = cfg["break_even"]
    if even is not None and math.isfinite(even["rate_Bps"]):
        share = ", ".join(f"{t['trace']} {t['above_break_even']:.0%}" for t in result["traces"])
        holding = ", ".join(f"{t['trace']} {_class_range(t['class_edges_Mbps'], even['rate_Bps'] * 8 / 1e6)}"
                            for t in result["traces"])
        lines += [f"Break-even: sending the input ({even['send_label']}, {even['send_bytes'] / 1e3:.1f} kB) beats "
                  f"the fastest edge-only composition ({even['edge_ms']:.1f} ms) above "
                  f"{even['rate_Bps'] * 8 / 1e6:.2f} Mbps at a constant rate. Share of "
                  f"{cfg['step_s'] * 1e3:g} ms windows above it: {share}. The class of the main chain that holds "
                  f"it (the tree sees only the class, switching the rate itself): {holding}.", ""]
    lines += _target_lines(result) + [""]
    lines += _sweep_lines(result["class_sweep"]) + [""]
    lines += _sensitivity_lines(result["sensitivity"]) + [""]
    lines += _search_lines(result["search"]) + ["", NOTES, ""]
    return "\n".join(lines)


def _candidate_text(cfg: dict) -> str:
    if cfg["max_candidates"] is None or cfg["candidates"] >= cfg["eligible"]:
        return f"all {cfg['candidates']} eligible cut vertices"
    return (f"{cfg['candidates']} candidates measured of {cfg['eligible']} eligible cut vertices (the input and the "
            f"smallest tensor of each of {cfg['candidates'] - 1} runs over the depth)")


def _rule_text(rule: str) -> str:
    if rule == "decision":
        return "class edges where the best decision changes (splitc.tree.edges)"
    return "class edges at quantiles of the window rates"


def _class_range(edges_mbps: list[float], rate_mbps: float) -> str:
    """The class (and its range of rates, Mbps) that a rate falls in."""
    k = int(np.searchsorted(edges_mbps, rate_mbps, side="left"))
    lo = edges_mbps[k - 1] if k > 0 else 0.0
    hi = f"{edges_mbps[k]:.2f}" if k < len(edges_mbps) else "∞"
    return f"class {k} ({lo:.2f}–{hi} Mbps)"


def _ms(value: float) -> str:
    """Milliseconds with enough digits for sub-millisecond models."""
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}" if value >= 0.1 else f"{value:.3f}"


def _stages(stages: dict) -> str:
    return ", ".join(f"{name} {seconds:.0f} s" for name, seconds in stages.items())


def _target_lines(result: dict) -> list[str]:
    goal, cfg = result["targets"], result["config"]
    lines = ["## Targets", "",
             "| trace | tree below fixed plan (target ≥ 30% on 2 of 3) | oracle below fixed plan (the most any policy "
             "gains) | tree above oracle (target ≤ 15%) | tree below switching | tree's held-out drop (bound "
             f"{cfg['max_drop']:.0%}) |", "|---|---:|---:|---:|---:|---:|"]
    for i, t in enumerate(result["traces"]):
        lines.append(f"| {t['trace']} | {goal['below_fixed'][i]:+.1%} | {goal['oracle_below_fixed'][i]:+.1%} | "
                     f"{goal['above_oracle'][i]:+.1%} | {goal['below_switching'][i]:+.1%} | "
                     f"{goal['heldout_drop'][i]:+.1%} |")
    met = {key: "met" if goal[key] else "missed" for key in ("below_fixed_met", "oracle_met", "accuracy_met")}
    lines += ["", f"30% below the fixed plan on at least 2 traces: **{met['below_fixed_met']}**. Within 15% of the "
              f"oracle on every trace: **{met['oracle_met']}**. Held-out accuracy within the bound on every trace: "
              f"**{met['accuracy_met']}**."]
    unreachable = [t["trace"] for t, reach in zip(result["traces"], goal["oracle_below_fixed"]) if reach < 0.30]
    if unreachable:
        lines += ["", f"On {', '.join(unreachable)} even the oracle, which knows the coming trace, is less than 30% "
                  "below the fixed plan: no policy can meet that target there with these compositions."]
    if not any(t["rows"]["oracle"]["offloaded"] for t in result["traces"]):
        lines += ["", f"No method offloads any request, not even the oracle: running the whole model on the "
                  f"emulated edge ({cfg['fastest_edge_ms']:.2f} ms) beats every offload, whose round trip alone is "
                  f"{cfg['rtt']}. Every method then plays the same edge-only composition and the tree has nothing "
                  "to gain."]
    return lines


def _sweep_lines(rows: list[dict]) -> list[str]:
    lines = ["## The same compositions with other numbers of bandwidth classes", "",
             "The tree re-solved over the measured compositions above with a chain of at most K classes (class "
             f"edges by the main rule), refitted per trace; forks as chosen with the main chain. The column "
             f"*{rows[0]['other rule'] if rows else 'other'} edges* is the same with the other class rule. The "
             "column *n / b_k* is the same chain pricing an offload of n bytes at n over the class's "
             "harmonic-mean rate instead of the delivery time measured from the class "
             "(splitc.tree.markov.TransferTimes). Mean latency (ms):", "",
             "| K | trace | classes fitted | fixed plan | switching | model tree | model tree, n / b_k | "
             f"{rows[0]['other rule'] if rows else 'other'} edges (classes) | oracle | tree "
             "below fixed | tree above oracle | tree below switching | n / b_k tree below fixed |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['classes']} | {r['trace']} | {r['fitted']} | {_ms(r['fixed plan'])} | "
                     f"{_ms(r['switching'])} | {_ms(r['model tree'])} | {_ms(r['model tree, n / b_k'])} | "
                     f"{_ms(r['model tree, other rule'])} ({r['other fitted']}) | {_ms(r['oracle'])} | "
                     f"{_ratio(1 - r['model tree'] / r['fixed plan']):+.1%} "
                     f"| {_ratio(r['model tree'] / r['oracle'] - 1):+.1%} | "
                     f"{_ratio(1 - r['model tree'] / r['switching']):+.1%} | "
                     f"{_ratio(1 - r['model tree, n / b_k'] / r['fixed plan']):+.1%} |")
    return lines


def _sensitivity_lines(rows: list[dict]) -> list[str]:
    lines = ["## The same compositions at other round trips", "",
             "The measured compositions (bytes, bounds) and emulated times above, re-solved with another RTT "
             "(forks as chosen at the main RTT). Mean latency (ms, emulated compute + trace transfers):", "",
             "| RTT | trace | fixed plan | switching | model tree | oracle | tree below fixed | tree above oracle | tree "
             "offloads |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['rtt']} | {r['trace']} | {_ms(r['fixed plan'])} | {_ms(r['switching'])} | "
                     f"{_ms(r['model tree'])} | {_ms(r['oracle'])} | "
                     f"{_ratio(1 - r['model tree'] / r['fixed plan']):+.1%} | "
                     f"{_ratio(r['model tree'] / r['oracle'] - 1):+.1%} | {r['offloaded']:.0%} |")
    return lines


def _search_lines(search: dict) -> list[str]:
    lines = ["## Exact policy against search at equal evaluation budgets (paper Fig. 7)", "",
             f"Pooled chain. Exact solver: expected {search['exact_ms']:.3f} ms after examining "
             f"{search['examined']} actions ({search['solve_ms']:.1f} ms). One evaluation = one candidate "
             "policy's "
             f"exact expected latency; median (and worst) best-found over {search['seeds']} seeds.", "",
             "| method | evaluations | best found ms (median) | worst seed ms | above exact |",
             "|---|---:|---:|---:|---:|"]
    for r in search["rows"]:
        lines.append(f"| {r['method']} | {r['budget']} | {r['median_ms']:.3f} | {r['worst_ms']:.3f} | "
                     f"{r['gap']:+.2%} |")
    return lines


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traces = result["traces"]
    every = result["config"]["every_s"]
    fig, axes = plt.subplots(len(traces) + 1, 1, figsize=(9, 3.2 * (len(traces) + 1)), dpi=100)
    for ax, t in zip(axes, traces):
        for m in METHODS:
            sparse = t["spacing_s"] > 1.01 * every  # requests spread out over a long trace: mark each
            ax.plot(t["series_t"], t["series"][m], linewidth=0.9, label=m, marker="." if sparse else None,
                    markersize=3)
        ax.set_ylabel("latency ms (emulated)")
        ax.ticklabel_format(axis="y", useOffset=False)
        ax.set_ylim(0, 1.15 * max(max(t["series"][m]) for m in METHODS))
        ax.set_title(f"{t['trace']} ({t['mean_Mbps']:.1f} Mbps mean)", fontsize=9)
        twin = ax.twinx()
        rate = t["rate_Mbps"]
        twin.fill_between(np.arange(len(rate)) * every, rate, step="post", color="grey", alpha=0.15)
        twin.set_ylabel("uplink Mbps", color="grey")
        ax.set_zorder(twin.get_zorder() + 1)  # the latency lines over the rate
        ax.patch.set_visible(False)
        ax.legend(fontsize=7, loc="upper right")
    axes[-2].set_xlabel("trace time (s)")
    ax = axes[-1]
    search = result["search"]
    for name, curve in search["curves"].items():
        ax.plot(np.arange(1, len(curve) + 1), curve, label=name)
    ax.axhline(search["exact_ms"], color="black", linestyle="--", label="exact (backward induction)")
    ax.set_xscale("log")
    ax.set_xlabel("evaluated candidate policies")
    ax.set_ylabel("best expected ms")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ----------------------------------------------------------------------------- the run


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trace_dir", type=Path)
    parser.add_argument("--model", default="vgg16", help="vgg16, digits, or an ONNX file (with --calib, --heldout)")
    parser.add_argument("--calib"), parser.add_argument("--heldout")
    parser.add_argument("--target", help="edge target (default: jetson-nano for vgg16, else raspberry-pi-4)")
    parser.add_argument("--cloud", default="t4")
    parser.add_argument("--rtt", default="20ms")
    parser.add_argument("--rtts", default="5ms,10ms,50ms", help="other round trips to re-solve at")
    parser.add_argument("--max-drop", default=None, help="accuracy bound (default 5%% for vgg16, else 2%%)")
    parser.add_argument("--forks", type=int, default=None, help="forks (default 4 for vgg16, else 6)")
    parser.add_argument("--candidates", type=int, default=8, help="fork candidates measured (splitc tree --candidates)")
    parser.add_argument("--all-forks", action="store_true", help="every cut vertex is a fork candidate (no cap)")
    parser.add_argument("--class-rule", default="decision", choices=["decision", "quantile"],
                        help="where the chain's class edges go")
    parser.add_argument("--classes", type=int, default=3)
    parser.add_argument("--class-sweep", default="2,3,5,8,12", help="numbers of classes to re-solve with")
    parser.add_argument("--step", type=float, default=0.1, help="chain step (s)")
    parser.add_argument("--every", type=float, default=0.2, help="seconds between requests")
    parser.add_argument("--max-requests", type=int, default=700, help="requests per trace at most (0: no cap)")
    parser.add_argument("--bw", default="100kbps..50Mbps", help="switching range")
    parser.add_argument("--train", type=int, default=240, help="vgg16: crops the classifier is fitted on")
    parser.add_argument("--calib-size", type=int, default=96, help="vgg16: calibration crops")
    parser.add_argument("--heldout-size", type=int, default=128, help="vgg16: held-out crops")
    parser.add_argument("--heldout-limit", type=int, default=512)
    parser.add_argument("--budgets", default="1,10,100,1000")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--plot-s", type=float, default=120.0, help="trace seconds shown in the plot")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    vgg = args.model == "vgg16"
    args.target = args.target or DEFAULT_TARGET.get(args.model, "raspberry-pi-4")
    args.max_drop = parse_fraction(args.max_drop or ("5%" if vgg else "2%"))
    args.forks = args.forks or (4 if vgg else 6)
    args.max_candidates = None if args.all_forks else args.candidates
    lo, _, hi = args.bw.partition("..")
    args.span = (parse_bandwidth(lo), parse_bandwidth(hi))
    args.rtts = [r for r in args.rtts.split(",") if r]
    args.class_sweep = [int(k) for k in args.class_sweep.split(",") if k]
    return args


def main() -> None:
    args = parse_args()
    started, cpu, stages = time.time(), time.process_time(), {}

    def stage(name: str, since: float) -> float:
        now = time.time()
        stages[name] = now - since
        return now

    traces = {name: load_trace(args.trace_dir / f"{name}.up") for name in TRACES}
    with tempfile.TemporaryDirectory() as tmp:
        work = prepare(args, Path(tmp))
        mark = stage("model and crops", started)
        options = TreeOptions(calib=work["calib"], target=args.target, cloud=args.cloud, rtt=args.rtt,
                              max_drop=args.max_drop, forks=args.forks, classes=args.classes, step_s=args.step,
                              class_rule=args.class_rule, max_candidates=args.max_candidates)
        tree = build_tree(work["model"], list(traces.values()), options,
                          progress=lambda s: print(f"{time.time() - started:6.0f} s  {s}", flush=True))
        sizes = tree.save(Path(tmp) / "out")
        mark = stage("tree build", mark)
        inputs = [v.name for v in tree.analysis.graph.inputs]
        accuracy = Accuracy(tree, *heldout_set(work["heldout"], inputs, args.heldout_limit))
        chains = {name: fit_classes(tree.spec, trace, args.classes, args.step, tree.options.max_drop, args.class_rule)
                  for name, trace in traces.items()}
        starts = {name: request_starts(trace, args.every, args.max_requests) for name, trace in traces.items()}
        served = {name: serve_trace(tree.spec, trace, chains[name], starts[name], args, tree.options.max_drop)
                  for name, trace in traces.items()}
        mark = stage("replays", mark)
        print(f"{time.time() - started:6.0f} s  held-out accuracy", flush=True)
        accuracy.measure({leaf for results, _ in served.values() for _, chosen in results.values() for leaf in chosen})
        mark = stage("held-out accuracy", mark)
    even = break_even(tree.spec, tree.options.max_drop)
    rows = [run_trace(name, trace, chains[name], starts[name], *served[name], tree, args, accuracy, even)
            for name, trace in traces.items()]
    search = search_comparison(tree, [int(b) for b in args.budgets.split(",")], args.seeds)
    sweep = class_sweep(tree, traces, starts, {name: served[name][0] for name in traces}, args)
    shifted = sensitivity(tree, traces, chains, starts, args)
    stage("search, sweeps", mark)
    result = {"config": _config(args, work, tree, sizes, accuracy, even), "traces": rows, "search": search,
              "targets": targets(rows, accuracy.float_accuracy, tree.options.max_drop), "class_sweep": sweep,
              "sensitivity": shifted, "stages_s": stages, "wall_s": time.time() - started,
              "cpu_s": time.process_time() - cpu}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tree.json").write_text(json.dumps(result, indent=1) + "\n")
    (args.out / "tree.md").write_text(markdown(result))
    plot(result, args.out / "tree.png")
    print(markdown(result))


def _config(args, work, tree, sizes, accuracy, even) -> dict:
    import platform

    model = Path(work["model"])
    variants = sorted({v.name for block in tree.blocks for v in block})
    forks = ", ".join("+".join(f.tensors) for f in tree.forks)
    return {"model": str(model.relative_to(ROOT)) if model.is_relative_to(ROOT) else work["name"],
            "model_note": work["note"], "train": work.get("train"),
            "edge": args.target, "cloud": args.cloud, "rtt": args.rtt, "max_drop": tree.options.max_drop,
            "calib_samples": tree.tables.samples, "metric": tree.tables.metric, "heldout": len(accuracy.samples),
            "float_accuracy": accuracy.float_accuracy, "forks": len(tree.forks), "fork_names": forks,
            "candidates": tree.candidates,
            "eligible": len(fork_candidates(tree.analysis)), "max_candidates": args.max_candidates,
            "class_rule": args.class_rule,
            "variants": ", ".join(variants), "widths": ", ".join(f"{w}" for w in tree.options.widths),
            "classes": args.classes, "step_s": args.step, "every_s": args.every, "max_requests": args.max_requests,
            "bw": args.bw, "disk_bytes": sizes["total"], "block_bytes": sizes["blocks"],
            "entry_bytes": sizes["entry_points"], "model_bytes": tree.analysis.graph.model.ByteSize(),
            "fork_tensors": [list(f.tensors) for f in tree.forks],
            "edge_only_ms": tree.analysis.result.edge_only.edge_ms,
            "fastest_edge_ms": min(tree.spec.edge_ms(leaf.path) for leaf in leaves(tree.spec, tree.options.max_drop)
                                   if leaf.option is None),
            "cloud_ms": tree.forks[0].cloud_ms, "break_even": even,
            "host": f"{platform.machine()}, {__import__('os').cpu_count()} CPUs"}


NOTES = ("Notes: all four methods choose among the same measured compositions, each within the certified bound, "
         "so their held-out accuracy differs only through which compositions they use. The switching row uses the "
         "rate of the step before each request with no hysteresis (the best case of a --bw plan set), and prices "
         "a composition at that rate as if it held. The model tree prices an offload with the delivery time the "
         "trace gives, on average, from a decision in the class just measured (splitc.tree.markov.TransferTimes). "
         "The oracle knows the trace ahead and picks per request; no deciding policy can be faster on the same "
         "requests.")


if __name__ == "__main__":
    main()
