"""Wire codec, decoding: a frame back to symbols (or float values) and its ``Meta``."""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise

import numpy as np

from splitc.wire import backend as _backend
from splitc.wire import huffman as hf
from splitc.wire import jpeg as codec_jpeg
from splitc.wire import lengths as codec_lengths
from splitc.wire.backend import _buffer, _unpack
from splitc.wire.codebook import Codebook
from splitc.wire.format import (
    _FIXED,
    _KERNEL_ERRORS,
    DTYPES,
    FILTER_DELTA,
    FILTER_MED,
    FILTER_NAMES,
    HUFFMAN_MODES,
    MODE_CONSTANT,
    MODE_EMBEDDED,
    MODE_JPEG,
    MODE_NAMES,
    MODE_PACKED,
    MODE_RAW,
    MODE_STATIC,
    BadHeader,
    CorruptPayload,
    InvalidCodebook,
    LengthMismatch,
    Meta,
    ShapeOverflow,
    _check_element_count,
    _check_fixed,
    _check_lengths,
    _element_limit,
    _nibble_bytes,
    _parse_fixed,
    _read_scales,
    _Reader,
    _unpack_nibbles,
)
from splitc.wire.quant import dequantize


def _unpack_bits(payload, n: int, bits: int) -> np.ndarray:
    need = (n * bits + 7) // 8
    if len(payload) != need:
        raise LengthMismatch(f"packed mode needs {need} payload bytes for {n} symbols, the frame has {len(payload)}")
    return _unpack(payload, n, bits)


def _find_codebook(codebook, wanted: int) -> Codebook:
    books = []
    if isinstance(codebook, Codebook):
        books = [codebook]
    elif isinstance(codebook, Mapping):
        books = list(codebook.values())
    elif codebook is not None:
        books = list(codebook)
    for book in books:
        if isinstance(book, Codebook) and book.id == wanted:
            return book
    raise InvalidCodebook(f"frame uses static codebook id {wanted:#010x}, which was not given to decode")


def _read_code_lengths(reader, mode, bits, dominant, codebook):
    """(code lengths of all contexts back to back, literal classes, thresholds, codebook id)."""
    size_a, size_b = hf.alphabet_sizes(bits)
    if mode == MODE_STATIC:
        (wanted,) = reader.u32(1, "codebook id")
        book = _find_codebook(codebook, wanted)
        if book.bits != bits or book.dominant != dominant:
            raise InvalidCodebook(
                f"codebook {wanted:#010x} is for bits {book.bits} / dominant {book.dominant}, "
                f"the frame has bits {bits} / dominant {dominant}"
            )
        return np.concatenate([book.lengths_a, book.lengths_b]), 1, (), wanted
    if mode == MODE_EMBEDDED:
        lengths = _unpack_nibbles(reader.take(_nibble_bytes(bits), "code lengths"), size_a + size_b)
        _check_lengths(lengths[:size_a], lengths[size_a:], bits, dominant)
        return lengths, 1, (), None
    head = reader.take(6, "context section")
    classes, section = head[0], int.from_bytes(head[4:6], "little")
    data = np.frombuffer(reader.take(section, "compact code lengths"), np.uint8)
    thresholds = tuple(head[1:classes])
    if not 1 <= classes <= hf.MAX_CLASSES:
        raise BadHeader(f"context mode: {classes} literal classes, 1..{hf.MAX_CLASSES} allowed")
    if any(head[1 + i] for i in range(classes - 1, 3)) or not all(
        1 <= t <= 1 << (bits - 1) for t in thresholds
    ) or any(a >= b for a, b in pairwise(thresholds)):
        raise BadHeader(f"context mode: class thresholds {tuple(head[1:4])} are not increasing in "
                        f"1..{1 << (bits - 1)} (unused ones 0)")
    lengths, status = codec_lengths.unpack_lengths(data, classes * size_a + size_b)
    if status:
        raise InvalidCodebook(f"context mode: {codec_lengths.ERRORS[int(status)]}")
    for k in range(classes):
        _check_lengths(lengths[k * size_a : (k + 1) * size_a], lengths[classes * size_a :], bits, dominant)
    return lengths, classes, thresholds, None


