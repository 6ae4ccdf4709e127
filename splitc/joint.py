"""Joint (cut, bits) choice for a compiled split: candidates, calibration, selection.

Candidate cuts are the cut vertices, the model inputs (cloud-only) and the
best multi-tensor min-cut of each segment between cut vertices, plus edge-only.
With calibration data every (cut, bits) pair gets a measured size and accuracy
drop; without it, ``bits="auto"`` falls back to 8 bits, unchecked.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


from splitc.errors import SplitcError
from splitc.calibration import calibrate
from splitc.passes import precision
from splitc.partition import prune as prune_cuts
from splitc.passes.qdq import QUANT_BITS, Encoding, encoding_for, is_float, jpeg_quality, jpeg_width
from splitc.partition.select import option_summary, Option, rank, within_bound
from splitc.wire import codec
from splitc.wire.jpeg import image_layout

ALL_BITS = [*QUANT_BITS, 16, 32]
JPEG_QUALITIES = (50, 75, 85, 90, 95)  # tried on image-shaped cuts (the model input) with --bits auto
HEADER_GUESS = 64  # frame header bytes assumed when nothing is measured


class UncheckedAccuracy(UserWarning):
    """The accuracy bound was not checked (no calibration data)."""


@dataclass
class EncodingOptions:
    """How the cut tensor may be encoded (``bits``: "auto" or a fixed width)."""

    bits: str | int = 32
    codec: str = "none"
    max_drop: float = 0.01
    calib: str | Path | None = None
    metric: str = "auto"
    per_channel: bool = False
    cache_dir: Path | None = None
    preprocess: str | None = None
    jpeg: bool = True  # with bits "auto" and the huffman codec, also try JPEG on image-shaped cut tensors

    def bit_choices(self) -> list[int]:
        if self.bits == "auto":
            return ALL_BITS
        bits = int(self.bits)
        if bits not in ALL_BITS:
            raise SplitcError(f"--bits must be auto, 1..8, 16 or 32, not {self.bits!r}")
        return [bits]

    def widths(self, graph, cut: tuple[str, ...], bits: list[int]) -> list[int | str]:
        """The widths tried for ``cut``: ``bits``, plus JPEG qualities when every tensor is image-shaped.

        Widths apply to float tensors; a cut of integer or bool tensors only is sent exactly (32).
        """
        if cut and not any(is_float(graph.values[t].dtype) for t in cut if t in graph.values):
            return [32]
        if not (self.jpeg and self.bits == "auto" and self.codec == "huffman" and self.calib is not None):
            return bits
        if not cut or not all(t in graph.values and image_layout(graph.values[t].shape or [])
                              and is_float(graph.values[t].dtype) for t in cut):
            return bits
        return [*bits, *(jpeg_width(q) for q in JPEG_QUALITIES)]

    def check(self) -> None:
        if self.codec not in ("huffman", "none"):
            raise SplitcError(f"--codec must be huffman or none, not {self.codec!r}")
        if not 0 <= self.max_drop <= 1:
            raise SplitcError(f"--max-drop must be between 0% and 100%, not {self.max_drop:.4g}")
        self.bit_choices()


@dataclass
class Choice:
    """The chosen option, the ranking it came from, and what the plan needs to ship."""

    option: Option
    ranked: list[Option]
    encodings: list[Encoding]
    codebooks: dict[str, codec.Codebook] = field(default_factory=dict)
    table: calibrate.Table | None = None
    checked: bool = True
    max_drop: float = 0.01


def candidate_cuts(analysis) -> list[tuple[str, ...]]:
    """Edge-only, each model input set (cloud-only), each cut vertex, each segment's best min-cut."""
    graph = analysis.graph
    cuts: list[tuple[str, ...]] = [()]
    inputs = tuple(v.name for v in graph.inputs if v.consumers)
    if inputs:
        cuts.append(inputs)
    pinned = graph.data_dependent  # shapes that depend on input values never cross
    cuts += [(t,) for t in analysis.result.cut_vertices if graph.values[t].consumers and t not in pinned]
    cuts += [tuple(p.cut_values) for p in analysis.result.candidates() if p.cut_values]
    unique: list[tuple[str, ...]] = []
    for cut in cuts:
        if tuple(sorted(cut)) not in {tuple(sorted(c)) for c in unique}:
            unique.append(cut)
    return unique


