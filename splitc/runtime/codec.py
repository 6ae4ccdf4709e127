"""Wire codec for one cut tensor: quantization, run-length + canonical Huffman coding, framing.

The edge half quantizes the cut tensor to ``bits`` (1..8) bits per element, codes
the symbols with a canonical Huffman code over an alphabet of literal symbols and
run-length symbols (runs of the tensor's dominant symbol, as in JPEG), and sends
one self-describing frame. ``bits`` 16 and 32 send float16 / float32 values as is.
The format is specified in docs/wire-format.md.

Quick use::

    q, lo, hi = quantize(x, 4)
    frame = encode(q, 4, lo, hi)             # bytes
    q2, meta = decode(frame)                 # q2 == q
    x2 = decode_tensor(frame)                # float32, |x2 - x| <= (hi - lo) / 15 / 2

    book = Codebook.train([q_a, q_b, q_c], 4)     # offline, on sample tensors
    frame = encode(q, 4, lo, hi, codebook=book)   # the frame names the book by its id
    q2, meta = decode(frame, codebook=book)

Malformed input never crashes the decoder: every problem raises a subclass of
``CodecError`` (itself a ``ValueError``), and allocation is bounded by the
frame size and ``max_elements``.

This module depends on numpy only; numba, when installed, compiles the hot loops
(``BACKEND`` says which kernels run; both write identical bytes).
"""

from __future__ import annotations

import struct
import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from splitc.runtime import codec_huffman as hf
from splitc.runtime import codec_numpy

try:
    from splitc.runtime import codec_numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    codec_numba = None

__all__ = [
    "MAGIC",
    "VERSION",
    "HEADER_SIZE",
    "MAX_ELEMENTS",
    "DEFAULT_MAX_ELEMENTS",
    "DEFAULT_CHUNK_LOG2",
    "CodecError",
    "TruncatedFrame",
    "BadMagic",
    "BadVersion",
    "BadHeader",
    "LengthMismatch",
    "ShapeOverflow",
    "InvalidCodebook",
    "CorruptPayload",
    "Codebook",
    "Meta",
    "quantize",
    "dequantize",
    "encode",
    "encode_tensor",
    "decode",
    "decode_tensor",
    "set_backend",
]

MAGIC = b"SPLT"
VERSION = 1
CODEBOOK_MAGIC = b"SPCB"
CODEBOOK_VERSION = 1
MAX_NDIM = 16
MAX_ELEMENTS = 2**31 - 1  # format limit: fits a signed 32-bit index
DEFAULT_MAX_ELEMENTS = 2**28  # decoder default: at most 256 Mi symbols unless raised
DEFAULT_CHUNK_LOG2 = 13  # 8192 symbols per chunk
# Longest code the encoder makes (the format allows 15): 12 keeps the decoder's
# lookup tables (2 x 2**12 entries) in the L1 cache, for < 1% larger payloads.
ENCODE_MAX_CODE_LEN = 12

MODE_RAW, MODE_CONSTANT, MODE_EMBEDDED, MODE_STATIC, MODE_PACKED = 0, 1, 2, 3, 4
MODE_NAMES = {MODE_RAW: "raw", MODE_CONSTANT: "constant", MODE_EMBEDDED: "embedded", MODE_STATIC: "static",
              MODE_PACKED: "packed"}
CODERS = ("huffman", "none")
PER_TENSOR = 0xFF
DTYPES = ("float32", "float16", "bfloat16", "float64")
QUANT_BITS = tuple(range(1, 9))
RAW_BITS = (16, 32)

_FIXED = struct.Struct("<4sBBBBIBBBBB3s")  # magic .. reserved: 20 bytes
HEADER_SIZE = _FIXED.size
FILTER_NONE, FILTER_DELTA = 0, 1
FILTER_NAMES = {FILTER_NONE: "none", FILTER_DELTA: "delta"}
# The encoder compares the order-0 entropy of a sample of the symbol deltas to
# that of the symbols: below DELTA_TRY_RATIO it codes both ways and keeps the
# smaller; below DELTA_ONLY_RATIO it sends deltas only (dense, smooth tensors).
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


