"""Compression benchmark: edge rewrites, the joint (cut, width, variant) search, and what they buy.

    python bench/compress.py                      # the trained photo models (bench/trained), else digits
    python bench/compress.py --models digits      # one model
    python bench/compress.py --seeds 5 --heldout 128
    python bench/compress.py --calib-source train  # calibrate on the training-region crops instead

By default the held-out set is split, stratified by label and seeded (--split-seed), into a calibration
half that fits and certifies the rewrites (the compile's calib) and a disjoint test half that measures
held-out drops, so the bound is certified on the distribution the models are deployed on.
``--calib-source train`` calibrates on calib.npz (crops from the region the models were trained on) and
measures held-out drops on the whole held-out set.

Writes bench/results/compress.md, compress.json and compress.png. Every number is measured on this host
or predicted by splitc's cost model, and labelled as such:

(a) per rewrite and level, at a mid-network cut and for the whole model on the edge: edge FLOPs (counted),
    edge-half time on this host (onnxruntime, 1 thread, median), calibration drop (certify share) and
    held-out drop, both with the cut sent as raw float32 (the rewrite's own error);
(b) at the mid-network cut: bytes per request of the narrowest c-bit + Huffman width within 1 point of
    held-out drop, without and with a bottleneck;
(c) edge FLOPs of the whole model within 1 point of held-out drop, no fine-tuning;
(d) predicted end-to-end latency (raspberry-pi-4 edge, t4 cloud, 20 ms RTT) at 1, 5 and 20 Mbps: the
    best plan with compression, the best without, JPEG q90 to the cloud, edge-only;
(e) splitc's branch and bound against random search and epsilon-greedy at equal evaluation budgets,
    scored by the model tree's reward R = N1(A) + N2(T) (bench/compress_search.py).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import compress_search  # noqa: E402
import compress_report  # noqa: E402
from splitc.api import analyse  # noqa: E402
from splitc.calibration import calibrate  # noqa: E402
from splitc.compress.evaluate import Evaluator  # noqa: E402
from splitc.compress.int8 import int8_edge  # noqa: E402
from splitc.compress.names import FAMILIES  # noqa: E402
from splitc.compress.search import branch_and_bound, prepare  # noqa: E402
from splitc.compress.space import CalibrationShares  # noqa: E402
from splitc.options import CompileOptions  # noqa: E402
from splitc.widths import jpeg_width, width_order  # noqa: E402

DIGITS = (ROOT / "examples/digits/digits_cnn.onnx", ROOT / "examples/digits/calib.npz",
          ROOT / "examples/digits/test.npz")


def models(trained: Path) -> dict[str, tuple[Path, Path, Path]]:
    """Model, calibration set and held-out set of each benchmark model."""
    return {name: (trained / f"{name}_photos.onnx", trained / "calib.npz", trained / "heldout.npz")
            for name in ("vgg", "resnet")} | {"digits": DIGITS}
TARGET, CLOUD, RTT_MS = "raspberry-pi-4", "t4", 20.0
BANDWIDTHS = {"1 Mbps": 125e3, "5 Mbps": 625e3, "20 Mbps": 2.5e6}
MAX_DROP = 0.03  # the certified bound of the compiles in (d) and (e)
HELDOUT_DROP = 0.01  # "within 1 point" in (b) and (c)
REPEATS = 20
CAP = 4  # baselines go on up to CAP times our evaluations to see when they reach our reward


def stratified_halves(labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint (calibration, test) indices, half each, stratified by label and seeded; each sorted.

    Every class gives half its samples to each side; where a class is odd, the extra samples go to the
    calibration half in a seeded order of classes until it holds ``len(labels) // 2``.
    """
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    members = {c: rng.permutation(np.flatnonzero(labels == c)) for c in classes}
    take = {c: len(members[c]) // 2 for c in classes}
    odd = [c for c in rng.permutation(classes) if len(members[c]) % 2]
    for c in odd[:len(labels) // 2 - sum(take.values())]:
        take[c] += 1
    calib = np.sort(np.concatenate([members[c][:take[c]] for c in classes]))
    test = np.sort(np.concatenate([members[c][take[c]:] for c in classes]))
    return calib, test


def split_heldout(path: Path, seed: int, folder: Path) -> tuple[Path, Path]:
    """Write the calibration and test halves of the held-out file ``path`` (npz with labels) into ``folder``."""
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    if "labels" not in arrays:
        raise SystemExit(f"{path} has no labels: --calib-source heldout needs a labelled held-out set")
    calib, test = stratified_halves(arrays["labels"], seed)
    out = (folder / f"{path.stem}_calib.npz", folder / f"{path.stem}_test.npz")
    for target, index in zip(out, (calib, test)):
        np.savez(target, **{k: v[index] for k, v in arrays.items()})
    return out


def _heldout_evaluator(space, path: Path, count: int | None) -> Evaluator:
    """An evaluator of the same candidates on the held-out set (rewrites stay fitted on the calibration set)."""
    graph = space.analysis.graph
    inputs = [{"name": v.name, "shape": list(v.shape), "dtype": str(v.dtype)} for v in graph.inputs]
    held = calibrate.load(path, inputs)
    if count is not None:
        held = replace(held, samples=held.samples[:count],
                       labels=None if held.labels is None else held.labels[:count])
    shares = CalibrationShares(held, space.shares.fit, held)
    return Evaluator(space.analysis, space.enc, shares, space.evaluator.metric)


def _edge_ms(space, cand) -> float:
    """Median host time of the candidate's edge half (onnxruntime, one thread) on one sample."""
    half = space.evaluator.edge_half(cand)
    if cand.spec.precision == "int8":
        half = int8_edge(half, space.shares.fit)
    elif cand.spec.precision == "fp16":
        from splitc.passes.precision import to_fp16

        half = to_fp16(half)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(half.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feed = {k: v for k, v in space.shares.full.samples[0].items() if k in names}
    for _ in range(3):
        session.run(None, feed)
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        session.run(None, feed)
        times.append((time.perf_counter() - start) * 1e3)
    return float(np.median(times))


def _mid_cut(space) -> tuple[str, ...]:
    """The single-tensor split whose edge holds the share of FLOPs closest to one half."""
    total = float(sum(n.flops for n in space.analysis.graph.data_nodes))
    splits = [c for c in space.candidates if c.spec.is_base and len(c.cut) == 1 and c.priced.kind == "split"]
    return min(splits, key=lambda c: abs(c.base_flops / total - 0.5)).cut


def _rewrite_rows(space, held, cut) -> list[dict]:
    rows = []
    for cand in space.resolve_all([c for c in space.candidates if c.cut == cut]):
        calib, heldout = space.evaluator.drop(cand, 32), held.drop(cand, 32)
        rows.append({"scope": "edge-only" if not cut else "mid cut", "variant": cand.spec.name,
                     "edge_flops": cand.priced.edge_flops, "flops_ratio": cand.base_flops / cand.priced.edge_flops,
                     "edge_ms_host": _edge_ms(space, cand), "edge_ms_predicted": cand.priced.edge_ms,
                     "raw_bytes": space.evaluator.size(cand, 32), "calib_drop": calib["drop"],
                     "calib_bound": calib["bound"], "heldout_drop": heldout["drop"]})
    return rows


def _narrowest(held, cand, widths) -> dict | None:
    """The smallest frame among the widths within HELDOUT_DROP on the held-out set (narrowest first)."""
    for width in sorted(widths, key=width_order):
        entry = held.drop(cand, width)
        if entry["drop"] <= HELDOUT_DROP + 1e-12:
            return {"variant": cand.spec.name, "width": width, "bytes": held.size(cand, width),
                    "heldout_drop": entry["drop"]}
    return None


def _bytes_table(space, held, cut) -> dict:
    """(b): the narrowest frame within 1 point, without a bottleneck and with one."""
    bits = [w for w in space.enc.bit_choices() if w <= 8]
    at_cut = space.resolve_all([c for c in space.candidates if c.cut == cut])
    plain = _narrowest(held, next(c for c in at_cut if c.spec.is_base), bits)
    with_bottleneck = [found for c in at_cut if "bottleneck" in c.spec.families
                       for found in [_narrowest(held, c, bits)] if found]
    best = min(with_bottleneck, key=lambda r: r["bytes"]) if with_bottleneck else None
    ratio = plain["bytes"] / best["bytes"] if plain and best else None
    return {"cut": list(cut), "plain": plain, "bottleneck": best, "ratio": ratio, "tried": len(with_bottleneck)}


def _latency(space, held, bandwidth: float) -> dict:
    """(d) at one link: compressed and uncompressed optima, JPEG q90 to the cloud, edge-only (predicted)."""
    ours = space.search(bandwidth, RTT_MS, MAX_DROP)
    base = [c for c in space.candidates if c.spec.is_base]
    plain = branch_and_bound(base, space.evaluator, bandwidth, RTT_MS, MAX_DROP, space.resolver)
    row = {"compressed": _plan(ours, held), "uncompressed": _plan(plain, held), "evaluations": ours.evaluations}
    cloud = next((c for c in base if c.priced.kind == "cloud-only"), None)
    if cloud is not None and jpeg_width(90) in space.evaluator.widths(cloud):
        size = held.size(cloud, jpeg_width(90))
        row["jpeg90"] = {"total_ms": cloud.lower_bound(bandwidth, RTT_MS) + size / bandwidth * 1e3, "bytes": size,
                         "heldout_drop": held.drop(cloud, jpeg_width(90))["drop"]}
    edge = next(c for c in base if not c.cut)
    row["edge_only"] = {"total_ms": edge.lower_bound(bandwidth, RTT_MS)}
    splits = [c for c in space.candidates if c.cut and c.reason is None]
    row["split_floor_ms"] = min(c.lower_bound(bandwidth, RTT_MS) for c in splits)  # nothing sent, fits or not
    row["speedup"] = row["uncompressed"]["total_ms"] / row["compressed"]["total_ms"]
    return row


def _plan(result, held) -> dict:
    best = result.best
    return {"variant": best.candidate.spec.name, "cut": list(best.option.cut), "bits": best.option.bits,
            "width": str(best.width), "total_ms": result.total_ms(), "bytes": best.option.sent_bytes,
            "calib_drop": best.option.drop, "calib_bound": best.option.bound,
            "heldout_drop": held.drop(best.candidate, best.width)["drop"], "evaluations": result.evaluations,
            "edge_flops": best.candidate.priced.edge_flops}


def _search_comparison(space, bandwidth: float, seeds: int) -> dict:
    """(e) at one link: our evaluations and reward against random search and epsilon-greedy."""
    ours = space.search(bandwidth, RTT_MS, MAX_DROP)
    ref = space.evaluator.reference("full")
    labels = space.shares.full.labels
    first = [o[ref.first_output] for o in ref.outputs]
    accuracy = calibrate.score(space.evaluator.metric, first, first, labels)
    scorer = compress_search.Scorer(space, accuracy, bandwidth, RTT_MS, MAX_DROP)
    target = scorer.score(ours.best.option, ours.best.option.drop)
    every = compress_search.triples(space)
    budget = max(1, ours.evaluations)
    out = {"evaluations": ours.evaluations, "reward": target, "space": len(every), "strategies": {}}
    for strategy in ("random", "egreedy"):
        runs = [compress_search.run(strategy, every, scorer, budget, seed, target=target, cap=CAP * budget)
                for seed in range(seeds)]
        reached = [r["reached_at"] for r in runs if r["reached_at"] is not None]
        out["strategies"][strategy] = {
            "best_within_bound": [r["best_within_bound"] for r in runs],
            "best_unconstrained": [r["best_unconstrained"] for r in runs],
            "reached": len(reached), "reached_at": reached, "cap": CAP * budget}
    return out


def run_model(name: str, paths: tuple[Path, Path, Path], heldout: int | None, seeds: int,
              source: str = "heldout", split_seed: int = 0) -> dict:
    """Sections (a) to (e) for one model (its model, calibration and held-out files).

    With ``source`` "heldout" the held-out file is split into a calibration and a test half
    (``split_heldout``); with "train" the calibration file calibrates and the whole held-out file tests.
    """
    model, calib, held_path = paths
    with tempfile.TemporaryDirectory() as folder:
        if source == "heldout":
            calib, held_path = split_heldout(held_path, split_seed, Path(folder))
        result = _run_model(name, model, calib, held_path, heldout, seeds)
    result["calib_source"] = source
    if source == "heldout":
        result["split_seed"] = split_seed
    return result


def _run_model(name: str, model: Path, calib: Path, held_path: Path, heldout: int | None, seeds: int) -> dict:
    print(f"[{name}] building and pricing the candidates", flush=True)
    analysis = analyse(model, TARGET, CLOUD, "5Mbps", RTT_MS)
    options = CompileOptions(target=TARGET, cloud=CLOUD, calib=calib, compress=FAMILIES, max_drop=MAX_DROP)
    started = time.perf_counter()
    space = prepare(analysis, options)
    held = _heldout_evaluator(space, held_path, heldout)
    cut = _mid_cut(space)
    print(f"[{name}] {len(space.candidates)} candidates; mid cut {cut[0]}", flush=True)
    rows = _rewrite_rows(space, held, cut) + _rewrite_rows(space, held, ())
    print(f"[{name}] (a) done; (b) bytes at the mid cut", flush=True)
    result = {"model": name, "path": _shown(model), "candidates": len(space.candidates), "rewrites": rows,
              "not_applicable": {f: (r[0] if r else None) for f, r in space.reasons.items() if r},
              "bytes": _bytes_table(space, held, cut), "latency": {}, "search": {}}
    for label, bandwidth in BANDWIDTHS.items():
        print(f"[{name}] (d, e) at {label}", flush=True)
        result["latency"][label] = _latency(space, held, bandwidth)
        result["search"][label] = _search_comparison(space, bandwidth, seeds)
    result["fits"] = space.resolver.builder.fits
    result["seconds"] = time.perf_counter() - started
    result["heldout_samples"] = len(held.shares.full.samples)
    result["calib_samples"] = len(space.shares.full.samples)
    return result


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main() -> None:
    """Run the benchmark (or, with --report-only, rewrite the report from compress.json)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument("--heldout", type=int, default=None,
                        help="held-out (test) samples used (default: all of them)")
    parser.add_argument("--calib-source", choices=("heldout", "train"), default="heldout",
                        help="heldout: fit and certify on a stratified half of heldout.npz, test on the other "
                             "half; train: fit and certify on calib.npz, test on all of heldout.npz")
    parser.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split")
    parser.add_argument("--seeds", type=int, default=5, help="runs of each baseline search")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--trained", type=Path, default=ROOT / "bench" / "trained",
                        help="folder of {vgg,resnet}_photos.onnx, calib.npz and heldout.npz")
    parser.add_argument("--report-only", action="store_true", help="rewrite compress.md and .png from compress.json")
    args = parser.parse_args()
    if args.report_only:
        results = json.loads((args.out / "compress.json").read_text())
        (args.out / "compress.md").write_text(compress_report.markdown(results))
        compress_report.plot(results, args.out / "compress.png")
        return
    found = models(args.trained)
    names = args.models or ([n for n in ("vgg", "resnet") if found[n][0].exists()] or ["digits"])
    warnings.simplefilter("ignore")
    results = {"target": TARGET, "cloud": CLOUD, "rtt_ms": RTT_MS, "max_drop": MAX_DROP,
               "heldout_drop": HELDOUT_DROP, "calib_source": args.calib_source,
               "models": [run_model(n, found[n], args.heldout, args.seeds, args.calib_source, args.split_seed)
                          for n in names]}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compress.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    (args.out / "compress.md").write_text(compress_report.markdown(results))
    compress_report.plot(results, args.out / "compress.png")
    print(f"wrote {args.out / 'compress.md'}")


if __name__ == "__main__":
    main()
