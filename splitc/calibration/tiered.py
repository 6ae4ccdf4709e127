"""Bit widths for the two links of a three-tier split, checked on the composed three-part model.

For every pair (link-1 width, link-2 width) of the candidates, every
calibration sample runs through the device half, the link-1 round trip
(``qdq.round_trip``: the quantizer and dequantizer the halves carry, bit for
bit), the edge half, the link-2 round trip and the cloud half, exactly as
deployed: relayed tensors (device tensors the cloud reads) keep their link-1
encoding on link 2. The composed outputs are scored against the unsplit float
model and the drop gets its certified upper bound
(``splitc.calibration.confidence``). The drops of the two cuts are never added:
each pair is measured as a whole.

Rule: among the pairs whose certified bound is within ``max_drop``, the one
with the lowest predicted latency (with the measured frame sizes) wins; ties go
to fewer bytes, then to the wider widths. A pair that sends every float tensor
raw (32 bits) is exact: bound 0, nothing measured.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

from splitc.calibration import calibrate
from splitc.calibration import confidence as conf
from splitc.errors import SplitcError
from splitc.partition.select import within_bound
from splitc.passes.qdq import Encoding, encoding_for, round_trip
from splitc.wire import codec

AUTO_WIDTHS = (32, 8, 6, 4)
HEADER_GUESS = 64  # frame header bytes assumed when nothing is measured


@dataclass
class WidthChoice:
    """The widths chosen for the two links, the encodings and codebooks that ship them, and the evidence."""

    bits: tuple[int, int]
    encodings: dict[str, Encoding]
    books: dict[str, codec.Codebook] = field(default_factory=dict)
    sizes: dict[str, float] = field(default_factory=dict)  # mean frame bytes per cut tensor
    summary: dict = field(default_factory=dict)  # tiers.json "accuracy"
    candidates: list[dict] = field(default_factory=list)  # every pair tried (calibration.json)


def encodings_for(graph, tensors: list[str], bits: int, codec_name: str) -> dict[str, Encoding]:
    """One per-tensor encoding at ``bits`` per cut tensor (integer and bool tensors: exact)."""
    return {t: encoding_for(t, bits, None, codec_name, graph.values[t].dtype) for t in tensors}


def guessed_sizes(graph, encodings: dict[str, Encoding]) -> dict[str, float]:
    """Frame sizes without data: the raw bytes, or ``bits / 8`` per element plus a header."""
    sizes = {}
    for t, enc in encodings.items():
        value = graph.values[t]
        if enc.exact_array or enc.bits == 32:
            sizes[t] = float(value.nbytes)
        else:
            per_element = 2.0 if enc.bits == 16 else enc.bits / 8.0
            sizes[t] = value.numel * per_element + HEADER_GUESS
    return sizes


def unchecked(graph, parts, bits: tuple, codec_name: str) -> WidthChoice:
    """Fixed widths (``"auto"`` means 8) without calibration data."""
    b1, b2 = (8 if b == "auto" else int(b) for b in bits)
    encodings = {**encodings_for(graph, parts.link1, b1, codec_name),
                 **encodings_for(graph, parts.made2, b2, codec_name)}
    exact = all(e.exact_array or e.bits == 32 for e in encodings.values())
    summary = {"bits": [b1, b2], "checked": False, "exact": exact, "drop": None, "drop_bound": 0.0 if exact else None}
    return WidthChoice((b1, b2), encodings, {}, guessed_sizes(graph, encodings), summary)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _run(session, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}
    return dict(zip(names, session.run(names, {k: v for k, v in feeds.items() if k in wanted})))


class _Composition:
    """The float halves over the calibration set, with each link's round trip in between (cached per width)."""

    def __init__(self, graph, parts, floats: dict, calib, codec_name: str) -> None:
        self.graph, self.parts, self.codec = graph, parts, codec_name
        self.sessions = {k: _session(m) if m is not None else None for k, m in floats.items()}
        self.device = [_run(self.sessions["device"], s) for s in calib.samples]
        self._middle: dict[int, list[dict]] = {}

    def first(self, b1: int) -> dict[str, Encoding]:
        return encodings_for(self.graph, self.parts.link1, b1, self.codec)

    def middle(self, b1: int) -> list[dict[str, np.ndarray]]:
        """The edge half's outputs per sample, on the link-1 tensors after their round trip at ``b1``."""
        if b1 not in self._middle:
            enc, session = self.first(b1), self.sessions["edge"]
            self._middle[b1] = [_run(session, {t: round_trip(d[t], enc[t]) for t in self.parts.link1})
                                if session is not None else {} for d in self.device]
        return self._middle[b1]

    def outputs(self, b1: int, b2: int) -> list[dict[str, np.ndarray]]:
        """The composed model's outputs per sample at the widths ``(b1, b2)``."""
        enc1, enc2 = self.first(b1), encodings_for(self.graph, self.parts.made2, b2, self.codec)
        found = []
        for device, middle in zip(self.device, self.middle(b1)):
            merged = {**device, **middle}
            if self.sessions["cloud"] is not None:
                feeds = {t: round_trip(device[t], enc1[t]) for t in self.parts.relayed}
                feeds.update({t: round_trip(middle[t], enc2[t]) for t in self.parts.made2})
                merged.update(_run(self.sessions["cloud"], feeds))
            found.append(merged)
        return found

    def sizes(self, b1: int, b2: int) -> dict[str, float]:
        """Mean frame bytes (codebooks trained on these very tensors, as shipped) of every cut tensor."""
        enc = {**self.first(b1), **encodings_for(self.graph, self.parts.made2, b2, self.codec)}
        sizes = {}
        for t, e in enc.items():
            arrays = [d[t] for d in (self.device if t in self.parts.link1 else self.middle(b1))]
            sizes[t] = calibrate.frame_bytes(arrays, e, calibrate.train_codebook(arrays, e))
        return sizes

    def books(self, encodings: dict[str, Encoding], b1: int) -> dict[str, codec.Codebook]:
        books = {}
        for t, e in encodings.items():
            arrays = [d[t] for d in (self.device if t in self.parts.link1 else self.middle(b1))]
            book = calibrate.train_codebook(arrays, e) if e.quantized else None
            if book is not None:
                books[t] = book
        return books


