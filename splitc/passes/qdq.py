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
import onnx_graphsurgeon as gs
from onnx import TensorProto, helper

from splitc.passes.base import Pass, PassError, PassResult, check_half
from splitc.wire import jpeg as codec_jpeg
from splitc.wire import quant
from splitc.wire.format import QUANT_BITS, RAW_BITS  # noqa: F401 (re-exported)
from splitc.widths import jpeg_quality, jpeg_width, width_order  # noqa: F401 (re-exported)

_TINY = np.float32(1e-30)
NOT_QUANTIZED = "no cut tensor is quantized (bits 32 or exact arrays)"


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


class _Surgery:
    """A half opened in graphsurgeon: its tensors by name, and the nodes added to it.

    New nodes get their attributes sorted, as ``onnx.helper.make_node`` does. ``write_back`` exports the
    graph's nodes, inputs and outputs into the model in place, keeping byte for byte what the surgery did not
    touch: the half's own nodes (graphsurgeon re-serialises them, subgraphs included), inputs and outputs,
    and every other field (initializers, value infos, opsets, functions), which it would reorder or add to.
    """

    def __init__(self, model: onnx.ModelProto) -> None:
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # graphsurgeon's export writes into the tensors it imported (their names)
        self.graph = gs.import_onnx(copy)
        _fail_unless(len(self.graph.nodes) == len(model.graph.node), "graphsurgeon did not import every node")
        self.original = {id(n): proto for n, proto in zip(self.graph.nodes, model.graph.node)}
        self.tensors = self.graph.tensors()
        self.nodes: list[gs.Node] = []

    def write_back(self, model: onnx.ModelProto) -> None:
        """Replace the model's nodes, inputs and outputs by the graph's (the surgery changes nothing else)."""
        exported = gs.export_onnx(self.graph).graph
        nodes = [self.original.get(id(n), proto) for n, proto in zip(self.graph.nodes, exported.node)]
        io = {v.name: v for v in [*model.graph.input, *model.graph.output]}
        half = onnx.GraphProto()
        half.CopyFrom(model.graph)
        for field, items in (("node", nodes), ("input", [io.get(v.name, v) for v in exported.input]),
                             ("output", [io.get(v.name, v) for v in exported.output])):
            half.ClearField(field)
            getattr(half, field).extend(items)
        model.graph.CopyFrom(half)

    def tensor(self, name: str) -> gs.Tensor:
        if name not in self.tensors:
            self.tensors[name] = gs.Variable(name)
        return self.tensors[name]

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> None:
        self.nodes.append(gs.Node(op, name, dict(sorted(attrs.items())), [self.tensor(i) for i in inputs],
                                  [self.tensor(o) for o in outputs]))

    def const(self, node: str, out: str, value) -> None:
        self.node("Constant", [], [out], node, value=gs.Constant(out, np.asarray(value)))


def _reduce(s: _Surgery, op: str, x: str, out: str, axes: list[int] | None, opset: int, name: str) -> None:
    keep = 0 if axes is None else 1
    if axes is None or opset < 18:
        extra = {} if axes is None else {"axes": axes}
        s.node(op, [x], [out], name, keepdims=keep, **extra)
        return
    s.const(f"{name}/axes", f"{out}/axes", np.array(axes, np.int64))
    s.node(op, [x, f"{out}/axes"], [out], name, keepdims=keep)


