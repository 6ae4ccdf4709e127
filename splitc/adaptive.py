"""Bandwidth ranges: compile every plan that is optimal somewhere in ``[lo, hi]``.

An option (cut, bits) has latency ``a + b * x`` in ``x = 1 / bandwidth``:
``a = edge_ms + cloud_ms + rtt_ms`` (no RTT for edge-only) and ``b`` = 1000 x
the bytes sent and returned. The best option over a range of bandwidths is the
lower envelope of these lines over ``[1/hi, 1/lo]``; ``envelope`` computes it
exactly (rational arithmetic, no grid) and returns each winning option with
the bandwidth interval ``[lo, hi)`` where it is optimal. Options that are
optimal at a single point only are not emitted; exact ties are broken as
``splitc.partition.select.rank`` does (fewer bytes, then fewer bits).

``compile_range`` writes ``OUT/plans.json`` and ``OUT/plans/<id>/`` (see docs/plan.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from splitc import __version__, joint
from splitc.api import Analysis, CompiledSplit, analyse, calibration_warnings
from splitc.backends.output import write_directory
from splitc.errors import SplitcError
from splitc.calibration.confidence import using as using_confidence
from splitc.partition.solve import partition
from splitc.partition.select import Option, feasible, rank
from splitc.options import CompileOptions
from splitc.units import parse_bandwidth

INDEX_SCHEMA = "splitc.plans/1"
PLOT_NAME = "latency_vs_bandwidth.png"


@dataclass
class Piece:
    """One option of the envelope and its bandwidth interval ``[lo, hi)`` (bytes/s)."""

    option: Option
    lo: float
    hi: float
    a_ms: float
    b: float  # ms per (1 / (bytes/s)): 1000 x bytes on the wire


def parse_range(text: str) -> tuple[float, float]:
    """``"300KBps..50Mbps"`` → ``(300000.0, 6250000.0)`` bytes/s."""
    low, sep, high = str(text).partition("..")
    if not sep:
        raise SplitcError(f"bad bandwidth range {text!r}: expected LOW..HIGH such as 300KBps..50Mbps")
    lo, hi = parse_bandwidth(low), parse_bandwidth(high)
    if not lo < hi:
        raise SplitcError(f"bad bandwidth range {text!r}: the low end must be below the high end")
    return lo, hi


def line(option: Option, rtt_ms: float) -> tuple[Fraction, Fraction]:
    """``(a, b)``, exact, with ``option.total_ms(bw, rtt) == a + b / bw`` (up to float rounding)."""
    if not option.cut and not option.returned_bytes:
        return Fraction(option.edge_ms) + Fraction(option.cloud_ms), Fraction(0)
    a = Fraction(option.edge_ms) + Fraction(option.cloud_ms) + Fraction(rtt_ms)
    return a, (Fraction(option.sent_bytes) + Fraction(option.returned_bytes)) * 1000


def envelope(options: list[Option], lo: float, hi: float, rtt_ms: float) -> list[Piece]:
    """The options optimal somewhere in ``[lo, hi]`` bytes/s, by ascending bandwidth."""
    if not options or not 0 < lo < hi:
        raise ValueError("envelope needs options and 0 < lo < hi")
    lines = [(*line(o, rtt_ms), o) for o in options]
    x, x_end = 1 / Fraction(hi), 1 / Fraction(lo)
    current = _best_at(lines, x)
    pieces: list[tuple[tuple, Fraction, Fraction]] = []
    while True:
        crossing = _next_crossing(lines, current, x)
        if crossing is None or crossing[0] >= x_end:
            pieces.append((current, x, x_end))
            break
        pieces.append((current, x, crossing[0]))
        x, current = crossing
    return [_piece(c, start, end, lo, hi) for c, start, end in reversed(pieces)]


def _key(item) -> tuple:
    a, b, option = item
    return (b, option.sent_bytes, option.bits)


def _best_at(lines, x: Fraction):
    """The line lowest at ``x``; among equals, the flattest (it stays lowest to the right)."""
    lowest = min(a + b * x for a, b, _ in lines)
    return min((item for item in lines if item[0] + item[1] * x == lowest), key=_key)


def _next_crossing(lines, current, x: Fraction):
    """The first ``x' > x`` where a flatter line drops below ``current``, and that line."""
    a0, b0, _ = current
    found = None
    for item in lines:
        a, b, _ = item
        if b >= b0:
            continue
        cross = (a - a0) / (b0 - b)
        if cross <= x:
            continue
        if found is None or cross < found[0] or (cross == found[0] and _key(item) < _key(found[1])):
            found = (cross, item)
    return found


