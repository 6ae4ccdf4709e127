"""Wire codec, frame format: constants, the fixed header, errors, and frame parsing / validation.

Everything here describes the bytes of a frame (docs/wire-format.md) and is
shared by the encoder (``codec``), the decoder (``codec_decode``) and the
codebook (``codec_codebook``). The public names are re-exported by
``splitc.wire.codec``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from splitc.wire import huffman as hf

MAGIC = b"SPLT"
VERSION = 1
CODEBOOK_MAGIC = b"SPCB"
CODEBOOK_VERSION = 1
MAX_NDIM = 16
MAX_ELEMENTS = 2**31 - 1  # format limit: fits a signed 32-bit index
DEFAULT_MAX_ELEMENTS = 2**28  # decoder default cap: at most 256 Mi symbols unless raised
# Without an explicit ``max_elements`` the decoder also bounds the expansion: a
# frame of ``L`` bytes may declare at most max(EXPANSION_FLOOR, EXPANSION_RATIO * L)
# elements (a 40-byte frame cannot ask for 240 MiB). Callers that know the
# tensor (a plan) pass its element count as ``max_elements`` instead.
EXPANSION_RATIO = 1024
EXPANSION_FLOOR = 2**22
DEFAULT_CHUNK_LOG2 = 13  # 8192 symbols per chunk
# Longest code the encoder makes (the format allows 15): 12 keeps the decoder's
# lookup tables (2 x 2**12 entries) in the L1 cache, for < 1% larger payloads.
ENCODE_MAX_CODE_LEN = 12

MODE_RAW, MODE_CONSTANT, MODE_EMBEDDED, MODE_STATIC, MODE_PACKED, MODE_JPEG, MODE_CONTEXT = 0, 1, 2, 3, 4, 5, 6
MODE_NAMES = {MODE_RAW: "raw", MODE_CONSTANT: "constant", MODE_EMBEDDED: "embedded", MODE_STATIC: "static",
              MODE_PACKED: "packed", MODE_JPEG: "jpeg", MODE_CONTEXT: "context"}
HUFFMAN_MODES = (MODE_EMBEDDED, MODE_STATIC, MODE_CONTEXT)  # chunked run-length + Huffman payloads
CODERS = ("huffman", "none", "jpeg")
PER_TENSOR = 0xFF
DTYPES = ("float32", "float16", "bfloat16", "float64")
QUANT_BITS = tuple(range(1, 9))
RAW_BITS = (16, 32)

_FIXED = struct.Struct("<4sBBBBIBBBBB3s")  # magic .. reserved: 20 bytes
HEADER_SIZE = _FIXED.size
FILTER_NONE, FILTER_DELTA, FILTER_MED = 0, 1, 2
FILTER_NAMES = {FILTER_NONE: "none", FILTER_DELTA: "delta", FILTER_MED: "med"}
# The encoder compares the estimated cost of a sample of the symbol deltas (or
# MED residuals, whichever is lower) to that of the symbols: below DELTA_TRY_RATIO
# it codes both ways and keeps the smaller; below DELTA_ONLY_RATIO it sends the
# filtered symbols only (dense, smooth tensors).
# When no symbol (nor delta) reaches DENSE_SHARE of the sample, runs hardly
# matter and the smaller entropy decides alone.
DELTA_TRY_RATIO = 0.97
DELTA_ONLY_RATIO = 0.8
DENSE_SHARE = 0.3


# ----------------------------------------------------------------------------- errors


class CodecError(ValueError):
    """Base class of every error raised while decoding a frame or a codebook."""


class TruncatedFrame(CodecError):
    """The data ends before the frame does (a prefix of a frame)."""


class BadMagic(CodecError):
    """The data does not start with the frame (or codebook) magic bytes."""


class BadVersion(CodecError):
    """The frame (or codebook) has a format version this decoder does not know."""


class BadHeader(CodecError):
    """A header field has a value the format does not allow (mode, bits, dtype, axis...)."""


class LengthMismatch(CodecError):
    """A length field disagrees with the data: it points past the frame, or bytes are left over."""


class ShapeOverflow(CodecError):
    """The shape is too large (more than the element limit) or does not match the payload."""


class InvalidCodebook(CodecError):
    """Code lengths that violate Kraft's inequality, or an unknown / mismatched codebook id."""


class CorruptPayload(CodecError):
    """The bitstream holds an invalid code or decodes to the wrong number of symbols."""


_KERNEL_ERRORS = {
    1: "a bit pattern that is no code",
    2: "a chunk's codes run past the chunk's length",
    3: "a bit pattern that is no code, or a run past the end of its chunk",
    4: "a chunk has trailing bytes or non-zero padding bits",
}