def quantize_nodes(s: _Surgery, enc: Encoding, rank: int, opset: int) -> None:
    """Add the nodes that turn ``enc.tensor`` into its wire tensors, in the edge half.

    A float16 or float64 tensor is cast to float32 first: the quantizer's arithmetic is float32's.
    """
    t = enc.tensor
    if enc.bits == 16:
        s.node("Cast", [t], [f"{t}.f16"], f"{t}/to_f16", to=TensorProto.FLOAT16)
        return
    q, lo, hi = enc.wire_names()
    p = f"{t}/quantize"
    axes = _reduce_axes(rank, enc.axis)
    if np.dtype(enc.dtype) != np.float32:
        s.node("Cast", [t], [f"{p}/f32"], f"{p}/to_f32", to=TensorProto.FLOAT)
        t = f"{p}/f32"
    _reduce(s, "ReduceMin", t, lo, axes, opset, f"{p}/min")
    _reduce(s, "ReduceMax", t, hi, axes, opset, f"{p}/max")
    for what, value in (("levels", np.float32((1 << enc.bits) - 1)), ("tiny", _TINY), ("half", np.float32(0.5))):
        s.const(f"{p}/{what}", f"{p}/{what}", value)
    s.node("Sub", [hi, lo], [f"{p}/range"], f"{p}/range")
    s.node("Max", [f"{p}/range", f"{p}/tiny"], [f"{p}/safe"], f"{p}/safe")
    s.node("Div", [f"{p}/levels", f"{p}/safe"], [f"{p}/scale"], f"{p}/scale")
    s.node("Sub", [t, lo], [f"{p}/shifted"], f"{p}/shifted")
    s.node("Mul", [f"{p}/shifted", f"{p}/scale"], [f"{p}/scaled"], f"{p}/scaled")
    s.node("Add", [f"{p}/scaled", f"{p}/half"], [f"{p}/biased"], f"{p}/biased")
    s.node("Floor", [f"{p}/biased"], [f"{p}/rounded"], f"{p}/rounded")
    s.node("Cast", [f"{p}/rounded"], [q], f"{p}/cast", to=TensorProto.UINT8)


def dequantize_nodes(s: _Surgery, enc: Encoding) -> None:
    """Add the nodes that rebuild ``enc.tensor`` from its wire tensors, in the cloud half (in its own dtype)."""
    t = enc.tensor
    elem = helper.np_dtype_to_tensor_dtype(np.dtype(enc.dtype))
    if enc.bits == 16:
        s.node("Cast", [f"{t}.f16"], [t], f"{t}/from_f16", to=elem)
        return
    q, lo, hi = enc.wire_names()
    p = f"{t}/dequantize"
    out = t if np.dtype(enc.dtype) == np.float32 else f"{p}/f32"
    s.const(f"{p}/levels", f"{p}/levels", np.float32((1 << enc.bits) - 1))
    s.node("Cast", [q], [f"{p}/qf"], f"{p}/cast", to=TensorProto.FLOAT)
    s.node("Sub", [hi, lo], [f"{p}/range"], f"{p}/range")
    s.node("Div", [f"{p}/range", f"{p}/levels"], [f"{p}/step"], f"{p}/step")
    s.node("Mul", [f"{p}/qf", f"{p}/step"], [f"{p}/scaled"], f"{p}/scaled")
    s.node("Add", [f"{p}/scaled", lo], [out], f"{p}/shift")
    if out != t:
        s.node("Cast", [out], [t], f"{p}/to_{enc.dtype}", to=elem)


def _wire_types(s: _Surgery, enc: Encoding, shape: list[int]) -> list[gs.Tensor]:
    """The wire tensors, typed and shaped (they become graph outputs or inputs)."""
    names = enc.wire_names()
    ranges = _range_shape(shape, enc.axis)
    types = {32: [np.dtype(enc.dtype)], 16: [np.float16]}.get(enc.bits, [np.uint8, np.float32, np.float32])
    shapes = [shape] if enc.bits in RAW_BITS else [shape, ranges, ranges]
    tensors = []
    for name, dtype, dims in zip(names, types, shapes):
        tensor = s.tensor(name)
        tensor.dtype, tensor.shape = np.dtype(dtype), list(dims)
        tensors.append(tensor)
    return tensors


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _shape_of(info: onnx.ValueInfoProto) -> list[int]:
    return [d.dim_value for d in info.type.tensor_type.shape.dim]


def _fail_unless(ok: bool, message: str) -> None:
    if not ok:
        raise PassError(message)


