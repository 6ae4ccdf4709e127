"""Calibration: the size S_i(c) and accuracy drop A_i(c) of every candidate cut i at every bit width c.

The model runs once per calibration sample with every candidate tensor exposed
as an output. For each candidate, its cloud half then runs on the tensors as
the wire would deliver them (``qdq.round_trip``: the edge half's quantizer,
bit for bit), and the outputs are scored against the float model's:

* ``top1``: the drop in top-1 accuracy against ``labels`` (or, without labels,
  the fraction of samples whose top-1 class differs from the float model's);
* ``rel-l2``: the mean relative L2 error ``||y' - y|| / ||y||`` of the outputs,
  for models that are not classifiers.

Every measured drop comes with its certified upper bound at the current
confidence level (``splitc.calibration.confidence``; ``--confidence``, 95% by
default): Clopper–Pearson on the flips for agreement, a paired bound on the
discordant pairs for labelled top-1, a one-sided t bound for rel-l2. An entry
holds ``drop`` (measured), ``bound`` (certified) and ``drop_se`` = ``bound -
drop``, the margin the selection adds to the drop (the key keeps its old name
so that callers that pass ``(drop, drop_se)`` on check the certified bound).

Sizes are whole frames (headers included) from the runtime codec with a
codebook trained on the calibration tensors, as the plan ships it.
"""

from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper

from splitc.calibration.data import CalibrationError, CalibrationSet, CalibrationWarning, load_npz  # noqa: F401
from splitc.calibration.images import load_folder, require
from splitc.calibration import confidence as conf
from splitc.passes.qdq import Encoding, encoding_for, round_trip, simulate, width_order
from splitc.wire import codec

METRICS = ("auto", "top1", "rel-l2")
CACHE_VERSION = 5  # 5: certified bounds (``bound``; ``drop_se`` is the margin bound - drop)
EXACT = {"drop": 0.0, "drop_se": 0.0, "bound": 0.0, "exact": True}


def load(path: str | Path, inputs: list[dict], preprocess: str | None = None) -> CalibrationSet:
    """Calibration data from an ``.npz`` or a folder of images (see ``calib_images``)."""
    if Path(path).is_dir():
        return load_folder(path, inputs, require(path, preprocess))
    return load_npz(path, inputs)


@dataclass
class Table:
    """Measured ``bytes`` and ``drop`` per (cut, bits), with the float model's score."""

    metric: str
    key: str
    float_score: float
    entries: dict[str, dict[str, float]] = field(default_factory=dict)
    float_quality: np.ndarray | None = field(default=None, repr=False)
    link: list[float] | None = None  # the bandwidth range (bytes/s) the skipped entries were skipped for
    samples: int = 0
    labelled: bool = False
    confidence: float = conf.DEFAULT_CONFIDENCE
    notes: list[str] = field(default_factory=list)  # degenerate-data warnings found while measuring

    @staticmethod
    def entry_key(cut: tuple[str, ...], bits: int) -> str:
        return json.dumps([list(cut), bits])

    def get(self, cut: tuple[str, ...], bits: int) -> dict[str, float]:
        return self.entries[self.entry_key(cut, bits)]

    def to_json(self) -> dict:
        return {"version": CACHE_VERSION, "metric": self.metric, "key": self.key,
                "float_score": self.float_score, "link": self.link, "samples": self.samples,
                "labelled": self.labelled, "confidence": self.confidence, "notes": self.notes,
                "entries": self.entries}

    @classmethod
    def from_json(cls, data: dict) -> "Table":
        return cls(data["metric"], data["key"], data["float_score"], data["entries"], link=data.get("link"),
                   samples=data.get("samples", 0), labelled=data.get("labelled", False),
                   confidence=data.get("confidence", conf.DEFAULT_CONFIDENCE), notes=list(data.get("notes", [])))

    def smallest_bound(self) -> float | None:
        """The bound of a candidate that changes nothing on this set (None: it can reach 0)."""
        return conf.smallest_bound(self.metric, self.samples, self.labelled, self.confidence)

    def too_small(self, max_drop: float) -> str | None:
        """One line when no measured candidate could ever be certified within ``max_drop``, else None."""
        floor = self.smallest_bound()
        if floor is None or floor <= max_drop + 1e-12:
            return None
        needed = conf.samples_needed(self.metric, max_drop, self.labelled, self.confidence)
        could = f"{needed} samples could" if needed else "no finite set can certify a zero drop"
        kind = "labelled calibration samples" if self.labelled else "calibration samples"
        return (f"{self.samples} {kind} cannot certify a drop of at most {max_drop:.2%} at "
                f"{self.confidence:.0%} confidence (even with no flips the bound is {floor:.2%}); {could}. "
                f"Choosing among exact options (edge-only, raw float32).")