# ----------------------------------------------------------------------------- code lengths


def _pack_nibbles(values: np.ndarray) -> bytes:
    """Entry 2j in the low nibble of byte j, entry 2j+1 in the high nibble."""
    v = np.zeros(values.size + (values.size & 1), np.uint8)
    v[: values.size] = values
    return (v[0::2] | (v[1::2] << 4)).tobytes()


def _unpack_nibbles(data, count: int) -> np.ndarray:
    raw = np.frombuffer(data, np.uint8)
    v = np.empty(raw.size * 2, np.int64)
    v[0::2] = raw & 15
    v[1::2] = raw >> 4
    return v[:count]


def _nibble_bytes(bits: int) -> int:
    size_a, size_b = hf.alphabet_sizes(bits)
    return (size_a + size_b + 1) // 2


def _check_lengths(len_a: np.ndarray, len_b: np.ndarray, bits: int, dominant: int) -> None:
    """Raise InvalidCodebook unless the code lengths form a valid pair of prefix codes."""
    if len_a[dominant] or len_b[dominant]:
        raise InvalidCodebook(f"the dominant symbol {dominant} must have no literal code (length 0)")
    for name, lengths in (("A", len_a), ("B", len_b)):
        if not hf.kraft_ok(lengths):
            total = float(np.sum(2.0 ** -lengths[lengths > 0]))
            raise InvalidCodebook(f"context-{name} code lengths violate Kraft's inequality (sum {total:.4f} > 1)")


# ----------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class Meta:
    """What a frame says about its tensor.

    ``mode`` is ``"raw"`` (bits 16/32), ``"constant"``, ``"embedded"`` (code
    lengths in the frame), ``"static"`` (codebook ``codebook_id``), ``"packed"``,
    ``"jpeg"`` or ``"context"`` (compact code lengths, ``classes`` literal
    contexts split at ``thresholds``). ``lo, hi`` are floats, or float32 arrays
    when ``per_channel_axis`` is set; None for raw. ``filter`` is ``"delta"`` or
    ``"med"`` when the symbols were sent as prediction residuals.
    """

    bits: int
    shape: tuple
    dtype: str
    mode: str
    lo: float | np.ndarray | None = None
    hi: float | np.ndarray | None = None
    per_channel_axis: int | None = None
    codebook_id: int | None = None
    dominant: int = 0
    chunk_log2: int = 0
    filter: str = "none"
    payload_bytes: int = 0
    classes: int = 1
    thresholds: tuple = ()


# ----------------------------------------------------------------------------- framing


def _frame(head, mode, dominant, chunk_log2, filt, code_section, chunk_table, payload) -> bytes:
    bits, dtype, shape, axis, scales = head
    body = [
        struct.pack(f"<{len(shape)}I", *shape),
        scales,
        code_section,
        chunk_table,
        struct.pack("<I", len(payload)),
    ]
    length = _FIXED.size + sum(len(b) for b in body) + len(payload)
    if length > 0xFFFFFFFF:
        raise ValueError("frame is larger than 4 GiB")
    fixed = _FIXED.pack(
        MAGIC, VERSION, mode, bits, DTYPES.index(dtype), length, len(shape), axis, dominant, chunk_log2, filt, bytes(3)
    )
    return b"".join([fixed, *body, payload])


class _Reader:
    """Sequential little-endian reader over one complete frame."""

    def __init__(self, data, start):
        self.data = data
        self.pos = start

    def take(self, size: int, what: str):
        end = self.pos + size
        if end > len(self.data):
            raise LengthMismatch(
                f"{what} needs {size} bytes at offset {self.pos}, but the frame ends at {len(self.data)}"
            )
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u32(self, count: int, what: str) -> tuple:
        return struct.unpack(f"<{count}I", self.take(4 * count, what))


def _check_magic(data, magic):
    head = bytes(data[: len(magic)])
    if len(head) < len(magic):
        if magic.startswith(head):
            raise TruncatedFrame(f"{len(data)} bytes: too short to hold the {len(magic)}-byte magic")
        raise BadMagic(f"bad magic {head!r}, expected {magic!r}")
    if head != magic:
        raise BadMagic(f"bad magic {head!r}, expected {magic!r}")


def _element_limit(max_elements, frame_bytes: int) -> int:
    """The decoder's element limit: ``max_elements``, or the expansion bound when it is None."""
    if max_elements is None:
        return min(DEFAULT_MAX_ELEMENTS, max(EXPANSION_FLOOR, EXPANSION_RATIO * int(frame_bytes)))
    return min(int(max_elements), MAX_ELEMENTS)


