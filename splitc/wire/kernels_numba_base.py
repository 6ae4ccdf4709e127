"""Building blocks shared by the wire's numba kernels: integer types, the cached njit and byte loads/stores."""

from __future__ import annotations

import numba  # noqa: F401 - without numba this import fails and the codec falls back to kernels_numpy
import numpy as np

from splitc.wire.huffman import njit_cached

U = np.uint64
I = np.int64
def _jit(**options):
    """numba.njit with an on-disk cache, or without one where it cannot be written (one warning)."""
    return lambda fn: njit_cached(fn, boundscheck=False, **options)


_njit = _jit()
_inline = _jit(inline="always")


@_inline
def _load_le(q, b):
    b = U(b)
    return (
        (U(q[b + U(7)]) << U(56)) | (U(q[b + U(6)]) << U(48)) | (U(q[b + U(5)]) << U(40))
        | (U(q[b + U(4)]) << U(32)) | (U(q[b + U(3)]) << U(24)) | (U(q[b + U(2)]) << U(16))
        | (U(q[b + U(1)]) << U(8)) | U(q[b])
    )


@_inline
def _load_be(buf, b):
    b = U(b)
    return (
        (U(buf[b]) << U(56)) | (U(buf[b + U(1)]) << U(48)) | (U(buf[b + U(2)]) << U(40))
        | (U(buf[b + U(3)]) << U(32)) | (U(buf[b + U(4)]) << U(24)) | (U(buf[b + U(5)]) << U(16))
        | (U(buf[b + U(6)]) << U(8)) | U(buf[b + U(7)])
    )


@_inline
def _store_be(out, o, x):
    o = U(o)
    m = U(255)
    out[o] = np.uint8(x >> U(56))
    out[o + U(1)] = np.uint8((x >> U(48)) & m)
    out[o + U(2)] = np.uint8((x >> U(40)) & m)
    out[o + U(3)] = np.uint8((x >> U(32)) & m)
    out[o + U(4)] = np.uint8((x >> U(24)) & m)
    out[o + U(5)] = np.uint8((x >> U(16)) & m)
    out[o + U(6)] = np.uint8((x >> U(8)) & m)
    out[o + U(7)] = np.uint8(x & m)
