"""Measuring a (cut, edge variant) candidate: its frame sizes and its accuracy drop per width.

The accuracy of a candidate is always measured on the whole model as the split runs it, against the
original float model's outputs: the variant's edge (rewritten, float16 or INT8) computes the cut tensors,
the cut goes through the wire's quantizer at each width (``qdq.round_trip``) and the variant's cloud half
computes the outputs. A rewrite's own error and the quantizer's are measured together, never added up.

A variant fitted on calibration data (a rewrite, or INT8 ranges) is measured on the certification share
only (``space.CalibrationShares``); ``base`` and ``fp16`` on the whole set. Sizes and drops are cached per
(candidate, width), so searches at several links measure each at most once; ``requested`` counts the
drops a search asked for (its accuracy evaluations), exact ones (raw float32 of an unchanged edge,
edge-only without a rewrite) excluded.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import onnxruntime as ort

from splitc.backends import onnx_backend as emit
from splitc.calibration import calibrate
from splitc.compress.int8 import int8_edge
from splitc.compress.candidates import Candidate
from splitc.compress.space import CalibrationShares
from splitc.partition.select import Option
from splitc.passes import precision
from splitc.widths import jpeg_quality, width_order

KEEP_MEASUREMENTS = 2  # activations kept in memory (the last candidates measured)


class Evaluator:
    """Sizes and drops of candidates (see the module doc); ``computed`` counts drops actually run."""

    def __init__(self, analysis, enc, shares: CalibrationShares, metric: str) -> None:
        self.analysis, self.enc, self.shares, self.metric = analysis, enc, shares, metric
        self.axis = 1 if enc.per_channel else None
        self._reference: dict[str, calibrate.Measurement] = {}
        self._meas: OrderedDict = OrderedDict()
        self._sizes: dict[tuple, float] = {}
        self._drops: dict[tuple, dict] = {}
        self.computed = 0
        self.requested: set[tuple] = set()

    def reset(self) -> None:
        """Start counting the evaluations of a new search (the caches are kept)."""
        self.requested = set()

    @property
    def evaluations(self) -> int:
        """Accuracy evaluations asked for since ``reset`` (a (candidate, width) drop that is not exact)."""
        return sum(1 for key in self.requested if not self._drops[key].get("exact"))

    def widths(self, cand: Candidate) -> list[int | str]:
        """The widths tried for the candidate's cut (JPEG qualities for image-shaped cuts, as ``joint``)."""
        if not cand.cut:
            return [32]
        return self.enc.widths(cand.priced.graph, cand.sent, self.enc.bit_choices())

    def options(self, cand: Candidate, passes=None, worth=None) -> list[tuple[Option, int | str]]:
        """Measured (option, width) pairs of ``cand``, narrowest width first.

        ``passes(drop, margin)``: once a width passes, wider widths that are no smaller are not run.
        ``worth(bytes)``: a width it rejects is not run. Without both, every width is measured.
        """
        widths = self.widths(cand)
        sizes = {c: self.size(cand, c) for c in widths}
        found, best = [], None
        for c in sorted(widths, key=width_order):
            if passes is not None and best is not None and sizes[c] >= sizes[best]:
                continue
            if worth is not None and not worth(sizes[c]):
                continue
            entry = self.drop(cand, c)
            found.append((self.option(cand, c, sizes[c], entry), c))
            if passes is not None and passes(entry["drop"], entry["drop_se"]):
                if best is None or sizes[c] < sizes[best]:
                    best = c
        return found

    def option(self, cand: Candidate, width, size: float, entry: dict) -> Option:
        """The ``Option`` the selection ranks: the candidate's times, this width's bytes and drop."""
        p, quality = cand.priced, jpeg_quality(width)
        return Option(cand.sent, 8 if quality else width, p.edge_ms, p.cloud_ms, size if cand.cut else 0.0,
                      p.returned_bytes, entry["drop"], p.kind, entry["drop_se"],
                      extra={"variant": cand.spec.name, "cut": list(cand.cut)}, jpeg_quality=quality)

    def size(self, cand: Candidate, width) -> float:
        """Mean frame bytes of the candidate's cut at ``width`` (0 for edge-only)."""
        key = (cand.key, width)
        if key not in self._sizes:
            if not cand.cut:
                return 0.0
            meas, _ = self.measurement(cand)
            self._sizes[key] = calibrate.cut_bytes(meas, cand.sent, width, self.axis, self.enc.codec)
        return self._sizes[key]

    def drop(self, cand: Candidate, width) -> dict:
        """The table entry (bytes, drop, certified margin, bound) of the candidate at ``width``."""
        key = (cand.key, width)
        self.requested.add(key)
        if key not in self._drops and cand.spec.is_base and not cand.cut:
            self._drops[key] = {"bytes": 0.0, **calibrate.EXACT, "variant": "base"}  # the float model itself
        if key not in self._drops:
            meas, calib = self.measurement(cand)
            table = calibrate.measure(lambda _cut: self.cloud_half(cand), meas, calib, [cand.sent], [width],
                                      self.metric, self.axis, self.enc.codec, "")
            entry = dict(table.get(cand.sent, width))
            entry.update(variant=cand.spec.name, samples=len(calib.samples))
            self._drops[key] = entry
            if not entry.get("exact"):
                self.computed += 1
        return self._drops[key]

    def entries(self) -> dict[str, dict]:
        """Every measured entry, keyed ``[cut, width, variant]`` (for ``calibration.json``)."""
        import json

        return {json.dumps([list(k[0][0]), k[1], k[0][1].name]): v for k, v in self._drops.items()}

    def cloud_half(self, cand: Candidate):
        """The candidate's cloud half receiving its cut unquantized (None when nothing runs on the cloud)."""
        part, graph = cand.priced.part, cand.priced.graph
        if not part.cloud_nodes:
            return None
        spec = emit.cloud_spec(part.cloud_nodes, part.cut_values, part.returned_values)
        return emit.emit_half(graph, spec, f"{graph.name}_cloud")

    def edge_half(self, cand: Candidate):
        """The candidate's edge half before any precision change."""
        part, graph = cand.priced.part, cand.priced.graph
        return emit.emit_half(graph, emit.edge_spec(graph, part.edge_nodes, part.cut_values), f"{graph.name}_edge")

    def reference(self, share: str) -> calibrate.Measurement:
        """The original float model's outputs on the ``full`` or ``certify`` share."""
        if share not in self._reference:
            calib = self.shares.full if share == "full" else self.shares.certify
            self._reference[share] = calibrate.run_probe(self.analysis.graph.model, [], {}, calib)
        return self._reference[share]

    def measurement(self, cand: Candidate) -> tuple[calibrate.Measurement, object]:
        """The cut activations as the candidate's edge computes them, with the float outputs."""
        if cand.key in self._meas:
            self._meas.move_to_end(cand.key)
            return self._meas[cand.key]
        share = "certify" if cand.spec.fitted else "full"
        calib = self.shares.certify if share == "certify" else self.shares.full
        found = (self._probe(cand, calib, self.reference(share)), calib)
        self._meas[cand.key] = found
        while len(self._meas) > KEEP_MEASUREMENTS:
            self._meas.popitem(last=False)
        return found

    def _probe(self, cand: Candidate, calib, ref: calibrate.Measurement) -> calibrate.Measurement:
        graph, sent = cand.priced.graph, list(cand.sent)
        types = {t: (graph.values[t].shape, graph.values[t].dtype) for t in sent}
        spec = cand.spec
        if spec.is_base:
            return calibrate.run_probe(graph.model, sent, types, calib)
        if spec.precision == "fp16":
            return calibrate.run_probe(graph.model, sent, types, calib, precision.to_fp16)
        if spec.precision == "int8":
            acts, outputs = _run_int8(int8_edge(self.edge_half(cand), self.shares.fit), calib, sent)
            return calibrate.Measurement(acts, ref.outputs, ref.first_output, outputs if not sent else None,
                                         rewritten=True)
        meas = calibrate.run_probe(cand.built.model, sent, types, calib)
        return calibrate.Measurement(meas.activations, ref.outputs, ref.first_output, meas.outputs, rewritten=True)


def _run_int8(half, calib, sent: list[str]) -> tuple[list[dict], list[dict]]:
    """Cut activations and outputs of an INT8 edge half over the samples."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(half.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    inputs = {i.name for i in session.get_inputs()}
    acts, outputs = [], []
    for sample in calib.samples:
        values = dict(zip(names, session.run(names, {k: v for k, v in sample.items() if k in inputs})))
        acts.append({t: np.asarray(values[t]) for t in sent})
        outputs.append(values)
    return acts, outputs