def _check_element_count(shape, limit: int) -> int:
    """``n`` of a declared shape; ShapeOverflow above ``limit``, also counting zero dims as 1.

    Counting zero dimensions as 1 refuses shapes such as (0, 2**32-1, 2**32-1),
    which hold no element but which numpy cannot even describe.
    """
    n = int(np.prod(shape, dtype=object)) if len(shape) else 1
    span = int(np.prod([max(int(d), 1) for d in shape], dtype=object)) if len(shape) else 1
    if span > limit:
        raise ShapeOverflow(f"shape {tuple(shape)} has {n} elements ({span} counting empty dims as 1), "
                            f"more than the limit {limit}")
    return n


def _parse_fixed(data):
    _check_magic(data, MAGIC)
    if len(data) < 5:
        raise TruncatedFrame(f"{len(data)} bytes: the version byte is missing")
    if data[4] != VERSION:
        raise BadVersion(f"frame version {data[4]}, this decoder reads version {VERSION}")
    if len(data) < _FIXED.size:
        raise TruncatedFrame(f"{len(data)} bytes: the fixed header needs {_FIXED.size}")
    fields = _FIXED.unpack_from(data)
    length = fields[5]
    if length < _FIXED.size:
        raise LengthMismatch(f"frame length field {length} is shorter than the fixed header")
    if len(data) < length:
        raise TruncatedFrame(f"{len(data)} bytes, but the frame is {length} bytes long")
    if len(data) > length:
        raise LengthMismatch(f"{len(data) - length} bytes of trailing garbage after the {length}-byte frame")
    return fields[2:]


def _check_fixed(mode, bits, dtype_code, ndim, axis, dominant, chunk_log2, filt, reserved):
    if mode not in MODE_NAMES:
        raise BadHeader(f"unknown coding mode {mode}")
    if filt not in FILTER_NAMES or (filt != FILTER_NONE and mode not in HUFFMAN_MODES):
        raise BadHeader(f"filter {filt} is not allowed in {MODE_NAMES[mode]} mode")
    if reserved != bytes(3):
        raise BadHeader("reserved header bytes 17..19 must be zero")
    if dtype_code >= len(DTYPES):
        raise BadHeader(f"unknown dtype code {dtype_code}")
    if mode == MODE_RAW:
        if bits not in RAW_BITS or axis != PER_TENSOR or dominant or chunk_log2:
            raise BadHeader(f"raw mode needs bits 16/32, no axis, dominant 0, chunk_log2 0 (bits {bits})")
    elif bits not in QUANT_BITS:
        raise BadHeader(f"bits {bits} is not allowed in {MODE_NAMES[mode]} mode")
    elif dominant >= 1 << bits:
        raise BadHeader(f"dominant symbol {dominant} does not fit in {bits} bits")
    if mode in HUFFMAN_MODES:
        if not hf.MIN_CHUNK_LOG2 <= chunk_log2 <= hf.MAX_CHUNK_LOG2:
            raise BadHeader(f"chunk_log2 {chunk_log2} is outside {hf.MIN_CHUNK_LOG2}..{hf.MAX_CHUNK_LOG2}")
    elif mode in (MODE_CONSTANT, MODE_PACKED, MODE_JPEG) and chunk_log2:
        raise BadHeader(f"{MODE_NAMES[mode]} mode needs chunk_log2 0")
    if mode in (MODE_PACKED, MODE_JPEG) and dominant:
        raise BadHeader(f"{MODE_NAMES[mode]} mode needs dominant 0")
    if mode == MODE_JPEG and (bits != 8 or axis != PER_TENSOR):
        raise BadHeader(f"jpeg mode needs bits 8 and a per-tensor range (bits {bits})")
    if ndim > MAX_NDIM:
        raise ShapeOverflow(f"{ndim} dimensions, at most {MAX_NDIM}")
    if axis != PER_TENSOR and axis >= ndim:
        raise BadHeader(f"per-channel axis {axis} is out of range for {ndim} dims")


def _read_scales(reader, shape, axis):
    if axis == PER_TENSOR:
        lo, hi = struct.unpack("<2f", reader.take(8, "lo/hi"))
        values = np.array([lo, hi], np.float32)
    else:
        count = shape[axis]
        values = np.frombuffer(reader.take(8 * count, "per-channel lo/hi"), "<f4").astype(np.float32)
    if not np.all(np.isfinite(values)):
        raise BadHeader("lo/hi are not finite")
    half = values.size // 2
    with np.errstate(over="ignore", invalid="ignore"):
        width = values[half:] - values[:half]  # float32, as the dequantizer computes it
    if not np.all(np.isfinite(width)):
        raise BadHeader("the range hi - lo is not finite in float32")
    if axis == PER_TENSOR:
        return float(values[0]), float(values[1]), None
    return values[:half].copy(), values[half:].copy(), axis
