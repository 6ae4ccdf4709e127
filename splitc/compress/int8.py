"""INT8 edge halves: static QDQ quantization with onnxruntime, calibrated on the half's own inputs.

``int8_edge`` runs ``onnxruntime.quantization.quantize_static`` in the QDQ format: every quantized
tensor goes through a QuantizeLinear/DequantizeLinear pair carrying its scale and zero point, which
onnxruntime's CPU provider fuses into integer kernels (QLinearConv, QLinearMatMul) and other runtimes
read as they are. The half is first prepared as onnxruntime's guide recommends (shape inference,
then its basic graph optimizations, which fold BatchNormalization into the convolution before it is
quantized). Weights are quantized per output channel (``per_channel=True``); activation ranges
are the min/max seen over the calibration feeds, which are samples of the *half's inputs* (for an
edge half, the model's inputs).

Both activations and weights are signed 8-bit (``QInt8``, "S8S8"): onnxruntime's quantization guide
recommends S8S8 in the QDQ format as the first choice for speed and accuracy on CPU (its x86 provider
turns S8 activations into the U8 form its kernels use; its Arm kernels take S8 directly), and signed
activations keep a symmetric range for tensors that go negative. The half keeps its input and output
names and its float32 inputs and outputs: the quantizer at the cut, the wire format and the cloud
half are unchanged. ``quantize_static`` writes files; they go to a temporary directory, never to the
working directory.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quant_pre_process,
    quantize_static,
)

from splitc.errors import SplitcError
from splitc.frontend.shapes import real_inputs
from splitc.passes.base import Pass, PassError, PassResult, check_half

QDQ_OPS = ("QuantizeLinear", "DequantizeLinear")
PER_CHANNEL_OPSET = 13


class FeedReader(CalibrationDataReader):
    """Hands ``quantize_static`` the calibration feeds one at a time (``rewind`` starts over)."""

    def __init__(self, feeds: Sequence[Mapping[str, np.ndarray]]) -> None:
        self.feeds = [{name: np.asarray(value) for name, value in feed.items()} for feed in feeds]
        self._next = 0

    def get_next(self) -> dict | None:
        """The next feed, or None after the last."""
        if self._next >= len(self.feeds):
            return None
        self._next += 1
        return self.feeds[self._next - 1]

    def rewind(self) -> None:
        """Start again from the first feed."""
        self._next = 0

    def __len__(self) -> int:
        return len(self.feeds)


def _check_feeds(model: onnx.ModelProto, feeds) -> list[dict[str, np.ndarray]]:
    feeds = [feeds] if isinstance(feeds, Mapping) else list(feeds)
    if not feeds:
        raise SplitcError("int8 quantization needs at least one calibration feed for the edge half's inputs")
    names = [i.name for i in real_inputs(model)]
    for k, feed in enumerate(feeds):
        missing = [n for n in names if n not in feed]
        if missing:
            raise SplitcError(f"calibration feed {k} lacks the edge half's input(s) {', '.join(missing)}")
    return [{n: np.asarray(feed[n]) for n in names} for feed in feeds]


def _io(model: onnx.ModelProto) -> list[list[tuple[str, int]]]:
    """The names and element types of the half's inputs and of its outputs."""
    return [[(v.name, v.type.tensor_type.elem_type) for v in values]
            for values in (real_inputs(model), model.graph.output)]


def _at_opset(model: onnx.ModelProto, version: int) -> onnx.ModelProto:
    """A copy of ``model`` at ONNX opset ``version`` or later (per-axis DequantizeLinear needs 13)."""
    current = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), version)
    if current >= version:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        return copy
    try:
        return onnx.version_converter.convert_version(model, version)
    except Exception as exc:  # the converter raises bare RuntimeErrors and ValueErrors per op
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SplitcError(f"int8 quantization needs opset {version}; converting opset {current}: {reason}") from exc


def _without_unused_domains(model: onnx.ModelProto) -> onnx.ModelProto:
    """Drop the opset imports of domains no node uses (onnxruntime's optimizer lists all it knows)."""
    used = {n.domain for n in model.graph.node} | {""}
    kept = [o for o in model.opset_import if o.domain in used or o.domain == "ai.onnx"]
    del model.opset_import[:]
    model.opset_import.extend(kept)
    return model


def int8_edge(model: onnx.ModelProto, feeds) -> onnx.ModelProto:
    """``model`` (an edge half) statically quantized to INT8 in the QDQ format, its float32 I/O kept.

    ``feeds`` is one feed or a list of feeds (input name -> array) for the half's inputs; their value
    ranges calibrate the activations. Raises ``SplitcError`` when a feed lacks an input, the half has no
    nodes, or the quantized half would not keep its input and output names and types.
    """
    if not model.graph.node:
        raise SplitcError("the edge half has no nodes to quantize")
    samples = _check_feeds(model, feeds)
    source = _at_opset(model, PER_CHANNEL_OPSET)
    with tempfile.TemporaryDirectory(prefix="splitc-int8-") as tmp:
        original, prepared, path = (Path(tmp) / f"{stage}.onnx" for stage in ("float", "prepared", "int8"))
        onnx.save(source, str(original))
        # shape inference and onnxruntime's basic graph optimizations (BatchNormalization folded into Conv)
        quant_pre_process(str(original), str(prepared), skip_symbolic_shape=True)
        quantize_static(prepared, path, FeedReader(samples), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        quantized = _without_unused_domains(onnx.load(str(path)))
    if _io(quantized) != _io(model):
        raise SplitcError("the int8 rewrite changed the edge half's input or output names or types")
    return quantized


class ToInt8Edge(Pass):
    """The edge half quantized to INT8 (``int8_edge``), calibrated on ``feeds`` for the half's inputs."""

    name = "int8"

    def __init__(self, feeds) -> None:
        self.feeds = feeds

    def requires(self, model: onnx.ModelProto) -> None:
        """Every input and output of the half is a float32 tensor (the quantizer keeps them float)."""
        bad = [v.name for v in [*real_inputs(model), *model.graph.output]
               if v.type.tensor_type.elem_type != onnx.TensorProto.FLOAT]
        if bad:
            raise PassError(f"inputs or outputs that are not float32 tensors: {bad}")

    def run(self, model: onnx.ModelProto) -> PassResult:
        """Quantize; not applicable to a half with no nodes or with nothing the quantizer handles."""
        if not model.graph.node:
            return PassResult.fail(model, "the edge half has no nodes")
        quantized = int8_edge(model, self.feeds)
        if not any(node.op_type in QDQ_OPS for node in quantized.graph.node):
            return PassResult.fail(model, "the edge half has no operator the int8 quantizer handles")
        return PassResult(quantized, True)

    def ensures(self, model: onnx.ModelProto) -> None:
        """The quantized half passes the full ONNX check."""
        check_half(model)