def decode(data, codebook=None, max_elements: int | None = None):
    """Decode a frame: returns ``(q, meta)``.

    ``q`` has the frame's shape: uint8 symbols for bits 1..8, float16 / float32
    values for bits 16 / 32. ``codebook`` is the static Codebook (or an iterable
    / mapping of them) a static-mode frame refers to. Frames of more than
    ``max_elements`` elements are refused (ShapeOverflow) before any allocation;
    without it (None) the limit is proportionate to the frame: at most
    ``max(EXPANSION_FLOOR, EXPANSION_RATIO * len(data))`` elements (4 Mi, or 1024
    per frame byte), never above ``DEFAULT_MAX_ELEMENTS``. Pass the element count
    of the tensor you expect (e.g. from a plan) to decode larger tensors.
    Raises a ``CodecError`` subclass on any malformed input.
    """
    view = memoryview(data).cast("B")
    mode, bits, dtype_code, _, ndim, axis, dominant, chunk_log2, filt, reserved = _parse_fixed(view)
    _check_fixed(mode, bits, dtype_code, ndim, axis, dominant, chunk_log2, filt, reserved)
    reader = _Reader(view, _FIXED.size)
    shape = reader.u32(ndim, "shape")
    n = _check_element_count(shape, _element_limit(max_elements, len(view)))
    lo = hi = channel_axis = book_id = None
    if mode != MODE_RAW:
        lo, hi, channel_axis = _read_scales(reader, shape, axis)
    lengths = chunk_sizes = None
    classes, thresholds = 1, ()
    if mode in HUFFMAN_MODES:
        lengths, classes, thresholds, book_id = _read_code_lengths(reader, mode, bits, dominant, codebook)
        if n == 0:
            raise ShapeOverflow("an empty tensor must use constant mode")
        nchunks = (n + (1 << chunk_log2) - 1) >> chunk_log2
        chunk_sizes = np.frombuffer(reader.take(2 * nchunks, "chunk table"), "<u2").astype(np.int64)
    (payload_len,) = reader.u32(1, "payload length")
    left = len(view) - reader.pos
    if payload_len != left:
        raise LengthMismatch(f"payload length field says {payload_len} bytes, the frame has {left} left")
    payload = view[reader.pos :]
    meta = Meta(
        bits, tuple(shape), DTYPES[dtype_code], MODE_NAMES[mode], lo, hi, channel_axis,
        book_id, dominant, chunk_log2, FILTER_NAMES[filt], payload_len, classes, thresholds,
    )
    if mode == MODE_RAW:
        return _decode_raw(payload, bits, shape, n), meta
    if mode == MODE_CONSTANT:
        if payload_len:
            raise LengthMismatch(f"constant mode carries no payload, found {payload_len} bytes")
        return np.full(shape, dominant, np.uint8), meta
    if mode == MODE_PACKED:
        return _unpack_bits(payload, n, bits).reshape(shape), meta
    if mode == MODE_JPEG:
        if codec_jpeg.pixels(shape) > codec_jpeg.MAX_PIXELS:
            raise ShapeOverflow(f"jpeg mode: shape {tuple(shape)} is a picture of more than "
                                f"{codec_jpeg.MAX_PIXELS} pixels")
        try:
            return codec_jpeg.decode(payload, tuple(shape)), meta
        except ValueError as exc:
            raise CorruptPayload(f"jpeg mode: {exc}") from exc
    literal_classes = hf.literal_classes(bits, dominant, thresholds)
    q = _decode_chunks(payload, chunk_sizes, n, chunk_log2, bits, dominant, lengths, literal_classes, classes)
    if filt == FILTER_DELTA:
        _backend.kernels.undelta(q, (1 << bits) - 1)
    elif filt == FILTER_MED:
        _backend.kernels.unmed(q, int(shape[-1]) if shape else 1, (1 << bits) - 1)
    return q.reshape(shape), meta


def decode_tensor(data, codebook=None, max_elements: int | None = None) -> np.ndarray:
    """Decode a frame and dequantize it: a float32 array of the frame's shape."""
    q, meta = decode(data, codebook, max_elements)
    if meta.mode == "raw":
        return q.astype(np.float32)
    return dequantize(q, meta.bits, meta.lo, meta.hi, meta.per_channel_axis)


def _decode_raw(payload, bits, shape, n):
    itemsize = 2 if bits == 16 else 4
    if len(payload) != n * itemsize:
        raise ShapeOverflow(f"shape {tuple(shape)} needs {n * itemsize} payload bytes, the frame has {len(payload)}")
    values = np.frombuffer(payload, "<f2" if bits == 16 else "<f4")
    return values.astype(np.float16 if bits == 16 else np.float32).reshape(shape)


def _decode_chunks(payload, chunk_sizes, n, chunk_log2, bits, dominant, lengths, literal_classes, classes):
    if chunk_sizes.sum() != len(payload):
        raise LengthMismatch(f"chunk lengths add up to {int(chunk_sizes.sum())} bytes, the payload has {len(payload)}")
    if np.any(chunk_sizes == 0):
        raise CorruptPayload("a chunk has zero bytes")
    peek = int(max(lengths.max(), 1))
    table = hf.decode_table(lengths, classes, 1 << bits, dominant, peek, hf.RUN_BASE, hf.RUN_EXTRA)
    ctx_of = hf.next_context(literal_classes, classes, peek) if classes > 1 else None
    size = len(payload)
    kernels = _backend.kernels
    pad = kernels.PAD
    buf = _buffer("dec", size + pad, np.uint8)
    buf[:size] = np.frombuffer(payload, np.uint8)
    buf[size : size + pad] = 0
    ends = np.cumsum(chunk_sizes)
    chunk = 1 << chunk_log2
    sym_start = np.arange(chunk_sizes.size, dtype=np.int64) * chunk
    sym_end = np.minimum(sym_start + chunk, n)
    out = np.full(n, dominant, np.uint8)
    lanes = _lanes(ends)
    bit_start, bit_end = (ends - chunk_sizes) * 8, ends * 8
    status = kernels.decode(buf, bit_start, bit_end, sym_start, sym_end, lanes, table, peek, ctx_of, out)
    if status:
        raise CorruptPayload(f"corrupt payload: {_KERNEL_ERRORS.get(int(status), 'decoder error')}")
    return out


def _lanes(ends):
    """Split chunks into 4 runs of consecutive chunks with about equal bytes."""
    targets = ends[-1] * np.arange(1, 4) / 4
    cuts = np.searchsorted(ends, targets, side="left")
    return np.concatenate([[0], np.minimum(cuts + 1, ends.size), [ends.size]]).astype(np.int64)