# ----------------------------------------------------------------------------- backend

_kernels = codec_numba if codec_numba is not None else codec_numpy
BACKEND = "numba" if codec_numba is not None else "numpy"


def set_backend(name: str) -> str:
    """Select the kernels: ``"numba"`` (default when installed) or ``"numpy"``.

    Both produce identical bytes; returns the previous backend name.
    """
    global _kernels, BACKEND
    if name not in ("numba", "numpy"):
        raise ValueError(f"unknown backend {name!r}: use 'numba' or 'numpy'")
    if name == "numba" and codec_numba is None:
        raise ValueError("numba is not installed")
    previous = BACKEND
    _kernels = codec_numba if name == "numba" else codec_numpy
    BACKEND = name
    return previous


_scratch = threading.local()


def _buffer(name: str, size: int, dtype) -> np.ndarray:
    """A reusable per-thread scratch array of at least ``size`` elements."""
    arr = getattr(_scratch, name, None)
    if arr is None or arr.size < size:
        arr = np.empty(max(size, 1 << 16), dtype)
        setattr(_scratch, name, arr)
    return arr


# ----------------------------------------------------------------------------- quantization


def quantize(x, bits: int, per_channel_axis: int | None = None):
    """Quantize a float tensor to ``bits`` (1..8) bits: returns ``(q, lo, hi)``.

    ``q = floor((x - lo) * ((2**bits - 1) / max(hi - lo, 1e-30)) + 0.5)`` as uint8,
    computed in float32 exactly like the quantizer splitc inserts into edge
    halves, where ``lo, hi`` are the min and max of ``x`` per tensor or, with
    ``per_channel_axis``, per index along that axis (then float32 arrays).
    A constant tensor (``hi == lo``) quantizes to zeros.
    """
    _check_quant_bits(bits)
    x = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("cannot quantize a tensor with NaN or infinite values")
    if per_channel_axis is None:
        if x.size == 0:
            return np.zeros(x.shape, np.uint8), np.float32(0), np.float32(0)
        lo, hi = np.float32(x.min()), np.float32(x.max())
        return _steps(x, lo, hi, bits), lo, hi
    axis = _normalize_axis(per_channel_axis, x.ndim)
    others = tuple(i for i in range(x.ndim) if i != axis)
    if x.size == 0:
        zeros = np.zeros(x.shape[axis], np.float32)
        return np.zeros(x.shape, np.uint8), zeros, zeros.copy()
    lo = x.min(axis=others).astype(np.float32)
    hi = x.max(axis=others).astype(np.float32)
    return _steps(x, _along(lo, axis, x.ndim), _along(hi, axis, x.ndim), bits), lo, hi


def _steps(x, lo, hi, bits):
    levels = np.float32((1 << bits) - 1)
    scale = levels / np.maximum(hi - lo, np.float32(1e-30))
    return np.floor((x - lo) * scale + np.float32(0.5)).astype(np.uint8)


def dequantize(q, bits: int, lo, hi, per_channel_axis: int | None = None) -> np.ndarray:
    """Inverse of ``quantize``: ``q * ((hi - lo) / (2**bits - 1)) + lo`` in float32.

    Where ``hi == lo`` the tensor (or channel) is constant and decodes to ``lo``.
    """
    _check_quant_bits(bits)
    q = np.asarray(q)
    levels = np.float32((1 << bits) - 1)
    if per_channel_axis is None:
        lo32, hi32 = np.float32(lo), np.float32(hi)
        return (q.astype(np.float32) * ((hi32 - lo32) / levels) + lo32).astype(np.float32)
    axis = _normalize_axis(per_channel_axis, q.ndim)
    lo32 = np.asarray(lo, np.float32)
    hi32 = np.asarray(hi, np.float32)
    if lo32.shape != (q.shape[axis],) or hi32.shape != lo32.shape:
        raise ValueError(f"per-channel lo/hi need shape ({q.shape[axis]},)")
    step = _along((hi32 - lo32) / levels, axis, q.ndim)
    return (q.astype(np.float32) * step + _along(lo32, axis, q.ndim)).astype(np.float32)