def _axis(options: EncodingOptions, rank: int) -> int | None:
    return 1 if options.per_channel and rank > 1 else None


def _options_from(analysis, cuts, widths, sizes_and_drops) -> list[Option]:
    options = []
    for cut in cuts:
        part = analysis.partition_for(cut)
        for c in ([32] if not cut else widths(cut)):
            size, drop, se = sizes_and_drops(cut, c)
            if drop is None:
                continue  # dominated: a narrower width of this cut passed with fewer bytes
            quality = jpeg_quality(c)
            options.append(Option(cut, 8 if quality else c, part.edge_ms, part.cloud_ms, size, part.down_bytes, drop,
                                  part.kind, se, jpeg_quality=quality))
    return options


def _guess(analysis, options: EncodingOptions):
    def sizes(cut, c):
        values = analysis.graph.values
        per_element = 2.0 if c == 16 else c / 8.0
        size = sum(values[t].numel * (per_element if is_float(values[t].dtype) and c != 32
                                      else values[t].dtype.itemsize) for t in cut)
        return (size + HEADER_GUESS * len(cut) if cut else 0.0), 0.0, 0.0
    return sizes


def measured_options(analysis, options: EncodingOptions, cuts: list[tuple[str, ...]],
                     progress: Callable[[str], None] | None = None,
                     bandwidths: tuple[float, float] | None = None,
                     prune: bool = True) -> tuple[list[Option], calibrate.Table | None]:
    """Every (cut, bits) option of ``cuts`` with its size and drop (measured with ``options.calib``).

    ``bandwidths`` (bytes/s, default: the analysis's link) is the range the
    options are for: cuts that cannot be optimal anywhere in it are not
    measured (``splitc.partition.prune``) and yield no options.
    """
    options.check()
    bits = options.bit_choices()
    if options.calib is None:
        if options.bits == "auto":
            warnings.warn("no --calib data: using 8 bits; the accuracy bound was NOT checked", UncheckedAccuracy,
                          stacklevel=3)
            bits = [8]
        return _options_from(analysis, cuts, lambda cut: options.widths(analysis.graph, cut, bits),
                             _guess(analysis, options)), None
    (progress or (lambda _s: None))("calibrating: measuring size and accuracy of every cut and bit width")
    link = bandwidths or (analysis.problem.bandwidth, analysis.problem.bandwidth)
    table, _, _ = _calibrate(analysis, options, cuts, bits, link, prune)

    def sizes(cut, c):
        if not cut:
            entry = table.entries.get(calibrate.Table.entry_key((), 32), {"drop": 0.0, "drop_se": 0.0})
            return 0.0, entry["drop"], entry["drop_se"]
        entry = table.get(cut, c)
        return entry["bytes"], entry["drop"], entry.get("drop_se")

    return _options_from(analysis, cuts, lambda cut: options.widths(analysis.graph, cut, bits), sizes), table


def choose(analysis, options: EncodingOptions, cut: list[str] | None = None,
           progress: Callable[[str], None] | None = None) -> Choice:
    """Pick the (cut, bits) pair with the lowest predicted latency within the accuracy bound."""
    if cut is not None:
        analysis.partition_for(cut)  # a cut that is not valid is refused before any calibration
    cuts = [tuple(cut)] if cut is not None else candidate_cuts(analysis)
    measured, table = measured_options(analysis, options, cuts, progress, prune=cut is None)
    problem = analysis.problem
    ranked = rank(measured, problem.bandwidth, problem.rtt_ms, options.max_drop)
    if not ranked:
        raise SplitcError(f"no cut meets --max-drop {options.max_drop:.2%}; allow more bits or a larger drop")
    return make_choice(analysis, options, ranked[0], ranked, table)