def _piece(item, x_start: Fraction, x_end: Fraction, lo: float, hi: float) -> Piece:
    a, b, option = item
    low = lo if x_end == 1 / Fraction(lo) else float(1 / x_end)
    high = hi if x_start == 1 / Fraction(hi) else float(1 / x_start)
    return Piece(option, low, high, float(a), float(b))


def feasible_options(analyses: list[Analysis], options: joint.EncodingOptions) -> tuple[list[Option], object]:
    """Every (cut, bits) option within the accuracy bound, over the candidate cuts of all ``analyses``.

    The same candidates, calibration and bound as ``splitc.joint.choose``,
    which keeps only the best option for one bandwidth.
    """
    cuts = _union(joint.candidate_cuts(a) for a in analyses)
    rates = [a.problem.bandwidth for a in analyses]
    measured, table = joint.measured_options(analyses[0], options, cuts, bandwidths=(min(rates), max(rates)))
    ok = feasible(measured, options.max_drop)
    if not ok:
        raise SplitcError(f"no cut meets --max-drop {options.max_drop:.2%}; allow more bits or a larger drop")
    return ok, table


def _union(groups) -> list[tuple[str, ...]]:
    seen, cuts = set(), []
    for group in groups:
        for cut in group:
            if tuple(sorted(cut)) not in seen:
                seen.add(tuple(sorted(cut)))
                cuts.append(cut)
    return cuts


def at_link(analysis: Analysis, bandwidth: float, rtt_ms: float) -> Analysis:
    """The same model and costs, partitioned for another link."""
    problem = analysis.problem.with_link(bandwidth, rtt_ms)
    return Analysis(analysis.graph, analysis.costs, problem, partition(problem), analysis.models,
                    analysis.assignments, joint.context(analysis))


@dataclass
class AdaptiveSplit:
    """The plans of a bandwidth range: one ``CompiledSplit`` per envelope piece."""

    pieces: list[Piece]
    splits: list[CompiledSplit]
    index: dict
    calibration: bytes | None = None

    def save(self, out_dir: str | Path, plot: bool = True) -> Path:
        """Write ``plans.json`` and ``plans/<id>/`` atomically (replacing an earlier splitc output).

        With ``plot`` it also writes ``latency_vs_bandwidth.png`` (``plot_range``) when matplotlib is
        installed; ``plot_path`` is then its path, else None and ``plot_missing`` says why.
        """
        self.plot_path, self.plot_missing = None, None

        def fill(tmp: Path) -> None:
            if plot:
                try:
                    plot_range(self, tmp / PLOT_NAME)
                    self.plot_path = Path(out_dir) / PLOT_NAME
                except ImportError:
                    self.plot_missing = "matplotlib is not installed (pip install matplotlib)"
            for entry, split in zip(self.index["plans"], self.splits):
                split.files.pop("calibration.json", None)
                split.save(tmp / entry["dir"])
            if self.calibration is not None:
                (tmp / "calibration.json").write_bytes(self.calibration)
            (tmp / "plans.json").write_text(json.dumps(self.index, indent=2) + "\n")

        return _replace(Path(out_dir), fill)


def compile_range(model, bandwidth: str | tuple[float, float], options: CompileOptions | None = None,
                  progress=None, **settings) -> AdaptiveSplit:
    """Compile the plans optimal somewhere in a bandwidth range (``"300KBps..50Mbps"`` or ``(lo, hi)`` B/s).

    ``options`` and keyword ``settings`` are those of ``splitc.compile`` (its ``bandwidth`` is ignored).
    """
    opts = CompileOptions.build(options, **settings)
    if opts.compress:
        raise SplitcError("--compress takes a single --bw rate, not a range (compile one rate per plan)")
    lo, hi = parse_range(bandwidth) if isinstance(bandwidth, str) else map(float, bandwidth)
    step = progress or (lambda _stage: None)
    base = analyse(model, opts.target, opts.cloud, hi, opts.rtt, opts.input_shapes, progress, opts.edge_precision)
    rtt_ms = base.problem.rtt_ms
    analyses = [base, *(at_link(base, bw, rtt_ms) for bw in (math.sqrt(lo * hi), lo))]
    encoding = opts.encoding()
    step("finding the feasible (cut, bits) options")
    with using_confidence(opts.confidence):
        ok, table = feasible_options(analyses, encoding)
    calibration_warnings(table, opts.max_drop)
    pieces = envelope(ok, lo, hi, rtt_ms)
    step(f"emitting {len(pieces)} plans")
    splits = [_emit(base, piece, ok, encoding, table, opts.emit_fallback) for piece in pieces]
    index = _index(base, pieces, splits, (lo, hi), rtt_ms, encoding, len(ok))
    cached = (json.dumps(table.to_json(), indent=1) + "\n").encode() if table is not None else None
    return AdaptiveSplit(pieces, splits, index, cached)


