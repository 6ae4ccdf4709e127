"""The stitched graph: edge half + HuffmanEncode → HuffmanDecode + cloud half, as one model.

In the emitted artifacts the codec ops are lifted out into ``plan.json``
(``cut[].codec``) and the runtime executes them; this module puts them back, in
the ``ai.splitc`` domain, so that the whole path — quantizer, codec and
dequantizer included — can be checked in onnx's reference evaluator with the
kernels in ``HUFFMAN_OPS``.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, compose, helper, numpy_helper
from onnx.reference.op_run import OpRun

from splitc.wire import codec

DOMAIN = "ai.splitc"
CLOUD_PREFIX = "cloud/"


def _ranges(value: np.ndarray):
    value = np.asarray(value, np.float32)
    return float(value) if value.ndim == 0 else value.reshape(-1)


def _book(codebook: np.ndarray | None) -> codec.Codebook | None:
    if codebook is None or codebook.size == 0:
        return None
    return codec.Codebook.from_bytes(codebook.tobytes())


class HuffmanEncode(OpRun):
    """(q uint8, min, max[, codebook uint8]) → frame uint8[n]: one wire-format frame."""

    op_domain = DOMAIN

    def _run(self, q, lo, hi, codebook=None, bits=8, axis=-1):
        frame = codec.encode(q, int(bits), _ranges(lo), _ranges(hi), codebook=_book(codebook),
                             per_channel_axis=None if axis < 0 else int(axis))
        return (np.frombuffer(frame, dtype=np.uint8).copy(),)


class HuffmanDecode(OpRun):
    """frame uint8[n][, codebook uint8] → (q uint8, min, max), with the shape of the ranges as an attribute."""

    op_domain = DOMAIN

    def _run(self, frame, codebook=None, range_shape=None):
        q, meta = codec.decode(np.asarray(frame, np.uint8).tobytes(), codebook=_book(codebook))
        shape = list(range_shape or [])
        lo = np.asarray(meta.lo, np.float32).reshape(shape)
        hi = np.asarray(meta.hi, np.float32).reshape(shape)
        return (np.asarray(q, np.uint8).reshape(meta.shape), lo, hi)


HUFFMAN_OPS = [HuffmanEncode, HuffmanDecode]


def _frame_info(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.UINT8, ["frame_bytes"])


def _huffman_entries(plan: dict) -> list[dict]:
    entries = [c for c in plan["cut"] if c["codec"]["name"] == "huffman"]
    if len(entries) != len(plan["cut"]):
        raise ValueError("the stitched graph needs every cut tensor Huffman-coded")
    return entries


def _with_domain(model: onnx.ModelProto) -> onnx.ModelProto:
    if all(o.domain != DOMAIN for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return model


def _encode_side(edge: onnx.ModelProto, plan: dict, books: dict[str, bytes]) -> onnx.ModelProto:
    model = _with_domain(onnx.ModelProto())
    model.CopyFrom(edge)
    _with_domain(model)
    wire = {n for c in plan["cut"] for n in c["wire"]}
    outputs = [o for o in model.graph.output if o.name not in wire]
    for entry in _huffman_entries(plan):
        t = entry["tensor"]
        inputs = list(entry["wire"])
        if t in books:
            model.graph.initializer.append(numpy_helper.from_array(np.frombuffer(books[t], np.uint8), f"{t}.codebook"))
            inputs.append(f"{t}.codebook")
        axis = -1 if entry.get("axis") is None else entry["axis"]
        model.graph.node.append(helper.make_node("HuffmanEncode", inputs, [f"{t}.frame"], name=f"{t}/encode",
                                                 domain=DOMAIN, bits=entry["bits"], axis=axis))
        outputs.append(_frame_info(f"{t}.frame"))
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    return model


def _decode_side(cloud: onnx.ModelProto, plan: dict, books: dict[str, bytes]) -> onnx.ModelProto:
    model = _with_domain(compose.add_prefix(cloud, CLOUD_PREFIX))
    ranges = {i.name: [d.dim_value for d in i.type.tensor_type.shape.dim] for i in cloud.graph.input}
    decoders, frames = [], []
    for entry in _huffman_entries(plan):
        t = entry["tensor"]
        inputs = [f"{t}.frame"]
        if t in books:
            model.graph.initializer.append(numpy_helper.from_array(np.frombuffer(books[t], np.uint8), f"{t}.codebook.cloud"))
            inputs.append(f"{t}.codebook.cloud")
        outputs = [CLOUD_PREFIX + n for n in entry["wire"]]
        node = helper.make_node("HuffmanDecode", inputs, outputs, name=f"{t}/decode", domain=DOMAIN)
        node.attribute.append(helper.make_attribute("range_shape", ranges[entry["wire"][1]], attr_type=onnx.AttributeProto.INTS))
        decoders.append(node)
        frames.append(_frame_info(f"{t}.frame"))
    finals = [helper.make_node("Identity", [o.name], [o.name[len(CLOUD_PREFIX):]], name=f"{o.name}/out")
              for o in model.graph.output]
    nodes = decoders + list(model.graph.node) + finals
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    outputs = []
    for info in model.graph.output:
        renamed = onnx.ValueInfoProto()
        renamed.CopyFrom(info)
        renamed.name = info.name[len(CLOUD_PREFIX):]
        outputs.append(renamed)
    del model.graph.input[:]
    model.graph.input.extend(frames)
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    return model


def stitched_model(edge: onnx.ModelProto, cloud: onnx.ModelProto, plan: dict,
                   books: dict[str, bytes] | None = None) -> onnx.ModelProto:
    """One model from the model inputs to its outputs, with the codec ops at the cut.

    The frames stay visible as extra outputs (``<tensor>.frame``).
    """
    books = books or {}
    encode = _encode_side(edge, plan, books)
    decode = _decode_side(cloud, plan, books)
    io_map = [(f"{c['tensor']}.frame", f"{c['tensor']}.frame") for c in plan["cut"]]
    merged = compose.merge_models(encode, decode, io_map=io_map,
                                  outputs=[o.name for o in encode.graph.output] + [o.name for o in decode.graph.output])
    merged.producer_name = "splitc"
    return merged