def make_choice(analysis, options: EncodingOptions, option: Option, ranked: list[Option],
                table: calibrate.Table | None) -> Choice:
    """The encodings and static codebooks that emit ``option``."""
    values = analysis.graph.values
    encodings = [encoding_for(t, option.width, _axis(options, len(values[t].shape)), options.codec, values[t].dtype)
                 for t in option.cut]
    books = _codebooks(analysis, options, encodings) if options.calib is not None else {}
    return Choice(option, ranked, encodings, books, table, checked=options.calib is not None,
                  max_drop=options.max_drop)


def _still_pruned(analysis, table, cuts, bits, link, prune: bool, fp16: bool = False) -> bool:
    """True when every cut the cached ``table`` did not measure would be skipped for this link too."""
    skipped = [c for c in cuts if table.get(c, min(bits)).get("pruned")]
    dynamic = any(e.get("above_feasible") for e in table.entries.values())
    if not skipped and not dynamic:
        return True
    if not prune:
        return False
    if table.link == list(link):
        return True  # the same range: the same cuts and widths would be skipped
    if dynamic or fp16:
        return False  # skipped against options found feasible for the cached range only
    return not prune_cuts.prune(analysis, skipped, link, lambda c: table.get(c, min(bits))["smallest_bytes"])


class CompileContext:
    """What one compile measures once, however many plans it emits: the calibration set and its probe.

    It hangs off the analysis (``context(analysis)``); the analyses of other links made by
    ``splitc.adaptive.at_link`` share it. ``probe_runs`` counts the runs of the model over the
    calibration set: one per compile (none when every table comes from the cache).
    """

    def __init__(self) -> None:
        self._sets: dict = {}
        self._probes: list = []
        self.probe_runs = 0

    def calibration(self, analysis, options: EncodingOptions) -> calibrate.CalibrationSet:
        key = (str(options.calib), options.preprocess)
        if key not in self._sets:
            graph = analysis.graph
            inputs = [{"name": v.name, "shape": list(v.shape), "dtype": str(v.dtype)} for v in graph.inputs]
            self._sets[key] = calibrate.load(options.calib, inputs, options.preprocess)
        return self._sets[key]

    def probe(self, analysis, calib, tensors: list[str]) -> calibrate.Measurement:
        """Activations of ``tensors``, from an earlier probe of this compile when one holds them all."""
        rewrite = _rewrite(analysis)
        for sha, kind, held, meas in self._probes:
            if sha == calib.sha256 and kind == rewrite and set(tensors) <= held:
                return meas
        names = sorted(set(tensors))
        graph = analysis.graph
        types = {t: (graph.values[t].shape, graph.values[t].dtype) for t in names}
        meas = calibrate.run_probe(graph.model, names, types, calib, rewrite)
        self.probe_runs += 1
        self._probes.append((calib.sha256, rewrite, set(names), meas))
        return meas


def context(analysis) -> CompileContext:
    """The compile context of ``analysis`` (made on first use)."""
    found = getattr(analysis, "context", None)
    if found is None:
        found = CompileContext()
        analysis.context = found
    return found


def _cloud_half(analysis, cut):
    """The cloud half that receives ``cut`` unquantized, emitted alone (no edge half, no manifest)."""
    from splitc.backends import onnx_backend as emit

    part = analysis.partition_for(cut)
    if not part.cloud_nodes:
        return None
    spec = emit.cloud_spec(part.cloud_nodes, part.cut_values, part.returned_values)
    return emit.emit_half(analysis.graph, spec, f"{analysis.graph.name}_cloud")


