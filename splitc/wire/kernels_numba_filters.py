"""numba kernels of the wire codec, part 2: filters (delta, MED), bit packing and sampling statistics.

Re-exported by ``kernels_numba``; same conventions (unsigned indices, no bounds
checks: callers size the buffers) and byte-identical to ``kernels_numpy``.
"""

from __future__ import annotations

import numpy as np

from splitc.wire.huffman import TOKEN_INDEX_MASK
from splitc.wire.kernels_numba_base import I, U, _inline, _load_be, _njit, _store_be


@_inline
def _clamp_sum(a, b, c):
    """The MED predictor: ``a + b - c`` clamped to ``[min(a, b), max(a, b)]`` (branch-free)."""
    return min(max(a + b - c, min(a, b)), max(a, b))


@_inline
def _med_prediction(q, i, width):
    """The MED filter's prediction of ``q[i]`` in rows of ``width`` (docs/wire-format.md)."""
    if i < width:
        return I(q[U(i - 1)]) if i > 0 else I(0)
    b = I(q[U(i - width)])
    if i % width == 0:
        return b
    return _clamp_sum(I(q[U(i - 1)]), b, I(q[U(i - width - 1)]))


@_inline
def _residuals(q, i, width, mask):
    """(symbol, delta, MED residual) at ``i``; all 0 before the start."""
    if i < 0:
        return I(0), I(0), I(0)
    s = I(q[U(i)])
    before = I(q[U(i - 1)]) if i > 0 else I(0)
    return s, (s - before) & mask, (s - _med_prediction(q, i, width)) & mask


@_njit
def sample_pairs(q, stride, mask, width):
    """Rows: symbol, delta and MED residual at i, each followed by its value at i - 1 (0 before the start).

    For i in ``range(0, n, stride)``; the MED residual uses rows of ``width`` symbols.
    """
    count = (q.size + stride - 1) // stride
    out = np.zeros((6, count), np.int64)
    for k in range(count):
        i = k * stride
        out[0, k], out[2, k], out[4, k] = _residuals(q, i, width, mask)
        out[1, k], out[3, k], out[5, k] = _residuals(q, i - 1, width, mask)
    return out


@_njit
def undelta(q, mask):
    """Invert the delta filter in place: ``q[i] = (q[i] + q[i-1]) & mask``."""
    acc = I(0)
    for i in range(q.size):
        acc = (acc + I(q[U(i)])) & mask
        q[U(i)] = np.uint8(acc)


@_njit
def med(q, width, mask, out):
    """The MED filter: ``out[i] = (q[i] - prediction(i)) & mask`` in rows of ``width``."""
    n = q.size
    for i in range(min(n, width)):
        out[U(i)] = np.uint8((I(q[U(i)]) - (I(q[U(i - 1)]) if i > 0 else I(0))) & mask)
    for r in range(width, n, width):
        out[U(r)] = np.uint8((I(q[U(r)]) - I(q[U(r - width)])) & mask)
        for i in range(r + 1, min(n, r + width)):
            p = _clamp_sum(I(q[U(i - 1)]), I(q[U(i - width)]), I(q[U(i - width - 1)]))
            out[U(i)] = np.uint8((I(q[U(i)]) - p) & mask)


@_inline
def _unmed_step(q, i, width, a, c, mask):
    """Undo the MED filter at ``i`` (not in row 0 or column 0) given its left ``a`` and up-left ``c``.

    Returns the new (left, up-left) pair for ``i + 1``.
    """
    b = I(q[U(i - width)])
    a = (I(q[U(i)]) + _clamp_sum(a, b, c)) & mask
    q[U(i)] = np.uint8(a)
    return a, b