def _along(values, axis, ndim):
    """Reshape a per-channel vector to broadcast along ``axis``."""
    shape = [1] * ndim
    shape[axis] = -1
    return np.reshape(values, shape)


def _normalize_axis(axis, ndim):
    if not isinstance(axis, (int, np.integer)) or not -ndim <= axis < ndim:
        raise ValueError(f"per_channel_axis {axis!r} is out of range for a {ndim}-d tensor")
    return int(axis) % ndim


def _check_quant_bits(bits):
    if bits not in QUANT_BITS:
        raise ValueError(f"bits must be 1..8 for quantized symbols, got {bits!r}")


# ----------------------------------------------------------------------------- codebook


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


class Codebook:
    """A static Huffman codebook for one bit width, trained offline on sample tensors.

    Holds the dominant (run) symbol and the code lengths of both contexts. Its
    ``id`` is the CRC-32 of ``bytes([bits, dominant]) + nibble-packed lengths``;
    frames coded with it carry only this id.
    """

    __slots__ = ("bits", "dominant", "lengths_a", "lengths_b", "_id")

    def __init__(self, bits: int, dominant: int, lengths_a, lengths_b):
        _check_quant_bits(bits)
        size_a, size_b = hf.alphabet_sizes(bits)
        self.bits = int(bits)
        self.dominant = int(dominant)
        self.lengths_a = np.asarray(lengths_a, np.int64).copy()
        self.lengths_b = np.asarray(lengths_b, np.int64).copy()
        if not 0 <= self.dominant < size_b:
            raise InvalidCodebook(f"dominant symbol {dominant} is out of range for {bits} bits")
        if self.lengths_a.shape != (size_a,) or self.lengths_b.shape != (size_b,):
            raise InvalidCodebook(f"a {bits}-bit codebook needs {size_a} + {size_b} code lengths")
        both = np.concatenate([self.lengths_a, self.lengths_b])
        if both.min() < 0 or both.max() > hf.MAX_CODE_LEN:
            raise InvalidCodebook(f"code lengths must be 0..{hf.MAX_CODE_LEN}")
        _check_lengths(self.lengths_a, self.lengths_b, self.bits, self.dominant)
        body = bytes([self.bits, self.dominant]) + self.nibbles()
        self._id = zlib.crc32(body) & 0xFFFFFFFF

    @property
    def id(self) -> int:
        """32-bit id: CRC-32 of bits, dominant symbol and code lengths."""
        return self._id

    def nibbles(self) -> bytes:
        """The code lengths, context A then B, nibble-packed as in the frame."""
        return _pack_nibbles(np.concatenate([self.lengths_a, self.lengths_b]).astype(np.uint8))

    @classmethod
    def train(cls, samples: Iterable[np.ndarray], bits: int, chunk_log2: int = DEFAULT_CHUNK_LOG2) -> Codebook:
        """Train on sample symbol tensors (uint8 in ``[0, 2**bits)``).

        The dominant symbol is the most frequent one overall. Token counts get
        add-one smoothing, so every token that can occur has a code; code
        lengths are limited to ``ENCODE_MAX_CODE_LEN`` (12) bits.
        """
        _check_quant_bits(bits)
        samples = [_flat_symbols(s, bits) for s in samples]
        hist = sum((np.bincount(s, minlength=256) for s in samples), np.zeros(256, np.int64))
        dominant = int(np.argmax(hist[: 1 << bits]))
        size_a, size_b = hf.alphabet_sizes(bits)
        counts = np.zeros(size_a + size_b, np.int64)
        for s in samples:
            if s.size:
                counts += _token_counts(s, bits, dominant, 1 << chunk_log2)[0]
        counts += 1
        counts[dominant] = 0
        counts[size_a + dominant] = 0
        len_a = hf.huffman_lengths(counts[:size_a], ENCODE_MAX_CODE_LEN)
        len_b = hf.huffman_lengths(counts[size_a:], ENCODE_MAX_CODE_LEN)
        return cls(bits, dominant, len_a, len_b)

    def to_bytes(self) -> bytes:
        """``SPCB``, version, bits, dominant, 0, nibble-packed lengths, id (u32 LE)."""
        head = CODEBOOK_MAGIC + bytes([CODEBOOK_VERSION, self.bits, self.dominant, 0])
        return head + self.nibbles() + struct.pack("<I", self.id)

    @classmethod
    def from_bytes(cls, data: bytes) -> Codebook:
        """Parse ``to_bytes`` output; raises a CodecError subclass on bad input."""
        data = bytes(data)
        _check_magic(data, CODEBOOK_MAGIC)
        if len(data) < 8:
            raise TruncatedFrame(f"codebook: {len(data)} bytes, the header needs 8")
        version, bits, dominant, reserved = data[4:8]
        if version != CODEBOOK_VERSION:
            raise BadVersion(f"codebook version {version}, this decoder reads version {CODEBOOK_VERSION}")
        if bits not in QUANT_BITS or reserved != 0:
            raise BadHeader(f"codebook: bits {bits} / reserved byte {reserved} not allowed")
        need = 8 + _nibble_bytes(bits) + 4
        if len(data) < need:
            raise TruncatedFrame(f"codebook: {len(data)} bytes, a {bits}-bit codebook has {need}")
        if len(data) > need:
            raise LengthMismatch(f"codebook: {len(data) - need} trailing bytes")
        size_a, size_b = hf.alphabet_sizes(bits)
        lengths = _unpack_nibbles(data[8 : need - 4], size_a + size_b)
        if dominant >= size_b:
            raise InvalidCodebook(f"codebook: dominant symbol {dominant} out of range for {bits} bits")
        book = cls(bits, dominant, lengths[:size_a], lengths[size_a:])
        (stored,) = struct.unpack_from("<I", data, need - 4)
        if stored != book.id:
            raise InvalidCodebook(f"codebook: stored id {stored:#010x} != CRC-32 of its lengths {book.id:#010x}")
        return book

    def __eq__(self, other):
        return isinstance(other, Codebook) and self.to_bytes() == other.to_bytes()

    def __hash__(self):
        return self._id

    def __repr__(self):
        return f"Codebook(bits={self.bits}, dominant={self.dominant}, id={self.id:#010x})"