def _calibrate(analysis, options, cuts, bits, link: tuple[float, float], prune: bool = True):
    graph = analysis.graph
    outputs = [{"name": v.name, "shape": list(v.shape or [])} for v in graph.outputs]
    ctx = context(analysis)
    calib = ctx.calibration(analysis, options)
    metric = calibrate.choose_metric(options.metric, outputs, calib.labels is not None)
    measured_cuts = [c for c in cuts if c]
    tensors = sorted({t for c in measured_cuts for t in c})

    def widths(cut):
        return options.widths(graph, cut, bits)

    every_width = sorted({w for c in measured_cuts for w in widths(c)}, key=str)
    half = precision.edge_precision(analysis.models)
    key = calibrate.cache_key(graph.sha256, calib, measured_cuts, every_width, metric, options.per_channel,
                              options.codec, options.max_drop, half)
    cached = _read_cache(options.cache_dir, key)
    if cached is not None and _still_pruned(analysis, cached, measured_cuts, bits, link, prune, half == "fp16"):
        return cached, None, calib
    meas = ctx.probe(analysis, calib, tensors)
    axis = 1 if options.per_channel else None
    edge_only = calibrate.edge_only_drop(meas, calib, metric)  # 0 unless the edge half is float16

    def cloud_half(cut):
        return _cloud_half(analysis, cut)

    def passes(drop: float, se: float) -> bool:
        return within_bound(drop, se, options.max_drop)

    sizes: dict[tuple[str, ...], float] = {}

    def smallest(cut):
        if cut not in sizes:
            narrowest = [min(bits), *(w for w in widths(cut) if isinstance(w, str))]
            sizes[cut] = min(calibrate.cut_bytes(meas, cut, w, axis, options.codec) for w in narrowest)
        return sizes[cut]

    model_inputs = {v.name for v in graph.inputs}
    known_ok = {"edge_only": passes(edge_only["drop"], edge_only["drop_se"]),
                "raw": True if half == "fp32" else (lambda cut: set(cut) <= model_inputs)}
    kept = prune_cuts.prune(analysis, measured_cuts, link, smallest, **known_ok) if prune else measured_cuts
    known = prune_cuts.FeasibleEnvelope(analysis, measured_cuts, link, **known_ok) if prune else None

    def worth(cut, sent_bytes):
        return known.worth(cut, smallest(cut) if sent_bytes is None else sent_bytes)

    table = calibrate.measure(cloud_half, meas, calib, kept, widths, metric, axis, options.codec, key,
                              passes=passes, worth=worth if prune else None,
                              on_feasible=known.add if prune else None)
    table.link = list(link)
    table.entries[calibrate.Table.entry_key((), 32)] = edge_only
    for cut in measured_cuts:
        if cut not in kept:
            for c in widths(cut):
                table.entries[calibrate.Table.entry_key(cut, c)] = {"bytes": None, "drop": None, "drop_se": None,
                                                                    "pruned": True, "smallest_bytes": smallest(cut)}
    return table, meas, calib


def _rewrite(analysis):
    """The rewrite the edge half gets (float16), which calibration applies to the probed model too."""
    return precision.to_fp16 if precision.edge_precision(analysis.models) == "fp16" else None


def _read_cache(cache_dir: Path | None, key: str) -> calibrate.Table | None:
    if cache_dir is None:
        return None
    path = Path(cache_dir) / "calibration.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if data.get("version") != calibrate.CACHE_VERSION or data.get("key") != key:
        return None
    return calibrate.Table.from_json(data)


def _codebooks(analysis, options: EncodingOptions, encodings: list[Encoding]) -> dict[str, codec.Codebook]:
    """Static codebooks trained on the calibration tensors of the chosen cut."""
    chosen = [e for e in encodings if e.quantized and e.codec == "huffman"]
    if not chosen:
        return {}
    ctx = context(analysis)
    calib = ctx.calibration(analysis, options)
    meas = ctx.probe(analysis, calib, [e.tensor for e in chosen])
    return {e.tensor: calibrate.train_codebook([a[e.tensor] for a in meas.activations], e) for e in chosen}


__all__ = ["EncodingOptions", "Choice", "choose", "make_choice", "measured_options", "candidate_cuts",
           "option_summary"]
