"""Three tiers: one model split across a device, an edge server and the cloud (docs/three-tier.md).

``compile_tiers`` lowers the model as ``splitc.analyse`` does, costs every node
on each tier's target, finds the exact three-tier assignment
(``splitc.partition.tiers.solve_tiers``; or the one that sends exactly the given
cuts), chooses a bit width per link and emits the three halves with their
quantizers and dequantizers. ``TieredSplit.save`` writes ``tiers.json`` and
the plan directories the device, the relaying edge server and the cloud server
run (``splitc.backends.tiered_plans``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx

from splitc.backends import onnx_backend as emit
from splitc.backends.output import write_directory
from splitc.backends.tiered import TIER_NAMES, TierParts, compose, float_halves, quantized_halves, tier_parts
from splitc.backends.tiered_plans import output_files
from splitc.calibration.confidence import DEFAULT_CONFIDENCE
from splitc.calibration.confidence import using as using_confidence
from splitc.calibration.tiered import WidthChoice, choose_widths, unchecked
from splitc.cost.resolve import cost_model_for
from splitc.errors import CutError, SplitcError
from splitc.frontend import import_model
from splitc.ir.graph import Graph
from splitc.partition.solve import forced_partition
from splitc.partition.tiers import Link, TierBreakdown, TierProblem, evaluate_tiers, solve_tiers
from splitc.passes.base import PassManager
from splitc.passes.dce import DeadCodeElimination
from splitc.passes.qdq import QUANT_BITS
from splitc.units import parse_bandwidth, parse_time_ms

DEFAULT_TIERS = ("raspberry-pi-4", "gtx-1080ti", "t4")
DEFAULT_LINKS = (("20Mbps", "5ms"), ("200Mbps", "30ms"))
WIDTHS = (*QUANT_BITS, 16, 32)

Progress = Callable[[str], None]


@dataclass
class TieredSplit:
    """A compiled three-tier split: the assignment, the halves, the encodings per link and the prediction."""

    graph: Graph
    problem: TierProblem = field(repr=False)
    tier: np.ndarray
    parts: TierParts
    targets: list[str]
    cost_models: list[dict] = field(repr=False)
    links: list[tuple[float, float]]  # (bytes/s, rtt ms) of device-edge and edge-cloud
    halves: dict[str, onnx.ModelProto | None] = field(repr=False)  # device, edge, cloud, rest, front
    passes: dict[str, list] = field(repr=False)
    encodings: dict = field(repr=False)
    books: dict = field(repr=False)
    sizes: dict[str, float] = field(repr=False)  # predicted frame bytes per cut tensor
    prediction: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)
    solver: dict = field(default_factory=dict)
    forced: bool = False
    calibration: dict | None = field(default=None, repr=False)
    preprocess: dict | None = None  # how image inputs are prepared (plan.json "preprocess")

    @property
    def bits(self) -> tuple[int, int]:
        """The widths of the two links."""
        return tuple(self.accuracy["bits"])

    def save(self, out_dir: str | Path) -> Path:
        """Write ``tiers.json`` and the ``device/``, ``edge/`` and ``cloud/`` plan directories atomically."""
        files = output_files(self)

        def fill(tmp: Path) -> None:
            for name, content in files.items():
                path = tmp / name
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, onnx.ModelProto):
                    emit.save_half(content, path)
                else:
                    path.write_bytes(content)

        return write_directory(out_dir, fill)


def parse_link(value) -> tuple[float, float]:
    """``(bandwidth, rtt)`` as bytes/s and ms, from strings (``"20Mbps"``, ``"5ms"``) or numbers."""
    try:
        bandwidth, rtt = value
    except (TypeError, ValueError):
        raise SplitcError(f"a link is (bandwidth, rtt), not {value!r}") from None
    rate = parse_bandwidth(bandwidth) if isinstance(bandwidth, str) else float(bandwidth)
    ms = parse_time_ms(rtt) if isinstance(rtt, str) else float(rtt)
    if not (rate > 0) or math.isnan(rate):
        raise SplitcError(f"bad bandwidth {bandwidth!r}: it must be a number above zero")
    if not (math.isfinite(ms) and ms >= 0):
        raise SplitcError(f"bad time {rtt!r}: it must be a finite number of milliseconds, at least 0")
    return rate, ms


def _bits(bits) -> tuple:
    pair = tuple(bits) if isinstance(bits, (tuple, list)) else (bits, bits)
    if len(pair) != 2:
        raise SplitcError(f"bits is one width or one per link (two), not {bits!r}")
    for b in pair:
        if b != "auto" and (isinstance(b, bool) or not isinstance(b, (int, np.integer)) or int(b) not in WIDTHS):
            raise SplitcError(f"bits must be auto, 1..8, 16 or 32 per link, not {b!r}")
    return pair


def _problem(graph: Graph, tiers: Sequence, links: list[tuple[float, float]]) -> tuple[TierProblem, list]:
    if len(tiers) != 3:
        raise SplitcError(f"three tiers are needed (device, edge, cloud), not {len(tiers)}")
    if len(links) != len(tiers) - 1:
        raise SplitcError(f"{len(tiers)} tiers need {len(tiers) - 1} links (device-edge, edge-cloud), "
                          f"not {len(links)}")
    models = [cost_model_for(t) for t in tiers]
    return TierProblem.from_graph(graph, models, [Link(b, r) for b, r in links], TIER_NAMES), models


def _forced(problem: TierProblem, cuts) -> np.ndarray:
    """The assignment that sends exactly ``cuts[0]`` over link 1 and ``cuts[1]`` over link 2."""
    if len(cuts) != 2:
        raise CutError("forced cuts are two lists of tensors: device-edge and edge-cloud")
    split = problem.as_split()
    split.pinned = problem.pinned
    sides = []
    for name, lower, cut in zip(("device-edge", "edge-cloud"), ("device", "device and edge"), cuts):
        try:
            sides.append(forced_partition(split, list(cut)))
        except CutError as exc:
            raise CutError(f"the {name} cut: {exc} (here 'the edge' is the {lower} side)") from None
    low, high = sides
    tier = np.where(high.on_cloud, 2, 1)
    tier[~low.on_cloud] = 0
    if np.any(~low.on_cloud & high.on_cloud):
        raise CutError("the device-edge cut must lie below the edge-cloud cut (some device node would feed the "
                       "cloud only through the edge-cloud cut)")
    got = evaluate_tiers(problem, tier)
    names = problem.value_names
    for k, (cut, up) in enumerate(zip(cuts, got.up_values)):
        sent = {names[i] for i in up}
        extra, missing = sorted(sent - set(cut)), sorted(set(cut) - sent)
        if extra or missing:
            what = f"also sends {extra[0]!r}" if extra else f"does not send {missing[0]!r}"
            raise CutError(f"with these cuts the {('device-edge', 'edge-cloud')[k]} link {what}; "
                           f"give every tensor that crosses it")
    return tier


def _predict(problem: TierProblem, breakdown: TierBreakdown, parts: TierParts, sizes: dict) -> dict:
    """Latency per tier and per link with the frame sizes of the chosen encodings."""
    up = [float(sum(sizes[t] for t in parts.link1)), float(sum(sizes[t] for t in parts.link2))]
    down = [float(d) for d in breakdown.down_bytes]
    transfer = [float(link.rtt_ms * breakdown.used[k] + link.transfer_ms(np.array(up[k] + down[k])))
                for k, link in enumerate(problem.links)]
    compute = [float(c) for c in breakdown.compute_ms]
    return {"compute_ms": compute, "transfer_ms": transfer, "up_bytes": up, "down_bytes": down,
            "used": [bool(u) for u in breakdown.used], "total_ms": sum(compute) + sum(transfer)}


def compile_tiers(
    model: str | Path | onnx.ModelProto,
    tiers: Sequence = DEFAULT_TIERS,
    links: Sequence = DEFAULT_LINKS,
    bits: int | str | tuple = "auto",
    calib: str | Path | None = None,
    max_drop: float = 0.01,
    input_shapes: dict[str, tuple[int, ...]] | None = None,
    cuts: tuple[Sequence[str], Sequence[str]] | None = None,
    codec: str = "huffman",
    metric: str = "auto",
    confidence: float = DEFAULT_CONFIDENCE,
    preprocess: str | None = None,
    progress: Progress | None = None,
) -> TieredSplit:
    """Split ``model`` across a device, an edge server and the cloud.

    ``tiers`` names the three targets (built-in names, measured profiles or cost
    models), ``links`` the device-edge and edge-cloud links as ``(bandwidth, rtt)``
    (``("20Mbps", "5ms")`` or bytes/s and ms). ``cuts`` forces the tensors sent over
    each link instead of the optimum. ``bits`` is one width for both links or one
    per link: 1..8, 16, 32 (raw) or ``"auto"``; with ``calib`` the ``"auto"`` links
    try 32, 8, 6 and 4 bits, and the pair kept is the fastest whose certified drop
    of the composed three-part model is within ``max_drop`` (see
    ``splitc.calibration.tiered``); without it ``"auto"`` is 8 bits, unchecked.
    """
    step = progress or (lambda _s: None)
    if codec not in ("huffman", "none"):
        raise SplitcError(f"--codec must be huffman or none, not {codec!r}")
    if not 0 <= max_drop <= 1:
        raise SplitcError(f"--max-drop must be between 0% and 100%, not {max_drop:.4g}")
    pair, link_values = _bits(bits), [parse_link(link) for link in links]
    step("loading and shape-inferring the model")
    graph = PassManager([DeadCodeElimination()])(import_model(model, input_shapes)).graph
    step("estimating costs and partitioning")
    problem, models = _problem(graph, tiers, link_values)
    try:
        best = solve_tiers(problem)
    except ValueError as exc:
        raise SplitcError(str(exc)) from None
    tier = best.tier if cuts is None else _forced(problem, cuts)
    breakdown = evaluate_tiers(problem, tier)
    parts = tier_parts(graph, problem.node_names, problem.value_names, tier, breakdown.up_values)
    step("emitting the halves")
    floats = float_halves(graph, parts)
    with using_confidence(confidence):
        choice = _widths(graph, parts, floats, pair, codec, calib, metric, max_drop, preprocess, problem,
                         breakdown, step)
    choice.summary["max_drop"] = max_drop
    step("inserting the quantizers")
    halves, passes = _halves(graph, parts, floats, choice)
    solver = {"optimal_ms": best.total_ms, "lower_bound_ms": best.lower_bound_ms, "solve_ms": best.solve_ms,
              "exact_resolve": best.exact_resolve, "assignment_ms": breakdown.total_ms}
    calibration = {"kind": "tiers", "candidates": choice.candidates, **choice.summary} if choice.candidates else None
    prepare = None
    if preprocess is not None:
        from splitc.calibration.images import Preprocess

        prepare = Preprocess.parse(preprocess).to_json()
    return TieredSplit(graph, problem, tier, parts, [m.name for m in models], [m.describe() for m in models],
                       link_values, halves, passes, choice.encodings, choice.books, choice.sizes,
                       _predict(problem, breakdown, parts, choice.sizes), choice.summary, solver,
                       cuts is not None, calibration, prepare)


def _widths(graph, parts, floats, pair, codec, calib, metric, max_drop, preprocess, problem, breakdown,
            step) -> WidthChoice:
    if calib is None:
        if "auto" in pair and (parts.link1 or parts.made2):
            from splitc.joint import UncheckedAccuracy

            warnings.warn("no --calib data: using 8 bits; the accuracy bound was NOT checked", UncheckedAccuracy,
                          stacklevel=3)
        return unchecked(graph, parts, pair, codec)

    def price(sizes: dict) -> float:
        return _predict(problem, breakdown, parts, sizes)["total_ms"]

    return choose_widths(graph, parts, floats, pair, codec, calib, metric, max_drop, price, preprocess, step)


def _halves(graph: Graph, parts: TierParts, floats: dict, choice: WidthChoice) -> tuple[dict, dict]:
    """The quantized halves, and the composed ``rest`` (edge + cloud) and ``front`` (device + edge)."""
    ran = quantized_halves(graph, parts, floats, choice.encodings)
    halves = {k: r.model if r is not None else None for k, r in ran.items()}
    passes = {k: [rec.to_json() for rec in r.records] for k, r in ran.items() if r is not None}
    above, cloud_used = parts.used
    halves["rest"] = halves["front"] = None
    name = graph.name
    if above:
        first = halves["edge"] if halves["edge"] is not None else halves["cloud"]
        second = halves["cloud"] if halves["edge"] is not None else None
        halves["rest"] = compose(first, second, parts.returned, f"{name}_rest")
    if cloud_used:
        wires = [w for t in parts.link2 for w in choice.encodings[t].wire_names()]
        outputs = list(dict.fromkeys([*wires, *parts.outputs[0], *parts.outputs[1]]))
        halves["front"] = compose(halves["device"], halves["edge"], outputs, f"{name}_front")
    return halves, passes


__all__ = ["compile_tiers", "TieredSplit", "DEFAULT_TIERS", "DEFAULT_LINKS", "parse_link"]
