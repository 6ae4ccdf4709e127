"""Measuring a model tree on calibration data: every composition, run as the edge and the cloud will run it.

A composition runs block variants one after the other on each calibration
sample (onnxruntime, the blocks' own ONNX models), then either stops after the
last block (the result is on the edge) or sends the tensors of a fork at one
width and lets the base model's suffix from that fork finish. The tensors sent
go through ``splitc.passes.qdq.round_trip``, the edge half's quantizer and the
cloud half's dequantizer bit for bit. Each composition's outputs are scored
against the float model's (``splitc.calibration.calibrate``: top-1 with or
without labels, or rel-l2) and get a measured drop and its certified upper
bound at the confidence in force (``splitc.calibration.confidence``).

Sizes are mean whole frames of the runtime codec (``calibrate.frame_bytes``)
with the static codebook the entry point ships: trained on the tensors of the
all-base path at that fork, used for every path through it.

Exact options are not measured: the raw float32 tensors of the all-base path
(the cloud computes what the model computes) and the all-base edge-only
composition have a bound of 0. At each (fork, path) the widths are tried
narrowest first; once one passes the bound, a wider width that is no smaller on
the wire can never be chosen (same times, more bytes) and is not run
(``dominated_by``), as in ``splitc.calibration.calibrate.measure``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnxruntime as ort

from splitc.calibration import calibrate
from splitc.calibration.confidence import current as current_confidence
from splitc.passes.qdq import Encoding, encoding_for, round_trip
from splitc.tree.spec import Block, Path, TreeSpec, Variant
from splitc.tree.variants import BlockVariant

__all__ = ["Composer", "OptionRecord", "Scoring", "Tables", "label_for", "measure_fork", "measure_tree",
           "spec_from_tables"]

Acts = list[dict[str, np.ndarray]]


def label_for(bits: int) -> str:
    """The label of an offload width (``b4``: 4-bit symbols, Huffman-coded; ``b32``: raw float32)."""
    return f"b{bits}"


@dataclass
class OptionRecord:
    """One width at one (fork, path): mean bytes sent, measured drop and certified bound (None: not run)."""

    label: str
    bits: int
    nbytes: float
    drop: float | None
    bound: float | None
    dominated_by: str | None = None

    def to_json(self) -> dict:
        """The record as tree.json lists it."""
        return {"label": self.label, "bits": self.bits, "bytes": self.nbytes, "drop": self.drop, "bound": self.bound,
                **({"dominated_by": self.dominated_by} if self.dominated_by else {})}

    @classmethod
    def from_json(cls, data: dict) -> OptionRecord:
        """Read a record written by ``to_json``."""
        return cls(str(data["label"]), int(data["bits"]), float(data["bytes"]), data.get("drop"), data.get("bound"),
                   data.get("dominated_by"))


@dataclass
class Scoring:
    """How compositions are scored: the metric, the float model's outputs and per-sample quality, the labels."""

    metric: str
    first_output: str
    reference: list[np.ndarray]
    labels: np.ndarray | None

    def __post_init__(self) -> None:
        self.float_quality = calibrate.per_sample(self.metric, self.reference, self.reference, self.labels)

    @property
    def float_score(self) -> float:
        """The float model's mean quality (top-1 accuracy or agreement, or minus the mean rel-l2)."""
        return float(self.float_quality.mean())

    def quality(self, outputs: list[np.ndarray]) -> np.ndarray:
        """Per-sample quality of a composition's first outputs."""
        return calibrate.per_sample(self.metric, outputs, self.reference, self.labels)

    def drop(self, outputs: list[np.ndarray]) -> tuple[float, float]:
        """(measured drop, certified bound) of a composition's first outputs against the float model."""
        entry = calibrate.drop_entry(self.metric, self.float_quality, self.quality(outputs), self.labels is not None)
        return entry["drop"], entry["bound"]


def _session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


class Composer:
    """Runs compositions: block ``f`` variant ``v`` (``advance``), or the base suffix from fork ``f`` (``finish``)."""

    def __init__(self, blocks: Sequence[Sequence[BlockVariant]], suffixes: Sequence[onnx.ModelProto],
                 first_output: str, threads: int = 1) -> None:
        self.blocks, self.suffixes, self.first_output, self.threads = blocks, suffixes, first_output, threads
        self._sessions: dict[tuple, ort.InferenceSession] = {}

    def _get(self, key: tuple, model: onnx.ModelProto) -> ort.InferenceSession:
        if key not in self._sessions:
            self._sessions[key] = _session(model, self.threads)
        return self._sessions[key]

    def advance(self, acts: Acts, fork: int, variant: int) -> Acts:
        """The tensors of fork ``fork + 1`` after running variant ``variant`` of block ``fork`` on each sample."""
        session = self._get(("block", fork, variant), self.blocks[fork][variant].model)
        inputs = [i.name for i in session.get_inputs()]
        names = [o.name for o in session.get_outputs()]
        return [dict(zip(names, session.run(names, {n: a[n] for n in inputs}))) for a in acts]

    def finish(self, acts: Acts, fork: int, encodings: Sequence[Encoding]) -> list[np.ndarray]:
        """The first output of the base suffix from ``fork`` fed each sample's tensors after the wire."""
        session = self._get(("suffix", fork), self.suffixes[fork])
        names = [o.name for o in session.get_outputs()]
        out = []
        for a in acts:
            feeds = {e.tensor: round_trip(a[e.tensor], e) for e in encodings}
            out.append(dict(zip(names, session.run(names, feeds)))[self.first_output])
        return out

    def run(self, samples: Acts, path: Path, fork: int | None = None, bits: int | None = None,
            codec: str = "huffman") -> list[np.ndarray]:
        """First outputs of one composition: ``path``'s variants, then (``fork``, ``bits``) or the edge result."""
        acts = samples
        for f, v in enumerate(path):
            acts = self.advance(acts, f, v)
        if fork is None:
            return [a[self.first_output] for a in acts]
        tensors = [i.name for i in self._get(("suffix", fork), self.suffixes[fork]).get_inputs()]
        return self.finish(acts, fork, [encoding_for(t, bits, None, codec, acts[0][t].dtype) for t in tensors])