def _emit(base: Analysis, piece: Piece, ok: list[Option], options, table, emit_fallback: bool) -> CompiledSplit:
    bandwidth = math.sqrt(piece.lo * piece.hi)
    analysis = at_link(base, bandwidth, base.problem.rtt_ms)
    option = piece.option
    ranked = [option, *(o for o in rank(ok, bandwidth, base.problem.rtt_ms, options.max_drop) if o is not option)]
    choice = joint.make_choice(base, options, option, ranked, table)
    split = analysis.split(choice=choice)
    split.plan["adaptive"] = {"interval_Bps": [piece.lo, piece.hi], "a_ms": piece.a_ms, "b_bytes": piece.b / 1e3}
    if emit_fallback:
        split.plan["fallback"] = True
    return split


def _index(base: Analysis, pieces: list[Piece], splits, span, rtt_ms: float, options, feasible_count: int) -> dict:
    plans = []
    for number, (piece, split) in enumerate(zip(pieces, splits)):
        plan_id = f"p{number}"
        plans.append({
            "id": plan_id, "dir": f"plans/{plan_id}", "interval_Bps": [piece.lo, piece.hi],
            "kind": split.plan["kind"], "cut": list(piece.option.cut), "bits": piece.option.bits,
            **({"jpeg_quality": piece.option.jpeg_quality} if piece.option.jpeg_quality else {}),
            "sent_bytes": piece.option.sent_bytes, "returned_bytes": piece.option.returned_bytes,
            "drop": piece.option.drop,
            "drop_bound": piece.option.bound if options.calib is not None else None, "a_ms": piece.a_ms, "b_bytes": piece.b / 1e3,
            "predicted_ms": [piece.a_ms + piece.b / piece.lo, piece.a_ms + piece.b / piece.hi],
        })
    return {
        "schema": INDEX_SCHEMA,
        "splitc_version": __version__,
        "model": {"name": base.graph.name, "sha256": base.graph.sha256},
        "targets": {"edge": base.models[0].name, "cloud": base.models[1].name},
        "range_Bps": list(span),
        "rtt_ms": rtt_ms,
        "max_drop": options.max_drop,
        "feasible_options": feasible_count,
        "breakpoints_Bps": [p.lo for p in pieces[1:]],
        "plans": plans,
    }


def _replace(out: Path, fill) -> Path:
    """``write_directory``: it replaces an earlier output, single or range, only by its marker file."""
    return write_directory(out, fill)


def plot_range(adaptive: AdaptiveSplit, path: str | Path, points: int = 200) -> Path:
    """A PNG of the predicted latency against bandwidth: each plan over its interval, and the baselines.

    Raises ImportError without matplotlib (``pip install matplotlib``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    index = adaptive.index
    lo, hi = index["range_Bps"]
    grid = [lo * (hi / lo) ** (i / (points - 1)) for i in range(points)]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    for plan, piece in zip(index["plans"], adaptive.pieces):
        xs = [bw for bw in grid if piece.lo <= bw <= piece.hi] or [piece.lo, piece.hi]
        cut = ", ".join(plan["cut"]) or "edge-only"
        width = f"JPEG q{plan['jpeg_quality']}" if plan.get("jpeg_quality") else f"{plan['bits']} bits"
        label = f"{plan['id']}: {cut if len(cut) <= 40 else cut[:37] + '...'} ({width})"
        ax.plot([x * 8 / 1e6 for x in xs], [piece.a_ms + piece.b / x for x in xs], linewidth=2.5, label=label)
    split = adaptive.splits[0].plan
    edge_only = split["baselines"]["edge_only_ms"]
    ax.axhline(edge_only, color="grey", linestyle="--", linewidth=1, label="edge-only")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("bandwidth (Mbit/s)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"{index['model']['name']}: {index['targets']['edge']} + {index['targets']['cloud']}, "
                 f"{index['rtt_ms']:g} ms RTT")
    for bp in index["breakpoints_Bps"]:
        ax.axvline(bp * 8 / 1e6, color="black", linewidth=0.5, alpha=0.4)
    ax.legend(fontsize=7)
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