class InsertQuantize(Pass):
    """Edge half, in place: each encoded cut output is replaced by its wire tensors (``Encoding.wire_names``).

    ``keep`` names cut tensors that are also model outputs computed on the edge: they stay as outputs too.
    Nodes are appended after the half's own, in the order of ``encodings``. Tensors at 32 bits cross as
    they are (raw float32 or exact arrays): the pass leaves them alone.
    """

    name = "insert-quantize"

    def __init__(self, encodings: list[Encoding], keep: set[str] = frozenset()) -> None:
        self.encodings, self.keep = [e for e in encodings if e.bits != 32], set(keep)

    def requires(self, model: onnx.ModelProto) -> None:
        """Every encoded tensor is an output of the half."""
        outputs = {o.name for o in model.graph.output}
        missing = [e.tensor for e in self.encodings if e.tensor not in outputs]
        _fail_unless(not missing, f"cut tensors that are not outputs of the edge half: {missing}")

    def run(self, model: onnx.ModelProto) -> PassResult:
        """Append the quantizers and replace the outputs; not applicable when every cut tensor is sent as is."""
        if not self.encodings:
            return PassResult.fail(model, NOT_QUANTIZED)
        shapes = {o.name: _shape_of(o) for o in model.graph.output}
        s = _Surgery(model)
        graph = s.graph
        encoded = {e.tensor for e in self.encodings}
        outputs = [o for o in graph.outputs if o.name not in encoded or o.name in self.keep]
        for enc in self.encodings:
            quantize_nodes(s, enc, len(shapes[enc.tensor]), _opset(model))
            outputs.extend(_wire_types(s, enc, shapes[enc.tensor]))
        graph.nodes.extend(s.nodes)
        graph.outputs = outputs
        s.write_back(model)
        return PassResult(model, True)

    def ensures(self, model: onnx.ModelProto) -> None:
        """The half passes the full ONNX check and outputs every wire tensor."""
        check_half(model)
        outputs = {o.name for o in model.graph.output}
        missing = [n for e in self.encodings for n in e.wire_names() if n not in outputs]
        _fail_unless(not missing, f"wire tensors missing from the edge half's outputs: {missing}")


class InsertDequantize(Pass):
    """Cloud half, in place: each encoded cut input is rebuilt from its wire tensors, under its own name.

    The dequantizers come first, in the order of the half's inputs. Tensors at 32 bits are left alone.
    """

    name = "insert-dequantize"

    def __init__(self, encodings: list[Encoding]) -> None:
        self.encodings = [e for e in encodings if e.bits != 32]

    def requires(self, model: onnx.ModelProto) -> None:
        """Every encoded tensor is an input of the half."""
        inputs = {i.name for i in model.graph.input}
        missing = [e.tensor for e in self.encodings if e.tensor not in inputs]
        _fail_unless(not missing, f"cut tensors that are not inputs of the cloud half: {missing}")

    def run(self, model: onnx.ModelProto) -> PassResult:
        """Prepend the dequantizers and replace the inputs; not applicable when every cut tensor is sent as is."""
        if not self.encodings:
            return PassResult.fail(model, NOT_QUANTIZED)
        shapes = {i.name: _shape_of(i) for i in model.graph.input}
        s = _Surgery(model)
        graph = s.graph
        inputs = []
        for tensor in graph.inputs:
            enc = next((e for e in self.encodings if e.tensor == tensor.name), None)
            if enc is None:
                inputs.append(tensor)
                continue
            inputs.extend(_wire_types(s, enc, shapes[enc.tensor]))
            dequantize_nodes(s, enc)
        graph.nodes[:0] = s.nodes
        graph.inputs = inputs
        s.write_back(model)
        return PassResult(model, True)

    def ensures(self, model: onnx.ModelProto) -> None:
        """The half passes the full ONNX check and reads every wire tensor."""
        check_half(model)
        inputs = {i.name for i in model.graph.input}
        missing = [n for e in self.encodings for n in e.wire_names() if n not in inputs]
        _fail_unless(not missing, f"wire tensors missing from the cloud half's inputs: {missing}")


def insert_quantize(edge: onnx.ModelProto, encodings: list[Encoding], keep: set[str] = frozenset()) -> None:
    """Edge half, in place: ``InsertQuantize(encodings, keep)`` run once."""
    InsertQuantize(encodings, keep)(edge)


def insert_dequantize(cloud: onnx.ModelProto, encodings: list[Encoding]) -> None:
    """Cloud half, in place: ``InsertDequantize(encodings)`` run once."""
    InsertDequantize(encodings)(cloud)


def simulate(x: np.ndarray, enc: Encoding) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The edge half's quantizer in numpy float32: ``(q, min, max)``, bit for bit.

    It is the wire's own quantizer (``splitc.wire.quant.quantize``, which the inserted ONNX nodes
    compute); per-channel ranges come back with the tensor's rank (size 1 off the axis), as the edge
    half's ReduceMin/ReduceMax give them.
    """
    x = np.asarray(x, dtype=np.float32)
    q, lo, hi = quant.quantize(x, enc.bits, enc.axis)
    if enc.axis is None:
        return q, np.asarray(lo, np.float32), np.asarray(hi, np.float32)
    shape = _range_shape(list(x.shape), enc.axis)
    return q, np.reshape(lo, shape), np.reshape(hi, shape)


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