@dataclass
class Tables:
    """Everything measured: options per (fork, path), edge-only (drop, bound) per full path, the codebooks."""

    options: dict[tuple[int, Path], list[OptionRecord]] = field(default_factory=dict)
    edge: dict[Path, tuple[float, float]] = field(default_factory=dict)
    books: dict[tuple[int, int], dict] = field(default_factory=dict)  # (fork, bits) -> tensor -> Codebook
    metric: str = "top1"
    samples: int = 0
    labelled: bool = False
    float_score: float = 0.0
    confidence: float = field(default_factory=current_confidence)


def _encodings(acts: Acts, tensors: Sequence[str], bits: int, codec: str) -> list[Encoding]:
    return [encoding_for(t, bits, None, codec, acts[0][t].dtype) for t in tensors]


def train_books(acts: Acts, tensors: Sequence[str], bits: int, codec: str) -> dict:
    """The static codebooks of one width at one fork, trained on these tensors (none above 8 bits)."""
    books = {}
    for enc in _encodings(acts, tensors, bits, codec):
        book = calibrate.train_codebook([a[enc.tensor] for a in acts], enc)
        if book is not None:
            books[enc.tensor] = book
    return books


def measure_fork(finish: Callable[[list[Encoding]], list[np.ndarray]], scoring: Scoring, acts: Acts,
                 tensors: Sequence[str], widths: Sequence[int], books: Callable[[int], dict], exact_raw: bool,
                 max_drop: float, codec: str = "huffman") -> list[OptionRecord]:
    """The options of one (fork, path), narrowest first (see the module's notes on exactness and dominance)."""
    records: list[OptionRecord] = []
    best: OptionRecord | None = None
    for bits in sorted(widths):
        encodings = _encodings(acts, tensors, bits, codec)
        book = books(bits)
        size = sum(calibrate.frame_bytes([a[e.tensor] for a in acts], e, book.get(e.tensor)) for e in encodings)
        if best is not None and size >= best.nbytes:
            records.append(OptionRecord(label_for(bits), bits, size, None, None, best.label))
            continue
        if exact_raw and all(e.bits == 32 or e.exact_array for e in encodings):
            drop, bound = 0.0, 0.0
        else:
            drop, bound = scoring.drop(finish(encodings))
        record = OptionRecord(label_for(bits), bits, size, drop, bound)
        records.append(record)
        if bound <= max_drop + 1e-12 and (best is None or size < best.nbytes):
            best = record
    return records


def measure_tree(composer: Composer, scoring: Scoring, forks: Sequence[Sequence[str]], samples: Acts,
                 widths: Sequence[int], max_drop: float, codec: str = "huffman",
                 progress: Callable[[str], None] | None = None) -> Tables:
    """Measure every composition of the tree, depth first (at most one set of tensors per fork held at once)."""
    tables = Tables(metric=scoring.metric, samples=len(samples), labelled=scoring.labels is not None,
                    float_score=scoring.float_score)
    blocks = len(forks)
    total = sum(int(np.prod([len(composer.blocks[i]) for i in range(f)])) for f in range(blocks + 1))
    done = [0]

    def visit(fork: int, path: Path, acts: Acts) -> None:
        done[0] += 1
        if progress is not None:
            progress(f"measuring the tree's compositions: node {done[0]}/{total}")
        base = not any(path)
        if fork == blocks:
            outputs = [a[composer.first_output] for a in acts]
            tables.edge[path] = (0.0, 0.0) if base else scoring.drop(outputs)
            return
        if base:
            for bits in widths:
                tables.books[(fork, bits)] = train_books(acts, forks[fork], bits, codec)
        tables.options[(fork, path)] = measure_fork(
            lambda encodings: composer.finish(acts, fork, encodings), scoring, acts, forks[fork], widths,
            lambda bits: tables.books.get((fork, bits), {}), base, max_drop, codec)
        for v in range(len(composer.blocks[fork])):
            visit(fork + 1, path + (v,), composer.advance(acts, fork, v))

    visit(0, (), samples)
    return tables


def spec_from_tables(cloud_ms: Sequence[float], blocks: Sequence[Sequence], tables: Tables,
                     rtt_ms: float) -> TreeSpec:
    """The ``TreeSpec`` of measured tables: each (fork, path)'s measured options (dominated widths left out)."""
    tree_blocks = [Block(f"b{i}", [Variant(v.name, float(v.edge_ms)) for v in variants])
                   for i, variants in enumerate(blocks)]

    def offload_options(fork: int, path) -> list[tuple]:
        return [(o.label, o.nbytes, o.bound) for o in tables.options[(fork, tuple(path))] if o.bound is not None]

    def edge_drop(path) -> float:
        return float(tables.edge[tuple(path)][1])

    return TreeSpec(tree_blocks, offload_options, lambda fork, path: float(cloud_ms[fork]), edge_drop, rtt_ms)