@_njit
def unmed(q, width, mask):
    """Invert the MED filter in place.

    Row 0 is a prefix sum; then rows go by fours, skewed by one column each,
    so that four independent dependency chains overlap.
    """
    n = q.size
    acc = I(0)
    for i in range(min(n, width)):
        acc = (acc + I(q[U(i)])) & mask
        q[U(i)] = np.uint8(acc)
    rows = n // width
    r = 1
    while r < rows:
        group = min(4, rows - r)
        s0 = r * width
        for k in range(group):  # column 0: the sample above
            i = s0 + k * width
            q[U(i)] = np.uint8((I(q[U(i)]) + I(q[U(i - width)])) & mask)
        s1, s2, s3 = s0 + width, s0 + 2 * width, s0 + 3 * width
        a0, c0 = I(q[U(s0)]), I(q[U(s0 - width)])
        a1, c1 = I(q[U(s1)]), I(q[U(s1 - width)])
        a2, c2 = I(q[U(min(s2, n - 1))]), I(q[U(s2 - width)])
        a3, c3 = I(q[U(min(s3, n - 1))]), I(q[U(min(s3, n) - width)])
        if group == 4:
            for t in range(1, width + 3):
                if t < width:
                    a0, c0 = _unmed_step(q, s0 + t, width, a0, c0, mask)
                if 1 <= t - 1 < width:
                    a1, c1 = _unmed_step(q, s1 + t - 1, width, a1, c1, mask)
                if 1 <= t - 2 < width:
                    a2, c2 = _unmed_step(q, s2 + t - 2, width, a2, c2, mask)
                if 1 <= t - 3 < width:
                    a3, c3 = _unmed_step(q, s3 + t - 3, width, a3, c3, mask)
        else:
            for k in range(group):
                start = s0 + k * width
                a, c = I(q[U(start)]), I(q[U(start - width)])
                for i in range(start + 1, start + width):
                    a, c = _unmed_step(q, i, width, a, c, mask)
        r += group


@_njit
def pack_bits(q, bits, out):
    """Each symbol as ``bits`` bits, MSB first (8 symbols = ``bits`` bytes); ``out`` needs 8 spare bytes.

    Returns the byte count, ``ceil(n * bits / 8)``.
    """
    n = q.size
    groups = n >> 3
    top = U(64 - 8 * bits)
    for g in range(groups):
        w = U(0)
        for j in range(8):
            w = (w << U(bits)) | U(q[U(8 * g + j)])
        _store_be(out, g * bits, w << top)
    rest = n - 8 * groups
    if rest:
        w = U(0)
        for j in range(rest):
            w = (w << U(bits)) | U(q[U(8 * groups + j)])
        _store_be(out, groups * bits, w << U(64 - rest * bits))
    return (n * bits + 7) >> 3


@_njit
def unpack_bits(buf, bits, out):
    """Inverse of ``pack_bits`` into ``out`` (n symbols); ``buf`` needs 8 zero bytes after the payload."""
    n = out.size
    groups = n >> 3
    mask = U((1 << bits) - 1)
    top = U(64 - 8 * bits)
    for g in range(groups):
        w = _load_be(buf, g * bits) >> top
        for j in range(8):
            out[U(8 * g + j)] = np.uint8((w >> U(bits * (7 - j))) & mask)
    w = _load_be(buf, groups * bits)
    for j in range(n - 8 * groups):
        out[U(8 * groups + j)] = np.uint8((w >> U(64 - bits * (j + 1))) & mask)


@_njit
def class_histogram(tok, tok_end, bucket, size_a, size_b, rows):
    """Token counts by the distance bucket of the previous literal: ``h[bucket, index]`` (int32).

    ``bucket[s]`` is the bucket of literal ``s``; a chunk's first token and a
    token after a run count in bucket 0.
    """
    h = np.zeros((rows, size_a + size_b), np.int32)
    t0 = 0
    for ci in range(tok_end.size):
        m = I(0)
        for j in range(t0, tok_end[ci]):
            index = I(tok[U(j)] & TOKEN_INDEX_MASK)
            h[m, index] += 1
            if index >= size_a:
                m = bucket[index - size_a]
            else:
                m = bucket[index] if index < bucket.size else 0
        t0 = tok_end[ci]
    return h