# ----------------------------------------------------------------------------- metadata


@dataclass(frozen=True)
class Meta:
    """What a frame says about its tensor.

    ``mode`` is ``"raw"`` (bits 16/32), ``"constant"``, ``"embedded"`` (code
    lengths in the frame) or ``"static"`` (codebook ``codebook_id``). ``lo, hi``
    are floats, or float32 arrays when ``per_channel_axis`` is set; None for raw.
    ``filter`` is ``"delta"`` when the symbols were sent as differences.
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


# ----------------------------------------------------------------------------- encoding


def encode(
    q,
    bits: int,
    lo=None,
    hi=None,
    codebook: Codebook | None = None,
    shape=None,
    dtype: str = "float32",
    per_channel_axis: int | None = None,
    chunk_log2: int = DEFAULT_CHUNK_LOG2,
    coder: str = "huffman",
) -> bytes:
    """Encode one tensor into a frame (see docs/wire-format.md).

    * ``bits`` 1..8: ``q`` holds uint8 symbols in ``[0, 2**bits)`` and ``lo, hi``
      the quantization range (floats, or float32 arrays of length
      ``shape[per_channel_axis]`` for per-channel ranges).
    * ``bits`` 16 / 32: ``q`` is the float tensor itself, sent as float16 /
      float32 without entropy coding; ``lo, hi`` are ignored.

    ``shape`` defaults to ``q.shape`` (give it when ``q`` is flat); ``dtype`` names
    the original tensor dtype (float32, float16, bfloat16, float64) for the
    receiver. With a static ``codebook`` (same ``bits``) the frame carries only
    its id, unless a per-message code is smaller, which is then embedded.
    ``chunk_log2`` (8..15) sets the chunk size, 2**chunk_log2 symbols.
    ``coder="none"`` skips entropy coding: the symbols are bit-packed, ``bits``
    bits each (packed mode).
    """
    if coder not in CODERS:
        raise ValueError(f"coder must be one of {CODERS}, got {coder!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    if bits in RAW_BITS:
        return _encode_raw(q, bits, shape, dtype)
    _check_quant_bits(bits)
    if not hf.MIN_CHUNK_LOG2 <= chunk_log2 <= hf.MAX_CHUNK_LOG2:
        raise ValueError(f"chunk_log2 must be {hf.MIN_CHUNK_LOG2}..{hf.MAX_CHUNK_LOG2}")
    flat, shape = _symbols_and_shape(q, bits, shape)
    axis, scales = _scales_bytes(lo, hi, shape, per_channel_axis)
    if codebook is not None and (not isinstance(codebook, Codebook) or codebook.bits != bits):
        raise ValueError(f"codebook must be a Codebook for {bits} bits")
    head = (bits, dtype, shape, axis, scales)
    if flat.size == 0:
        return _frame(head, MODE_CONSTANT, 0, 0, FILTER_NONE, b"", b"", b"")
    if coder == "none":
        return _frame(head, MODE_PACKED, 0, 0, FILTER_NONE, b"", b"", _pack_bits(flat, bits))
    return _encode_huffman(flat, head, codebook, chunk_log2)


def _pack_bits(flat: np.ndarray, bits: int) -> bytes:
    """Each symbol as ``bits`` bits, most significant first, padded with zeros to a byte."""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint8)
    return np.packbits(((flat[:, None] >> shifts) & 1).astype(np.uint8)).tobytes()


def _unpack_bits(payload, n: int, bits: int) -> np.ndarray:
    need = (n * bits + 7) // 8
    if len(payload) != need:
        raise LengthMismatch(f"packed mode needs {need} payload bytes for {n} symbols, the frame has {len(payload)}")
    raw = np.unpackbits(np.frombuffer(payload, np.uint8), count=n * bits).reshape(n, bits)
    weights = (1 << np.arange(bits - 1, -1, -1)).astype(np.uint16)
    return (raw.astype(np.uint16) @ weights).astype(np.uint8)


def encode_tensor(x, bits: int, per_channel_axis: int | None = None, codebook: Codebook | None = None, **kw) -> bytes:
    """Quantize (bits 1..8) or pass through (16, 32) a float tensor and encode it."""
    if bits in RAW_BITS:
        return encode(x, bits, **kw)
    q, lo, hi = quantize(x, bits, per_channel_axis)
    return encode(q, bits, lo, hi, codebook=codebook, per_channel_axis=per_channel_axis, **kw)


def _encode_raw(x, bits, shape, dtype):
    arr = np.asarray(x, dtype="<f2" if bits == 16 else "<f4")
    shape = tuple(arr.shape) if shape is None else tuple(int(d) for d in shape)
    _check_shape(shape, arr.size)
    head = (bits, dtype, shape, PER_TENSOR, b"")
    return _frame(head, MODE_RAW, 0, 0, FILTER_NONE, b"", b"", np.ascontiguousarray(arr).tobytes())


def _symbols_and_shape(q, bits, shape):
    flat = _flat_symbols(q, bits, check=False)
    if shape is None:
        shape = np.shape(q)
    shape = tuple(int(d) for d in shape)
    _check_shape(shape, flat.size)
    return flat, shape


def _flat_symbols(q, bits, check=True):
    """``q`` as a contiguous flat uint8 array (values checked when ``check``)."""
    arr = np.asarray(q)
    if arr.dtype != np.uint8:
        if arr.size and (not np.issubdtype(arr.dtype, np.integer) or arr.min() < 0 or arr.max() > 255):
            raise ValueError("symbols must be integers in [0, 2**bits)")
        arr = arr.astype(np.uint8)
    flat = np.ascontiguousarray(arr).reshape(-1)
    if check and flat.size and int(flat.max()) >= 1 << bits:
        raise ValueError(f"symbol {int(flat.max())} does not fit in {bits} bits")
    return flat


def _check_shape(shape, size):
    if len(shape) > MAX_NDIM or any(d < 0 or d > 0xFFFFFFFF for d in shape):
        raise ValueError(f"shape {shape}: at most {MAX_NDIM} dims of 0..2**32-1")
    if int(np.prod(shape, dtype=object)) != size:
        raise ValueError(f"shape {shape} does not hold {size} elements")
    if size > MAX_ELEMENTS:
        raise ValueError(f"{size} elements is more than the format limit {MAX_ELEMENTS}")


def _scales_bytes(lo, hi, shape, per_channel_axis):
    """(axis byte, packed lo/hi) for the frame."""
    if lo is None or hi is None:
        raise ValueError("lo and hi are required for bits 1..8")
    if per_channel_axis is None:
        if np.ndim(lo) or np.ndim(hi):
            raise ValueError("array lo/hi need per_channel_axis")
        values = np.array([lo, hi], np.float32)
        axis = PER_TENSOR
    else:
        axis = _normalize_axis(per_channel_axis, len(shape))
        lo = np.asarray(lo, np.float32).reshape(-1)
        hi = np.asarray(hi, np.float32).reshape(-1)
        if lo.size != shape[axis] or hi.size != shape[axis]:
            raise ValueError(f"per-channel lo/hi need {shape[axis]} values each")
        values = np.concatenate([lo, hi])
    if not np.all(np.isfinite(values)):
        raise ValueError("lo and hi must be finite")
    return axis, values.astype("<f4").tobytes()


def _token_counts(flat, bits, dominant, chunk, skip_runs=False, scratch="tok"):
    """Token histogram (context A then B), the tokens and the token count after each chunk.

    ``skip_runs`` only picks the faster numba loop for sparse tensors.
    """
    size_a, size_b = hf.alphabet_sizes(bits)
    n_lit = 1 << bits
    if _kernels is codec_numba:
        tok = _buffer(scratch, flat.size + 2, np.uint32)
        tok_end = np.empty((flat.size + chunk - 1) // chunk, np.int64)
        ntok, seen = codec_numba.tokenize(flat, dominant, n_lit, size_a, chunk, hf.RUN_TOKENS, tok, tok_end, skip_runs)
        tok = tok[:ntok]
        counts = codec_numba.token_histogram(tok, ntok, size_a + size_b)
    else:
        tok, tok_end, seen = codec_numpy.tokenize(flat, dominant, n_lit, size_a, chunk, hf.RUN_TOKENS)
        counts = codec_numpy.token_histogram(tok, size_a + size_b)
    if seen >= n_lit:
        raise ValueError(f"a symbol does not fit in {bits} bits")
    return counts, tok, tok_end


def _entropy(hist):
    p = hist[hist > 0] / max(1, hist.sum())
    return float(-(p * np.log2(p)).sum())


def _delta(flat, bits):
    """The delta filter: ``t[0] = q[0]``, ``t[i] = (q[i] - q[i-1]) mod 2**bits``."""
    out = _buffer("delta", flat.size, np.uint8)[: flat.size]
    out[0] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=out[1:])
    np.bitwise_and(out, (1 << bits) - 1, out=out)
    return out


class _Option:
    """One way to code a message: filter, token stream and code lengths, and its cost in bits."""

    def __init__(self, filt, dominant, counts, tok, tok_end, bits, codebook=None):
        size_a = hf.alphabet_sizes(bits)[0]
        self.filter, self.dominant, self.tok, self.tok_end = filt, dominant, tok, tok_end
        extra = int(np.dot(counts[1 << bits : size_a], hf.RUN_EXTRA))
        if codebook is None:
            self.mode = MODE_EMBEDDED
            self.len_a = hf.huffman_lengths(counts[:size_a], ENCODE_MAX_CODE_LEN)
            self.len_b = hf.huffman_lengths(counts[size_a:], ENCODE_MAX_CODE_LEN)
            self.code_section = _pack_nibbles(np.concatenate([self.len_a, self.len_b]).astype(np.uint8))
        else:
            self.mode = MODE_STATIC
            self.len_a, self.len_b = codebook.lengths_a, codebook.lengths_b
            self.code_section = struct.pack("<I", codebook.id)
        lengths = np.concatenate([self.len_a, self.len_b])
        usable = not np.any((counts > 0) & (lengths == 0))
        code_bits = hf.cost_bits(counts, lengths) + extra + 8 * len(self.code_section)
        self.cost = code_bits if usable else float("inf")


def _encode_huffman(flat, head, codebook, chunk_log2):
    bits = head[0]
    chunk = 1 << chunk_log2
    hist, delta_hist = _kernels.sample_histograms(flat, max(1, flat.size >> 13), (1 << bits) - 1)
    sample_bits = _entropy(hist)
    ratio = _entropy(delta_hist) / sample_bits if sample_bits > 0 else float("inf")
    dense = max(hist.max(), delta_hist.max()) < DENSE_SHARE * hist.sum()
    if dense:  # runs hardly matter: the order-0 entropies decide alone
        ratio = 0.0 if ratio < 1.0 else float("inf")
    options = []
    if ratio >= DELTA_ONLY_RATIO:
        dominant = codebook.dominant if codebook is not None else int(np.argmax(hist))
        sparse = hist[dominant] > 0.75 * hist.sum()
        counts, tok, tok_end = _token_counts(flat, bits, dominant, chunk, sparse)
        if not counts[: 1 << bits].any() and not counts[hf.alphabet_sizes(bits)[0] :].any():
            return _frame(head, MODE_CONSTANT, dominant, 0, FILTER_NONE, b"", b"", b"")
        options.append(_Option(FILTER_NONE, dominant, counts, tok, tok_end, bits))
        if codebook is not None:
            options.append(_Option(FILTER_NONE, dominant, counts, tok, tok_end, bits, codebook))
    if ratio < DELTA_TRY_RATIO:
        if not options and int(flat.max()) >> bits:  # the plain tokenizer did not check the range
            raise ValueError(f"symbol {int(flat.max())} does not fit in {bits} bits")
        dominant = int(np.argmax(delta_hist))
        sparse = delta_hist[dominant] > 0.75 * delta_hist.sum()
        counts, tok, tok_end = _token_counts(_delta(flat, bits), bits, dominant, chunk, sparse, "tok_delta")
        options.append(_Option(FILTER_DELTA, dominant, counts, tok, tok_end, bits))
    best = min(options, key=lambda option: option.cost)
    payload, ends = _emit(best.tok, best.tok_end, hf.encode_table(best.len_a, best.len_b))
    chunk_table = np.diff(ends, prepend=0).astype("<u2").tobytes()
    return _frame(head, best.mode, best.dominant, chunk_log2, best.filter, best.code_section, chunk_table, payload)


def _emit(tok, tok_end, table):
    """(payload as a bytes-like, byte offset after each chunk)."""
    if _kernels is codec_numba:
        out = _buffer("out", 4 * tok.size + tok_end.size + 16, np.uint8)
        ends = np.empty(tok_end.size, np.int64)
        size = codec_numba.emit(tok, tok_end, table, out, ends)
        return memoryview(out)[:size], ends
    payload, ends = codec_numpy.emit(tok, tok_end, table)
    return memoryview(payload), ends


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


# ----------------------------------------------------------------------------- decoding


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
    if filt not in FILTER_NAMES or (filt != FILTER_NONE and mode not in (MODE_EMBEDDED, MODE_STATIC)):
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
    if mode in (MODE_EMBEDDED, MODE_STATIC):
        if not hf.MIN_CHUNK_LOG2 <= chunk_log2 <= hf.MAX_CHUNK_LOG2:
            raise BadHeader(f"chunk_log2 {chunk_log2} is outside {hf.MIN_CHUNK_LOG2}..{hf.MAX_CHUNK_LOG2}")
    elif mode in (MODE_CONSTANT, MODE_PACKED) and chunk_log2:
        raise BadHeader(f"{MODE_NAMES[mode]} mode needs chunk_log2 0")
    if mode == MODE_PACKED and dominant:
        raise BadHeader("packed mode needs dominant 0")
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
    if axis == PER_TENSOR:
        return float(values[0]), float(values[1]), None
    half = values.size // 2
    return values[:half].copy(), values[half:].copy(), axis


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


def decode(data, codebook=None, max_elements: int = DEFAULT_MAX_ELEMENTS):
    """Decode a frame: returns ``(q, meta)``.

    ``q`` has the frame's shape: uint8 symbols for bits 1..8, float16 / float32
    values for bits 16 / 32. ``codebook`` is the static Codebook (or an iterable
    / mapping of them) a static-mode frame refers to. Frames of more than
    ``max_elements`` elements are refused (ShapeOverflow) before any allocation.
    Raises a ``CodecError`` subclass on any malformed input.
    """
    view = memoryview(data).cast("B")
    mode, bits, dtype_code, _, ndim, axis, dominant, chunk_log2, filt, reserved = _parse_fixed(view)
    _check_fixed(mode, bits, dtype_code, ndim, axis, dominant, chunk_log2, filt, reserved)
    reader = _Reader(view, _FIXED.size)
    shape = reader.u32(ndim, "shape")
    n = int(np.prod(shape, dtype=object))
    limit = min(int(max_elements), MAX_ELEMENTS)
    if n > limit:
        raise ShapeOverflow(f"shape {shape} has {n} elements, more than the limit {limit}")
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
    q = _decode_chunks(payload, chunk_sizes, n, chunk_log2, bits, dominant, len_a, len_b)
    if filt == FILTER_DELTA:
        _kernels.undelta(q, (1 << bits) - 1)
    return q.reshape(shape), meta


def decode_tensor(data, codebook=None, max_elements: int = DEFAULT_MAX_ELEMENTS) -> np.ndarray:
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
    pad = _kernels.PAD
    buf = _buffer("dec", size + pad, np.uint8)
    buf[:size] = np.frombuffer(payload, np.uint8)
    buf[size : size + pad] = 0
    ends = np.cumsum(chunk_sizes)
    chunk = 1 << chunk_log2
    sym_start = np.arange(chunk_sizes.size, dtype=np.int64) * chunk
    sym_end = np.minimum(sym_start + chunk, n)
    out = np.full(n, dominant, np.uint8)
    lanes = _lanes(ends)
    status = _kernels.decode(buf, (ends - chunk_sizes) * 8, ends * 8, sym_start, sym_end, lanes, table, peek, out)
    if status:
        raise CorruptPayload(f"corrupt payload: {_KERNEL_ERRORS.get(int(status), 'decoder error')}")
    return out


def _lanes(ends):
    """Split chunks into 4 runs of consecutive chunks with about equal bytes."""
    targets = ends[-1] * np.arange(1, 4) / 4
    cuts = np.searchsorted(ends, targets, side="left")
    return np.concatenate([[0], np.minimum(cuts + 1, ends.size), [ends.size]]).astype(np.int64)
