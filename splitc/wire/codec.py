"""Wire codec for one cut tensor: quantization, run-length + canonical Huffman coding, framing.

The edge half quantizes the cut tensor to ``bits`` (1..8) bits per element, codes
the symbols with a canonical Huffman code over an alphabet of literal symbols and
run-length symbols (runs of the tensor's dominant symbol, as in JPEG) - after a
delta or MED prediction filter when that pays, and with up to four literal
contexts (context mode) - or bit-packs them when that is smaller, and sends one
self-describing frame. ``bits`` 16 and 32 send float16 / float32 values as is.
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

This module holds the encoder and is the public face of the codec; the rest lives
in ``format`` (constants, header, errors, frame parsing), ``quant``
(quantization), ``choose`` (the encoder's choice of filter and mode),
``lengths`` (compact code lengths), ``backend`` (numba / numpy kernels),
``codebook`` (static codebooks) and ``decode`` (decoding), re-exported here.
"""

from __future__ import annotations

import numpy as np

# Besides __all__, this module keeps every name it had before the split (the
# MODE_* / FILTER_* constants, CODERS, DTYPES, codec_numba...): some are only re-exported.
from splitc.wire import backend as _backend
from splitc.wire import huffman as hf
from splitc.wire import jpeg as codec_jpeg
from splitc.wire import kernels_numpy as codec_numpy  # noqa: F401
from splitc.wire.backend import _buffer, _emit, _token_counts, codec_numba, set_backend  # noqa: F401
from splitc.wire.choose import (
    ENCODE_FILTERS,
    ENCODE_MODES,
    encode_lossless,
    packed_frame,
)
from splitc.wire.codebook import Codebook
from splitc.wire.decode import decode, decode_tensor
from splitc.wire.format import (  # noqa: F401
    CODEBOOK_MAGIC,
    CODEBOOK_VERSION,
    CODERS,
    DEFAULT_CHUNK_LOG2,
    DEFAULT_MAX_ELEMENTS,
    DELTA_ONLY_RATIO,
    DELTA_TRY_RATIO,
    DENSE_SHARE,
    DTYPES,
    ENCODE_MAX_CODE_LEN,
    EXPANSION_FLOOR,
    EXPANSION_RATIO,
    FILTER_DELTA,
    FILTER_MED,
    FILTER_NAMES,
    FILTER_NONE,
    HEADER_SIZE,
    MAGIC,
    MAX_ELEMENTS,
    MAX_NDIM,
    MODE_CONSTANT,
    MODE_CONTEXT,
    MODE_EMBEDDED,
    MODE_JPEG,
    MODE_NAMES,
    MODE_PACKED,
    MODE_RAW,
    MODE_STATIC,
    PER_TENSOR,
    QUANT_BITS,
    RAW_BITS,
    VERSION,
    BadHeader,
    BadMagic,
    BadVersion,
    CodecError,
    CorruptPayload,
    InvalidCodebook,
    LengthMismatch,
    Meta,
    ShapeOverflow,
    TruncatedFrame,
    _frame,
    _pack_nibbles,
)
from splitc.wire.quant import (
    _check_quant_bits,
    _flat_symbols,
    _normalize_axis,
    dequantize,
    quantize,
)

__all__ = [
    "MAGIC",
    "VERSION",
    "HEADER_SIZE",
    "MAX_ELEMENTS",
    "DEFAULT_MAX_ELEMENTS",
    "ENCODE_MODES",
    "ENCODE_FILTERS",
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


def __getattr__(name: str):
    # BACKEND changes with set_backend: read it from codec_backend on each access.
    if name == "BACKEND":
        return _backend.BACKEND
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), "BACKEND"])


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
    quality: int = 90,
    modes=None,
    filters=None,
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
    ``coder="huffman"`` (the default) codes the symbols losslessly in the
    smallest of the modes named in ``modes`` (default: all of ``ENCODE_MODES``,
    i.e. embedded, static, context and packed), so a frame is never larger
    than the packed frame of the same symbols (unless ``modes`` leaves packed
    out); ``filters`` (default: all of ``ENCODE_FILTERS``: none, delta, med)
    limits the filters it may try. ``coder="none"`` skips entropy coding: the symbols are bit-packed,
    ``bits`` bits each (packed mode). ``coder="jpeg"`` (bits 8, a per-tensor range, an
    image-shaped tensor: see ``codec_jpeg``) codes the symbols as one JPEG
    picture at ``quality``: lossy, the decoder gets symbols close to ``q``.
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
        return packed_frame(flat, head)
    if coder == "jpeg":
        if bits != 8 or axis != PER_TENSOR:
            raise ValueError("JPEG coding needs bits 8 and a per-tensor range")
        return _frame(head, MODE_JPEG, 0, 0, FILTER_NONE, b"", b"", codec_jpeg.encode(flat.reshape(shape), quality))
    allowed = ENCODE_MODES if modes is None else tuple(modes)
    if not allowed or any(m not in ENCODE_MODES for m in allowed):
        raise ValueError(f"modes must be a non-empty subset of {ENCODE_MODES}, got {modes!r}")
    tried = ENCODE_FILTERS if filters is None else tuple(filters)
    if not tried or any(f not in ENCODE_FILTERS for f in tried):
        raise ValueError(f"filters must be a non-empty subset of {ENCODE_FILTERS}, got {filters!r}")
    return encode_lossless(flat, head, codebook, chunk_log2, allowed, tried)


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


def _check_shape(shape, size):
    if len(shape) > MAX_NDIM or any(d < 0 or d > 0xFFFFFFFF for d in shape):
        raise ValueError(f"shape {shape}: at most {MAX_NDIM} dims of 0..2**32-1")
    if int(np.prod(shape, dtype=object)) != size:
        raise ValueError(f"shape {shape} does not hold {size} elements")
    span = int(np.prod([max(d, 1) for d in shape], dtype=object))  # empty dims count as 1, as the decoder does
    if span > MAX_ELEMENTS:
        raise ValueError(f"shape {shape} is more than the format limit of {MAX_ELEMENTS} elements")


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
    half = values.size // 2
    with np.errstate(over="ignore", invalid="ignore"):
        if not np.all(np.isfinite(values[half:] - values[:half])):
            raise ValueError("the range hi - lo is not finite in float32 (the decoder would refuse the frame)")
    return axis, values.astype("<f4").tobytes()