def choose_widths(graph, parts, floats: dict, bits: tuple, codec_name: str, calib_path, metric: str,
                  max_drop: float, price: Callable[[dict[str, float]], float], preprocess: str | None = None,
                  progress: Callable[[str], None] | None = None) -> WidthChoice:
    """The widths per link (``bits``: a width or ``"auto"`` per link) by the rule in the module docstring."""
    step = progress or (lambda _s: None)
    inputs = [{"name": v.name, "shape": list(v.shape), "dtype": str(v.dtype)} for v in graph.inputs]
    calib = calibrate.load(calib_path, inputs, preprocess)
    step("calibrating: running the unsplit model")
    reference = calibrate.run_probe(graph.model, [], {}, calib)
    outputs = [{"name": v.name, "shape": list(v.shape or [])} for v in graph.outputs]
    metric = calibrate.choose_metric(metric, outputs, calib.labels is not None)
    first = reference.first_output
    ref = [o[first] for o in reference.outputs]
    float_quality = calibrate.per_sample(metric, ref, ref, calib.labels)
    comp = _Composition(graph, parts, floats, calib, codec_name)
    own = (bool(parts.link1), bool(parts.made2))
    widths = [AUTO_WIDTHS if b == "auto" and own[k] else ((32,) if b == "auto" else (int(b),))
              for k, b in enumerate(bits)]
    tried = []
    for b1, b2 in itertools.product(*widths):
        step(f"calibrating: the composed model at {b1}/{b2} bits")
        enc = {**comp.first(b1), **encodings_for(graph, parts.made2, b2, codec_name)}
        sizes = comp.sizes(b1, b2)
        if all(e.exact_array or e.bits == 32 for e in enc.values()):
            drop, bound, exact = 0.0, 0.0, True
        else:
            got = [o.get(first, r) for o, r in zip(comp.outputs(b1, b2), ref)]
            quality = calibrate.per_sample(metric, got, ref, calib.labels)
            drop, bound = conf.drop_bound(metric, float_quality, quality, calib.labels is not None)
            exact = False
        tried.append({"bits": [b1, b2], "bytes": sum(sizes.values()), "drop": drop, "drop_bound": bound,
                      "exact": exact, "total_ms": price(sizes), "feasible": within_bound(drop, bound - drop, max_drop),
                      "sizes": sizes})
    feasible = [c for c in tried if c["feasible"]]
    if not feasible:
        raise SplitcError(f"no bit widths {'/'.join(map(str, bits))} keep the composed model within --max-drop "
                          f"{max_drop:.2%}; allow more bits or a larger drop")
    best = min(feasible, key=lambda c: (c["total_ms"], c["bytes"], -c["bits"][0], -c["bits"][1]))
    b1, b2 = best["bits"]
    encodings = {**comp.first(b1), **encodings_for(graph, parts.made2, b2, codec_name)}
    summary = {"bits": [b1, b2], "checked": True, "exact": best["exact"], "metric": metric,
               "max_drop": max_drop, "confidence": conf.current(), "samples": len(calib.samples),
               "labelled": calib.labels is not None, "float_score": float(float_quality.mean()),
               "drop": best["drop"], "drop_bound": best["drop_bound"], "calibration_sha256": calib.sha256}
    table = [{k: v for k, v in c.items() if k != "sizes"} for c in tried]
    return WidthChoice((b1, b2), encodings, comp.books(encodings, b1), best["sizes"], summary, table)
