"""Wire codec, kernel selection: the numba or numpy kernels of the hot loops, and scratch buffers.

``kernels`` is the module of the kernels in use and ``BACKEND`` its name; both
change with ``set_backend``, so other modules read them through this module
at call time (``codec_backend.kernels``), never bind them at import.
"""

from __future__ import annotations

import threading

import numpy as np

from splitc.wire import huffman as hf
from splitc.wire import kernels_numpy as codec_numpy

try:
    from splitc.wire import kernels_numba as codec_numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    codec_numba = None

kernels = codec_numba if codec_numba is not None else codec_numpy
BACKEND = "numba" if codec_numba is not None else "numpy"


def set_backend(name: str) -> str:
    """Select the kernels: ``"numba"`` (default when installed) or ``"numpy"``.

    Both produce identical bytes; returns the previous backend name.
    """
    global kernels, BACKEND
    if name not in ("numba", "numpy"):
        raise ValueError(f"unknown backend {name!r}: use 'numba' or 'numpy'")
    if name == "numba" and codec_numba is None:
        raise ValueError("numba is not installed")
    previous = BACKEND
    kernels = codec_numba if name == "numba" else codec_numpy
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


def _token_counts(flat, bits, dominant, chunk, skip_runs=False, scratch="tok"):
    """Token histogram (context A then B), the tokens and the token count after each chunk.

    ``skip_runs`` only picks the faster numba loop for sparse tensors.
    """
    size_a, size_b = hf.alphabet_sizes(bits)
    n_lit = 1 << bits
    if kernels is codec_numba:
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


def _emit(tok, tok_end, table, classes=None, size_a=0, n_classes=1):
    """(payload as a bytes-like, byte offset after each chunk).

    With ``n_classes`` > 1 literal ``classes`` (context mode), tokens are coded in their contexts'
    alphabets (``codec_numba.emit``); the numpy path moves ``tok`` to them in place first.
    """
    if n_classes == 1:
        classes = None
    if kernels is codec_numba:
        out = _buffer("out", 4 * tok.size + tok_end.size + 16, np.uint8)
        ends = np.empty(tok_end.size, np.int64)
        size = codec_numba.emit(tok, tok_end, table, out, ends, classes, size_a, n_classes)
        return memoryview(out)[:size], ends
    if classes is not None:
        codec_numpy.context_tokens(tok, tok_end, classes, size_a, n_classes)
    payload, ends = codec_numpy.emit(tok, tok_end, table)
    return memoryview(payload), ends


def _pack(flat: np.ndarray, bits: int):
    """Packed-mode payload: each symbol as ``bits`` bits, MSB first (a bytes-like)."""
    if kernels is codec_numba:
        out = _buffer("packed", (flat.size * bits + 7) // 8 + 8, np.uint8)
        return memoryview(out)[: codec_numba.pack_bits(flat, bits, out)]
    return codec_numpy.pack_bits(flat, bits).tobytes()


def _unpack(payload, n: int, bits: int) -> np.ndarray:
    """``n`` symbols from a packed-mode payload of exactly ``ceil(n * bits / 8)`` bytes."""
    if kernels is codec_numba:
        size = len(payload)
        buf = _buffer("unpacked", size + 8, np.uint8)
        buf[:size] = np.frombuffer(payload, np.uint8)
        buf[size : size + 8] = 0
        out = np.empty(n, np.uint8)
        codec_numba.unpack_bits(buf, bits, out)
        return out
    return codec_numpy.unpack_bits(payload, bits, n)