def choose_metric(metric: str, outputs: list[dict], has_labels: bool) -> str:
    """``auto`` means top-1 for classifiers (first output of shape (1, K), K > 1), else rel-l2."""
    if metric not in METRICS:
        raise CalibrationError(f"unknown --metric {metric!r}; choose one of {', '.join(METRICS)}")
    if metric != "auto":
        return metric
    shape = [d for d in outputs[0]["shape"] if d != 1]
    return "top1" if len(shape) == 1 and shape[0] > 1 else "rel-l2"


def cache_key(model_sha: str, calib: CalibrationSet, cuts, bits, metric: str, axis, codec_name: str,
              bound: float | None = None, edge_precision: str = "fp32") -> str:
    """The key of a calibration table (the confidence level in force is part of it)."""
    text = json.dumps([CACHE_VERSION, model_sha, calib.sha256, sorted(map(list, cuts)), list(bits), metric,
                       axis, codec_name, bound, edge_precision, conf.current()])
    return hashlib.sha256(text.encode()).hexdigest()


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def probe_model(model: onnx.ModelProto, tensors: list[str], types: dict[str, tuple]) -> onnx.ModelProto:
    """The model with the given tensors added as outputs."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output} | {i.name for i in probe.graph.input}
    for name in tensors:
        if name not in present:
            shape, dtype = types[name]
            elem = helper.np_dtype_to_tensor_dtype(dtype)
            probe.graph.output.append(helper.make_tensor_value_info(name, elem, list(shape)))
    return probe


def per_sample(metric: str, outputs: list[np.ndarray], reference: list[np.ndarray],
               labels: np.ndarray | None) -> np.ndarray:
    """Per-sample quality (higher is better): 1/0 for a right top-1 class, or minus the relative L2 error."""
    if metric == "top1":
        got = np.array([o.reshape(-1).argmax() for o in outputs])
        want = labels if labels is not None else np.array([r.reshape(-1).argmax() for r in reference])
        return (got == want).astype(np.float64)
    return -np.array([np.linalg.norm(o - r) / (np.linalg.norm(r) + 1e-12) for o, r in zip(outputs, reference)])


def score(metric: str, outputs: list[np.ndarray], reference: list[np.ndarray], labels: np.ndarray | None) -> float:
    """Mean quality: top-1 accuracy (or agreement with the float model), or minus the mean relative error."""
    return float(per_sample(metric, outputs, reference, labels).mean())


def drop_entry(metric: str, float_quality: np.ndarray, quality: np.ndarray, labelled: bool) -> dict[str, float]:
    """The measured drop, its certified bound at the current confidence, and the margin between them."""
    drop, bound = conf.drop_bound(metric, float_quality, quality, labelled)
    return {"drop": drop, "drop_se": bound - drop, "bound": bound}


def degenerate(metric: str, reference: list[np.ndarray]) -> list[str]:
    """Warnings about calibration data that makes the measured drop meaningless."""
    n = len(reference)
    if n == 0:
        return []
    if n > 1 and all(np.array_equal(reference[0], r) for r in reference[1:]):
        return [f"calibration data is degenerate: the float model gives the same output for all {n} samples, "
                "so any cut looks exact; use representative inputs"]
    if metric == "top1" and n > 1:
        classes = {int(r.reshape(-1).argmax()) for r in reference}
        if len(classes) == 1:
            return [f"calibration data is degenerate: the float model predicts class {classes.pop()} for all {n} "
                    "samples, so agreement says little; use representative inputs (or labels)"]
    return []


@dataclass
class Measurement:
    """Everything calibration needs from the model: activations and the float outputs."""

    activations: list[dict[str, np.ndarray]]
    outputs: list[dict[str, np.ndarray]]
    first_output: str
    edge_outputs: list[dict[str, np.ndarray]] | None = None  # the whole model as the edge runs it (float16)
    rewritten: bool = False  # the activations come from a rewritten edge: no width of them is exact


def run_probe(model: onnx.ModelProto, tensors: list[str], types: dict, calib: CalibrationSet,
              edge_rewrite: Callable[[onnx.ModelProto], onnx.ModelProto] | None = None) -> Measurement:
    """Activations of ``tensors`` and the float outputs, per sample.

    With ``edge_rewrite`` (the float16 rewrite) the activations come from the
    rewritten model, as the edge half computes them, and ``edge_outputs`` holds
    its outputs; ``outputs`` stay the float model's.
    """
    if edge_rewrite is not None:
        return _run_rewritten(model, tensors, types, calib, edge_rewrite)
    session = _session(probe_model(model, tensors, types))
    names = [o.name for o in session.get_outputs()]
    activations, outputs = [], []
    first = model.graph.output[0].name
    model_outputs = [o.name for o in model.graph.output]
    for sample in calib.samples:
        values = dict(zip(names, session.run(names, sample)))
        values.update(sample)
        activations.append({t: values[t] for t in tensors})
        outputs.append({o: values[o] for o in model_outputs})
    return Measurement(activations, outputs, first)


def _run_rewritten(model, tensors, types, calib, edge_rewrite) -> Measurement:
    reference = run_probe(model, [], types, calib)
    rewritten = _session(edge_rewrite(probe_model(model, tensors, types)))
    names = [o.name for o in rewritten.get_outputs()]
    model_outputs = [o.name for o in model.graph.output]
    activations, edge_outputs = [], []
    for sample in calib.samples:
        values = dict(zip(names, rewritten.run(names, sample)))
        values.update(sample)
        activations.append({t: values[t] for t in tensors})
        edge_outputs.append({o: values[o] for o in model_outputs})
    return Measurement(activations, reference.outputs, reference.first_output, edge_outputs)


def edge_only_drop(meas: Measurement, calib: CalibrationSet, metric: str) -> dict[str, float]:
    """The drop of running the whole model as the edge does (float16), against the float model."""
    if meas.edge_outputs is None:
        return {"bytes": 0.0, **EXACT}
    reference = [o[meas.first_output] for o in meas.outputs]
    got = [o[meas.first_output] for o in meas.edge_outputs]
    return {"bytes": 0.0, **drop_entry(metric, per_sample(metric, reference, reference, calib.labels),
                                       per_sample(metric, got, reference, calib.labels), calib.labels is not None)}


def frame_bytes(arrays: list[np.ndarray], enc: Encoding, book: codec.Codebook | None) -> float:
    """Mean frame size of one tensor over the calibration samples."""
    sizes = []
    for x in arrays:
        if enc.exact_array:  # a plain-array record: dtype, rank, shape, then the values
            sizes.append(4 + 4 * np.ndim(x) + np.asarray(x).nbytes)
        elif enc.bits == 32:
            sizes.append(len(codec.encode(x, 32)))
        elif enc.bits == 16:
            sizes.append(len(codec.encode(x.astype(np.float16), 16)))
        else:
            q, lo, hi = simulate(x, enc)
            sizes.append(len(codec.encode(q, enc.bits, _flat(lo), _flat(hi), codebook=book,
                                          per_channel_axis=enc.axis, coder=enc.codec, quality=enc.quality)))
    return float(np.mean(sizes))


def _flat(value: np.ndarray):
    value = np.asarray(value, np.float32)
    return float(value) if value.ndim == 0 else value.reshape(-1)


def train_codebook(arrays: list[np.ndarray], enc: Encoding) -> codec.Codebook | None:
    if enc.bits > 8 or enc.codec != "huffman":
        return None
    return codec.Codebook.train([simulate(x, enc)[0] for x in arrays], enc.bits)


_progress_hook: ContextVar[Callable[[int, int, float], None] | None] = ContextVar("splitc_calibration_progress",
                                                                                default=None)


@contextmanager
def reporting(hook: Callable[[int, int, float], None]):
    """Inside the block, ``measure`` reports ``hook(cuts done, cuts, seconds so far)`` after each cut."""
    token = _progress_hook.set(hook)
    try:
        yield
    finally:
        _progress_hook.reset(token)


def measure(
    split_cloud: Callable[[tuple[str, ...]], onnx.ModelProto | None],
    meas: Measurement,
    calib: CalibrationSet,
    cuts: list[tuple[str, ...]],
    bits: list[int | str] | Callable[[tuple[str, ...]], list[int | str]],
    metric: str,
    axis: int | None,
    codec_name: str,
    key: str,
    progress: Callable[[int, int], None] | None = None,
    passes: Callable[[float, float], bool] | None = None,
    worth: Callable[[tuple[str, ...], float | None], bool] | None = None,
    on_feasible: Callable[[tuple[str, ...], float], None] | None = None,
) -> Table:
    """S_i(c) and A_i(c) for every candidate cut and width.

    ``bits`` lists the widths (bit widths, and ``qdq.jpeg_width(q)`` for JPEG
    coding), or gives them per cut when it is a callable.

    With ``passes(drop, margin)`` (the accuracy bound: ``drop + margin``,
    the certified bound, within ``max_drop``) the widths of a cut are
    tried narrowest first, and once one passes, a wider width that is no
    smaller on the wire is not run through the cloud half: it could never be
    chosen (same cut, same times, more bytes). Its entry keeps its size and
    has ``drop = None`` and ``dominated_by`` naming the width that beat it.

    ``worth(cut, bytes)`` (``bytes`` None: the cut's smallest frame) says
    whether sending that many bytes could still be optimal; a cut or width it
    rejects is not run (entries with ``drop = None`` and ``above_feasible``).
    ``on_feasible(cut, bytes)`` hears of every width that passes, so that the
    caller's test can tighten as the feasible options improve.
    """
    if progress is None and _progress_hook.get() is not None:
        hook, started = _progress_hook.get(), time.monotonic()

        def progress(done: int, total: int) -> None:
            hook(done, total, time.monotonic() - started)

        progress(0, len(cuts))
    reference = [o[meas.first_output] for o in meas.outputs]
    table = Table(metric, key, score(metric, reference, reference, calib.labels), samples=len(calib.samples),
                  labelled=calib.labels is not None, confidence=conf.current())
    table.float_quality = per_sample(metric, reference, reference, calib.labels)
    table.notes = degenerate(metric, reference)
    for done, cut in enumerate(cuts):
        widths = bits(cut) if callable(bits) else bits
        if worth is not None and not worth(cut, None):
            for c in widths:
                table.entries[Table.entry_key(cut, c)] = {"bytes": None, "drop": None, "drop_se": None,
                                                          "above_feasible": True}
        else:
            _measure_cut(table, split_cloud, meas, calib, cut, widths, axis, codec_name, passes, worth, on_feasible)
        if progress is not None:
            progress(done + 1, len(cuts))
    return table


def _measure_cut(table, split_cloud, meas, calib, cut, widths, axis, codec_name, passes, worth, on_feasible) -> None:
    cloud = split_cloud(cut)
    session = _session(cloud) if cloud is not None else None
    sizes = {c: cut_bytes(meas, cut, c, axis, codec_name) for c in widths}
    best: int | str | None = None
    for c in sorted(widths, key=width_order):
        key = Table.entry_key(cut, c)
        if best is not None and sizes[c] >= sizes[best]:
            table.entries[key] = {"bytes": sizes[c], "drop": None, "drop_se": None, "dominated_by": best}
            continue
        if worth is not None and not worth(cut, sizes[c]):
            table.entries[key] = {"bytes": sizes[c], "drop": None, "drop_se": None, "above_feasible": True}
            continue
        entry = {"bytes": sizes[c], **_drop(session, meas, calib, cut, c, axis, codec_name, table)}
        table.entries[key] = entry
        if passes is not None and passes(entry["drop"], entry["drop_se"]):
            if on_feasible is not None:
                on_feasible(cut, sizes[c])
            if best is None or sizes[c] < sizes[best]:
                best = c


def cut_bytes(meas: Measurement, cut: tuple[str, ...], bits: int | str, axis: int | None, codec_name: str) -> float:
    """Mean bytes on the wire for sending ``cut`` at width ``bits`` (one frame per tensor)."""
    size = 0.0
    for enc in _encodings(meas, cut, bits, axis, codec_name):
        arrays = [a[enc.tensor] for a in meas.activations]
        size += frame_bytes(arrays, enc, train_codebook(arrays, enc))
    return size


def _encodings(meas: Measurement, cut, bits: int | str, axis: int | None, codec_name: str) -> list[Encoding]:
    first = meas.activations[0]
    return [encoding_for(t, bits, axis if first[t].ndim > 1 else None, codec_name, first[t].dtype) for t in cut]


def _drop(session, meas, calib, cut, bits, axis, codec_name, table) -> dict[str, float]:
    """The accuracy drop (measured, and its certified bound) of sending ``cut`` at ``bits``."""
    if session is None:  # nothing runs on the cloud: the edge computes the outputs
        found = edge_only_drop(meas, calib, table.metric)
        return {k: v for k, v in found.items() if k != "bytes"}
    encodings = _encodings(meas, cut, bits, axis, codec_name)
    if all(e.bits == 32 for e in encodings) and meas.edge_outputs is None and not meas.rewritten:
        return dict(EXACT)  # raw activations of a float32 prefix: exact
    names = [o.name for o in session.get_outputs()]
    outputs = []
    for acts, float_out in zip(meas.activations, meas.outputs):
        feeds = {enc.tensor: round_trip(acts[enc.tensor], enc) for enc in encodings}
        got = dict(zip(names, session.run(names, feeds)))
        outputs.append(got.get(meas.first_output, float_out[meas.first_output]))
    reference = [o[meas.first_output] for o in meas.outputs]
    quality = per_sample(table.metric, outputs, reference, calib.labels)
    return drop_entry(table.metric, table.float_quality, quality, calib.labels is not None)
