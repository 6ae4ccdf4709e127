"""Quantize/dequantize insertion at the cut, with standard ONNX ops (JALAD's step quantizer).

Mark, then insert: an ``Encoding`` says what happens to one cut tensor; the
rewrites below add the nodes to the edge half (which then outputs the uint8
symbols with their per-request min and max) and to the cloud half (which
rebuilds the float tensor under its original name).

    q = floor((x - min) * (2^c - 1) / (max - min) + 0.5)      uint8, edge
    x' = q * ((max - min) / (2^c - 1)) + min                   float32, cloud

A constant tensor (max == min) is guarded with ``Max(max - min, tiny)`` and
quantizes to zeros. Only ops available since opset 7 are used (Floor rather
than Round), so every model splitc accepts can carry them. ``simulate`` is the
same arithmetic in numpy float32, bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from splitc.runtime import codec_jpeg
from splitc.widths import jpeg_quality, jpeg_width, width_order  # noqa: F401 (re-exported)

RAW_BITS = (16, 32)
QUANT_BITS = tuple(range(1, 9))
_TINY = np.float32(1e-30)


@dataclass(frozen=True)
class Encoding:
    """How one cut tensor crosses the network."""

    tensor: str
    bits: int = 32
    axis: int | None = None  # per-channel axis; None quantizes per tensor
    codec: str = "none"  # "huffman", "none", or "jpeg" (lossy; 8 bits, per tensor, image-shaped)
    quality: int = 0  # JPEG quality 1..100 (codec "jpeg" only)
    dtype: str = "float32"  # the tensor's dtype; integer and bool tensors are only ever sent exactly (bits 32)
    # float16/float64 tensors: quantized through float32 (a Cast on each side), or exact in their own dtype

    def __post_init__(self) -> None:
        if self.bits not in QUANT_BITS + RAW_BITS:
            raise ValueError(f"bits must be 1..8, 16 or 32, not {self.bits}")
        if not is_float(self.dtype) and (self.bits != 32 or self.codec != "none"):
            raise ValueError(f"a {self.dtype} tensor is sent exactly: bits 32 and no codec")
        if self.codec == "jpeg" and (self.bits != 8 or self.axis is not None or not 1 <= self.quality <= 100):
            raise ValueError("a JPEG-coded tensor needs 8 bits, a per-tensor range and a quality of 1..100")

    @property
    def exact_array(self) -> bool:
        """Sent exactly as a plain array in its own dtype: an integer or bool tensor (never quantized), or an
        unquantized float tensor that is not float32 (float16, float64)."""
        return not is_float(self.dtype) or (self.bits == 32 and np.dtype(self.dtype) != np.float32)

    @property
    def quantized(self) -> bool:
        return self.bits <= 8

    def wire_names(self) -> list[str]:
        """The edge-half outputs (= cloud-half inputs) that carry this tensor."""
        if self.quantized:
            return [f"{self.tensor}.q", f"{self.tensor}.min", f"{self.tensor}.max"]
        if self.bits == 16:
            return [f"{self.tensor}.f16"]
        return [self.tensor]


def is_float(dtype) -> bool:
    """True for floating-point dtypes (the ones quantization and ``--bits`` apply to)."""
    return np.dtype(dtype).kind == "f"


def encoding_for(tensor: str, width: int | str, axis: int | None, codec: str, dtype="float32") -> Encoding:
    """The Encoding of ``tensor`` at a calibration width: an int bit width, or ``jpeg_width(q)``.

    Integer and bool tensors ignore the width: they cross exactly, in their own dtype.
    """
    dtype = str(np.dtype(dtype))
    if not is_float(dtype):
        return Encoding(tensor, 32, None, "none", dtype=dtype)
    if isinstance(width, str):
        return Encoding(tensor, 8, None, "jpeg", jpeg_quality(width), dtype=dtype)
    return Encoding(tensor, width, axis, codec if width <= 8 else "none", dtype=dtype)


def _reduce_axes(rank: int, axis: int | None) -> list[int] | None:
    if axis is None:
        return None
    return [i for i in range(rank) if i != axis % rank]


def _range_shape(shape: list[int], axis: int | None) -> list[int]:
    if axis is None:
        return []
    return [d if i == axis % len(shape) else 1 for i, d in enumerate(shape)]


def _reduce(op: str, x: str, out: str, axes: list[int] | None, opset: int, name: str) -> list[onnx.NodeProto]:
    keep = 0 if axes is None else 1
    if axes is None or opset < 18:
        extra = {} if axes is None else {"axes": axes}
        return [helper.make_node(op, [x], [out], name=name, keepdims=keep, **extra)]
    axes_name = f"{out}/axes"
    const = helper.make_node("Constant", [], [axes_name], name=f"{name}/axes",
                             value=numpy_helper.from_array(np.array(axes, np.int64), axes_name))
    return [const, helper.make_node(op, [x, axes_name], [out], name=name, keepdims=keep)]


def _const(name: str, value) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=name, value=numpy_helper.from_array(np.asarray(value), name))


def quantize_nodes(enc: Encoding, rank: int, opset: int) -> list[onnx.NodeProto]:
    """Nodes that turn ``enc.tensor`` into its wire tensors, in the edge half.

    A float16 or float64 tensor is cast to float32 first: the quantizer's arithmetic is float32's.
    """
    t = enc.tensor
    if enc.bits == 16:
        return [helper.make_node("Cast", [t], [f"{t}.f16"], name=f"{t}/to_f16", to=TensorProto.FLOAT16)]
    q, lo, hi = enc.wire_names()
    p = f"{t}/quantize"
    axes = _reduce_axes(rank, enc.axis)
    widen = []
    if np.dtype(enc.dtype) != np.float32:
        widen = [helper.make_node("Cast", [t], [f"{p}/f32"], name=f"{p}/to_f32", to=TensorProto.FLOAT)]
        t = f"{p}/f32"
    return [
        *widen,
        *_reduce("ReduceMin", t, lo, axes, opset, f"{p}/min"),
        *_reduce("ReduceMax", t, hi, axes, opset, f"{p}/max"),
        _const(f"{p}/levels", np.float32((1 << enc.bits) - 1)),
        _const(f"{p}/tiny", _TINY),
        _const(f"{p}/half", np.float32(0.5)),
        helper.make_node("Sub", [hi, lo], [f"{p}/range"], name=f"{p}/range"),
        helper.make_node("Max", [f"{p}/range", f"{p}/tiny"], [f"{p}/safe"], name=f"{p}/safe"),
        helper.make_node("Div", [f"{p}/levels", f"{p}/safe"], [f"{p}/scale"], name=f"{p}/scale"),
        helper.make_node("Sub", [t, lo], [f"{p}/shifted"], name=f"{p}/shifted"),
        helper.make_node("Mul", [f"{p}/shifted", f"{p}/scale"], [f"{p}/scaled"], name=f"{p}/scaled"),
        helper.make_node("Add", [f"{p}/scaled", f"{p}/half"], [f"{p}/biased"], name=f"{p}/biased"),
        helper.make_node("Floor", [f"{p}/biased"], [f"{p}/rounded"], name=f"{p}/rounded"),
        helper.make_node("Cast", [f"{p}/rounded"], [q], name=f"{p}/cast", to=TensorProto.UINT8),
    ]


def dequantize_nodes(enc: Encoding) -> list[onnx.NodeProto]:
    """Nodes that rebuild ``enc.tensor`` from its wire tensors, in the cloud half (in its own dtype)."""
    t = enc.tensor
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(enc.dtype))
    if enc.bits == 16:
        return [helper.make_node("Cast", [f"{t}.f16"], [t], name=f"{t}/from_f16", to=elem)]
    q, lo, hi = enc.wire_names()
    p = f"{t}/dequantize"
    narrow = []
    if np.dtype(enc.dtype) != np.float32:
        narrow = [helper.make_node("Cast", [f"{p}/f32"], [t], name=f"{p}/to_{enc.dtype}", to=elem)]
        t = f"{p}/f32"
    return [
        _const(f"{p}/levels", np.float32((1 << enc.bits) - 1)),
        helper.make_node("Cast", [q], [f"{p}/qf"], name=f"{p}/cast", to=TensorProto.FLOAT),
        helper.make_node("Sub", [hi, lo], [f"{p}/range"], name=f"{p}/range"),
        helper.make_node("Div", [f"{p}/range", f"{p}/levels"], [f"{p}/step"], name=f"{p}/step"),
        helper.make_node("Mul", [f"{p}/qf", f"{p}/step"], [f"{p}/scaled"], name=f"{p}/scaled"),
        helper.make_node("Add", [f"{p}/scaled", lo], [t], name=f"{p}/shift"),
        *narrow,
    ]


def wire_value_infos(enc: Encoding, shape: list[int]) -> list[onnx.ValueInfoProto]:
    """Types and shapes of the wire tensors."""
    names = enc.wire_names()
    if enc.bits == 32:
        return [helper.make_tensor_value_info(names[0], helper.np_dtype_to_tensor_dtype(np.dtype(enc.dtype)),
                                              shape)]
    if enc.bits == 16:
        return [helper.make_tensor_value_info(names[0], TensorProto.FLOAT16, shape)]
    ranges = _range_shape(shape, enc.axis)
    return [
        helper.make_tensor_value_info(names[0], TensorProto.UINT8, shape),
        helper.make_tensor_value_info(names[1], TensorProto.FLOAT, ranges),
        helper.make_tensor_value_info(names[2], TensorProto.FLOAT, ranges),
    ]


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _shape_of(info: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value for d in info.type.tensor_type.shape.dim]


def insert_quantize(edge: onnx.ModelProto, encodings: list[Encoding], keep: set[str] = frozenset()) -> None:
    """Edge half, in place: each encoded cut output is replaced by its wire tensors.

    ``keep`` names cut tensors that are also model outputs computed on the edge:
    they stay as outputs too.
    """
    outputs = {o.name: o for o in edge.graph.output}
    new_outputs = [o for o in edge.graph.output if o.name not in {e.tensor for e in encodings} or o.name in keep]
    for enc in encodings:
        if enc.bits == 32:
            if enc.tensor not in {o.name for o in new_outputs}:
                new_outputs.append(outputs[enc.tensor])
            continue
        shape = _shape_of(outputs[enc.tensor])
        edge.graph.node.extend(quantize_nodes(enc, len(shape), _opset(edge)))
        new_outputs.extend(wire_value_infos(enc, shape))
    del edge.graph.output[:]
    edge.graph.output.extend(new_outputs)


def insert_dequantize(cloud: onnx.ModelProto, encodings: list[Encoding]) -> None:
    """Cloud half, in place: each encoded cut input is rebuilt from its wire tensors."""
    inputs = {i.name: i for i in cloud.graph.input}
    new_inputs, prologue = [], []
    for info in cloud.graph.input:
        enc = next((e for e in encodings if e.tensor == info.name), None)
        if enc is None or enc.bits == 32:
            new_inputs.append(info)
            continue
        new_inputs.extend(wire_value_infos(enc, _shape_of(inputs[enc.tensor])))
        prologue.extend(dequantize_nodes(enc))
    del cloud.graph.input[:]
    cloud.graph.input.extend(new_inputs)
    nodes = prologue + list(cloud.graph.node)
    del cloud.graph.node[:]
    cloud.graph.node.extend(nodes)


def simulate(x: np.ndarray, enc: Encoding) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The edge half's quantizer in numpy float32: ``(q, min, max)``, bit for bit."""
    x = np.asarray(x, dtype=np.float32)
    axes = _reduce_axes(x.ndim, enc.axis)
    keep = axes is not None
    lo = x.min(axis=None if axes is None else tuple(axes), keepdims=keep).astype(np.float32)
    hi = x.max(axis=None if axes is None else tuple(axes), keepdims=keep).astype(np.float32)
    levels = np.float32((1 << enc.bits) - 1)
    scale = levels / np.maximum(hi - lo, _TINY)
    q = np.floor((x - lo) * scale + np.float32(0.5)).astype(np.uint8)
    return q, lo, hi


def simulate_dequantize(q: np.ndarray, lo: np.ndarray, hi: np.ndarray, bits: int) -> np.ndarray:
    """The cloud half's dequantizer in numpy float32, bit for bit."""
    step = (np.asarray(hi, np.float32) - np.asarray(lo, np.float32)) / np.float32((1 << bits) - 1)
    return q.astype(np.float32) * step + np.asarray(lo, np.float32)


def round_trip(x: np.ndarray, enc: Encoding) -> np.ndarray:
    """What the cloud half sees for ``x`` after the wire."""
    if enc.exact_array:
        return np.asarray(x)
    own = np.asarray(x).dtype if np.asarray(x).dtype.kind == "f" else np.dtype(np.float32)
    if enc.bits == 32:
        return np.asarray(x, np.float32)
    if enc.bits == 16:
        return np.asarray(x).astype(np.float16).astype(own)
    q, lo, hi = simulate(x, enc)
    if enc.codec == "jpeg":
        q = codec_jpeg.round_trip(q, enc.quality)
    return simulate_dequantize(q, lo, hi, enc.bits).astype(own)
