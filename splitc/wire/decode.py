"""Wire codec, decoding: a frame back to symbols (or float values) and its ``Meta``."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from splitc.wire import backend as _backend
from splitc.wire import huffman as hf
from splitc.wire import jpeg as codec_jpeg
from splitc.wire.backend import _buffer
from splitc.wire.codebook import Codebook
from splitc.wire.format import (
    _FIXED,
    _KERNEL_ERRORS,
    DTYPES,
    FILTER_DELTA,
    FILTER_NAMES,
    MODE_CONSTANT,
    MODE_EMBEDDED,
    MODE_JPEG,
    MODE_NAMES,
    MODE_PACKED,
    MODE_RAW,
    MODE_STATIC,
    CorruptPayload,
    InvalidCodebook,
    LengthMismatch,
    Meta,
    ShapeOverflow,
    _check_element_count,
    _check_fixed,
    _element_limit,
    _check_lengths,
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
    raw = np.unpackbits(np.frombuffer(payload, np.uint8), count=n * bits).reshape(n, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint16)
    return (raw.astype(np.uint16) @ weights).astype(np.uint8)


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
    size_a, size_b = hf.alphabet_sizes(bits)
    if mode == MODE_STATIC:
        (wanted,) = reader.u32(1, "codebook id")
        book = _find_codebook(codebook, wanted)
        if book.bits != bits or book.dominant != dominant:
            raise InvalidCodebook(
                f"codebook {wanted:#010x} is for bits {book.bits} / dominant {book.dominant}, "
                f"the frame has bits {bits} / dominant {dominant}"
            )
        return book.lengths_a, book.lengths_b, wanted
    lengths = _unpack_nibbles(reader.take(_nibble_bytes(bits), "code lengths"), size_a + size_b)
    len_a, len_b = lengths[:size_a], lengths[size_a:]
    _check_lengths(len_a, len_b, bits, dominant)
    return len_a, len_b, None


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
    len_a = len_b = chunk_sizes = None
    if mode in (MODE_EMBEDDED, MODE_STATIC):
        len_a, len_b, book_id = _read_code_lengths(reader, mode, bits, dominant, codebook)
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
        book_id, dominant, chunk_log2, FILTER_NAMES[filt], payload_len,
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
    q = _decode_chunks(payload, chunk_sizes, n, chunk_log2, bits, dominant, len_a, len_b)
    if filt == FILTER_DELTA:
        _backend.kernels.undelta(q, (1 << bits) - 1)
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


def _decode_chunks(payload, chunk_sizes, n, chunk_log2, bits, dominant, len_a, len_b):
    if chunk_sizes.sum() != len(payload):
        raise LengthMismatch(f"chunk lengths add up to {int(chunk_sizes.sum())} bytes, the payload has {len(payload)}")
    if np.any(chunk_sizes == 0):
        raise CorruptPayload("a chunk has zero bytes")
    peek = int(max(len_a.max(), len_b.max(), 1))
    table = hf.decode_table(len_a, len_b, 1 << bits, dominant, peek, hf.RUN_BASE, hf.RUN_EXTRA)
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
    status = kernels.decode(buf, (ends - chunk_sizes) * 8, ends * 8, sym_start, sym_end, lanes, table, peek, out)
    if status:
        raise CorruptPayload(f"corrupt payload: {_KERNEL_ERRORS.get(int(status), 'decoder error')}")
    return out


def _lanes(ends):
    """Split chunks into 4 runs of consecutive chunks with about equal bytes."""
    targets = ends[-1] * np.arange(1, 4) / 4
    cuts = np.searchsorted(ends, targets, side="left")
    return np.concatenate([[0], np.minimum(cuts + 1, ends.size), [ends.size]]).astype(np.int64)
