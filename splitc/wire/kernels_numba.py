"""numba kernels of the wire codec (the fast path; see kernels_numpy for the fallback).

Every kernel is a single-threaded loop compiled by numba. Array indices are
unsigned so that LLVM merges the byte loads/stores of a 64-bit big-endian word
into one load/store plus a byte swap. ``boundscheck`` is off, so memory
safety rests on the callers and on the decoder's own checks: it writes a
symbol only below its chunk's end, reads a table entry only through a masked
index, and reads the payload at most ``PAD`` bytes past a chunk's start (a
chunk stops after at most 2**15 tokens of at most 28 bits); the caller pads
the payload with ``PAD`` zero bytes. Overruns are reported when a chunk ends.
"""

from __future__ import annotations

import numba  # noqa: F401 - without numba this import fails and the codec falls back to kernels_numpy
import numpy as np

from splitc.wire.huffman import (
    TOKEN_INDEX_BITS,
    TOKEN_INDEX_MASK,
    TOKEN_VALUE_SHIFT,
)

from splitc.wire.kernels_numba_base import I, U, _inline, _jit, _load_be, _load_le, _njit, _store_be  # noqa: F401

# Zero bytes the decoder needs after the payload: a corrupt chunk is caught at
# its end, after at most 2**15 tokens of at most 28 bits (+ one 8-byte peek).
PAD = (1 << 15) * 28 // 8 + 16

# Status codes (shared with codec_numpy). This decoder reports a bit pattern
# that is no code as RUN_OVERFLOW: its table entry is a run longer than a chunk.
OK, BAD_CODE, OVERRUN, RUN_OVERFLOW, BAD_END = 0, 1, 2, 3, 4


@_inline
def _token_step(s, dominant, run, k, n_literals, size_a, run_tokens, tok):
    """Branch-free tokenizer step for one symbol; returns (run, k)."""
    is_dom = I(s == dominant)
    not_dom = 1 - is_dom
    has_run = I(run > 0)
    tok[U(k)] = np.uint32(run_tokens[U(run)] + n_literals)
    k += not_dom & has_run
    tok[U(k)] = np.uint32(has_run * size_a + s)
    k += not_dom
    run = (run + 1) * is_dom
    return run, k


@_njit
def tokenize(q, dominant, n_literals, size_a, chunk, run_tokens, tok, tok_end, skip_runs):
    """Turn symbols into tokens; returns (token count, OR of all symbols).

    A token is ``index | extra_bits << 11 | extra_value << 15`` where ``index``
    is the context-A symbol, or ``size_a`` + the context-B symbol. ``tok_end[c]``
    receives the token count after chunk ``c``. With ``skip_runs`` whole 8-byte
    words of the dominant symbol are skipped (faster on sparse maps; same output).
    """
    n = q.size
    k = I(0)
    seen = I(0)
    dom = I(dominant)
    dom8 = U(dominant) * U(0x0101010101010101)
    ci = 0
    for c0 in range(0, n, chunk):
        c1 = min(n, c0 + chunk)
        run = I(0)
        i = c0
        if skip_runs:
            while i + 8 <= c1:
                w = _load_le(q, i)
                if w == dom8:
                    run += 8
                else:
                    for j in range(8):
                        s = I((w >> U(8 * j)) & U(255))
                        seen |= s
                        run, k = _token_step(s, dom, run, k, n_literals, size_a, run_tokens, tok)
                i += 8
        while i < c1:
            s = I(q[U(i)])
            seen |= s
            run, k = _token_step(s, dom, run, k, n_literals, size_a, run_tokens, tok)
            i += 1
        tok[U(k)] = np.uint32(run_tokens[U(run)] + n_literals)
        k += I(run > 0)
        tok_end[ci] = k
        ci += 1
    return k, seen | dom


@_njit
def token_histogram(tok, ntok, nbins):
    """Histogram of token indices (low 10 bits)."""
    h = np.zeros((4, nbins), np.int64)
    m = ntok & ~3
    for i in range(0, m, 4):
        h[0, tok[U(i)] & TOKEN_INDEX_MASK] += 1
        h[1, tok[U(i + 1)] & TOKEN_INDEX_MASK] += 1
        h[2, tok[U(i + 2)] & TOKEN_INDEX_MASK] += 1
        h[3, tok[U(i + 3)] & TOKEN_INDEX_MASK] += 1
    for i in range(m, ntok):
        h[0, tok[U(i)] & TOKEN_INDEX_MASK] += 1
    return h[0] + h[1] + h[2] + h[3]


@_njit
def emit(tok, tok_end, table, out, ends, classes, size_a, n_classes):
    """Write the tokens' codes MSB-first; each chunk is padded to a byte.

    ``out`` needs 8 spare bytes; ``ends[c]`` receives the byte offset after chunk c.
    With literal ``classes`` (context mode, ``n_classes`` > 1; else None) a
    context-A token after a literal of class k (k = 0 at a chunk's start) is
    coded with the code of entry ``k * size_a + index``, a context-B token
    ``size_a + s`` with entry ``n_classes * size_a + s``. Returns the payload length.
    """
    o = I(0)
    t0 = I(0)
    shift_b = (n_classes - 1) * size_a
    for ci in range(tok_end.size):
        acc = U(0)
        nacc = I(0)
        k = I(0)
        for j in range(t0, tok_end[ci]):
            t = tok[U(j)]
            index = I(t & TOKEN_INDEX_MASK)
            if classes is not None:
                if index >= size_a:
                    k = classes[index - size_a] * size_a
                    index += shift_b
                else:
                    add = k
                    if index < classes.size:
                        k = classes[index] * size_a
                    index += add
            e = table[U(index)]
            nx = I((t >> TOKEN_INDEX_BITS) & 15)
            nbits = I(e & 31) + nx
            value = (U(e >> 5) << U(nx)) | U(t >> TOKEN_VALUE_SHIFT)
            nacc += nbits
            acc |= value << U(64 - nacc)
            _store_be(out, o, acc)
            o += nacc >> 3
            acc <<= U(nacc & ~7)
            nacc &= 7
        if nacc:
            _store_be(out, o, acc)
            o += 1
        ends[ci] = o
        t0 = tok_end[ci]
    return o


@_inline
def _decode_step(buf, bp, o, ctx, table, shift, peek_bits, ctx_of, out):
    """Decode one token at bit ``bp``; returns (bp, o, ctx offset).

    The next context's offset is ``ctx_of[symbol]`` after a literal and
    ``ctx_of[256 + symbol]`` after a run (see ``huffman.next_context``); with
    ``ctx_of`` None (one literal context) it is A after a literal, B after a
    run, computed without a lookup (numba compiles each case on its own).

    A bit pattern that is no code has length 0 and run base 0xFFFF: ``o`` jumps
    past the chunk's end, which the caller reports as corrupt.
    """
    w = _load_be(buf, bp >> 3) << U(bp & 7)
    e = table[U(ctx + I(w >> shift))]
    length = I(e & 15)
    nx = I((e >> 4) & 15)
    base = I(e >> 16)
    extra = I(((w << U(length)) >> U(49)) >> U(15 - nx))
    sym = I((e >> 8) & 255)
    out[U(o)] = np.uint8(sym)
    o += base + extra + I(base == 0)
    bp += length + nx
    if ctx_of is None:
        ctx = I(base != 0) << peek_bits
    else:
        ctx = ctx_of[U(sym | (I(base != 0) << 8))]
    return bp, o, ctx


@_inline
def _chunk_end(buf, o, end, bp, end_bit):
    """Status of a chunk whose tokens stopped at symbol ``o`` and bit ``bp``.

    The last token must end exactly at the chunk's last symbol, inside the
    chunk's last byte, and the padding bits after it must be zero.
    """
    if o != end:
        return RUN_OVERFLOW
    if bp > end_bit:
        return OVERRUN
    if (bp + 7) >> 3 != end_bit >> 3:
        return BAD_END
    pad = end_bit - bp
    if pad and (I(buf[U((end_bit >> 3) - 1)]) & ((1 << pad) - 1)) != 0:
        return BAD_END
    return OK


@_njit
def _finish_lane(buf, ci, ci_end, bp, o, ctx, bit_start, bit_end, sym_end, table, shift, peek_bits, ctx_of,
                 out):
    """Decode the rest of one lane: chunk ``ci`` from state (bp, o, ctx), then later chunks."""
    while ci < ci_end:
        end = sym_end[ci]
        while o < end:
            bp, o, ctx = _decode_step(buf, bp, o, ctx, table, shift, peek_bits, ctx_of, out)
        status = _chunk_end(buf, o, end, bp, bit_end[ci])
        if status != OK:
            return status
        ci += 1
        if ci < ci_end:
            bp = bit_start[ci]
            ctx = I(0)
    return OK


@_njit
def decode(buf, bit_start, bit_end, sym_start, sym_end, lanes, table, peek_bits, ctx_of, out):
    """Decode all chunks into ``out`` (pre-filled with the dominant symbol).

    Chunks are split into 4 lanes of consecutive chunks (``lanes`` holds the 5
    chunk boundaries); the 4 lanes are decoded in lock-step so that their
    serial dependency chains overlap. Within a chunk, positions are checked
    only when the chunk ends: a chunk stops after at most 2**15 tokens of at
    most 28 bits, so reads stay inside the ``PAD`` bytes after the payload.
    Returns OK or an error code.
    """
    shift = U(64 - peek_bits)
    a0, a1, a2, a3 = lanes[0], lanes[1], lanes[2], lanes[3]
    b0, b1, b2, b3 = lanes[1], lanes[2], lanes[3], lanes[4]
    p0, p1, p2, p3 = I(0), I(0), I(0), I(0)
    o0, o1, o2, o3 = I(0), I(0), I(0), I(0)
    x0, x1, x2, x3 = I(0), I(0), I(0), I(0)
    if a0 < b0:
        p0, o0 = bit_start[a0], sym_start[a0]
    if a1 < b1:
        p1, o1 = bit_start[a1], sym_start[a1]
    if a2 < b2:
        p2, o2 = bit_start[a2], sym_start[a2]
    if a3 < b3:
        p3, o3 = bit_start[a3], sym_start[a3]
    if a0 < b0 and a1 < b1 and a2 < b2 and a3 < b3:
        e0, e1, e2, e3 = sym_end[a0], sym_end[a1], sym_end[a2], sym_end[a3]
        while True:
            p0, o0, x0 = _decode_step(buf, p0, o0, x0, table, shift, peek_bits, ctx_of, out)
            p1, o1, x1 = _decode_step(buf, p1, o1, x1, table, shift, peek_bits, ctx_of, out)
            p2, o2, x2 = _decode_step(buf, p2, o2, x2, table, shift, peek_bits, ctx_of, out)
            p3, o3, x3 = _decode_step(buf, p3, o3, x3, table, shift, peek_bits, ctx_of, out)
            if (o0 >= e0) | (o1 >= e1) | (o2 >= e2) | (o3 >= e3):
                done = False
                if o0 >= e0:
                    status = _chunk_end(buf, o0, e0, p0, bit_end[a0])
                    if status != OK:
                        return status
                    a0 += 1
                    if a0 == b0:
                        done = True
                    else:
                        p0, x0, e0 = bit_start[a0], I(0), sym_end[a0]
                if o1 >= e1:
                    status = _chunk_end(buf, o1, e1, p1, bit_end[a1])
                    if status != OK:
                        return status
                    a1 += 1
                    if a1 == b1:
                        done = True
                    else:
                        p1, x1, e1 = bit_start[a1], I(0), sym_end[a1]
                if o2 >= e2:
                    status = _chunk_end(buf, o2, e2, p2, bit_end[a2])
                    if status != OK:
                        return status
                    a2 += 1
                    if a2 == b2:
                        done = True
                    else:
                        p2, x2, e2 = bit_start[a2], I(0), sym_end[a2]
                if o3 >= e3:
                    status = _chunk_end(buf, o3, e3, p3, bit_end[a3])
                    if status != OK:
                        return status
                    a3 += 1
                    if a3 == b3:
                        done = True
                    else:
                        p3, x3, e3 = bit_start[a3], I(0), sym_end[a3]
                if done:
                    break
    args = (bit_start, bit_end, sym_end, table, shift, peek_bits, ctx_of, out)
    status = _finish_lane(buf, a0, b0, p0, o0, x0, *args)
    if status == OK:
        status = _finish_lane(buf, a1, b1, p1, o1, x1, *args)
    if status == OK:
        status = _finish_lane(buf, a2, b2, p2, o2, x2, *args)
    if status == OK:
        status = _finish_lane(buf, a3, b3, p3, o3, x3, *args)
    return status


# The filter, packing and sampling kernels (kernels_numba_filters, on the same building blocks).
from splitc.wire.kernels_numba_filters import (  # noqa: E402
    class_histogram,
    med,
    pack_bits,
    sample_pairs,
    undelta,
    unmed,
    unpack_bits,
)

__all__ = ["class_histogram", "decode", "emit", "med", "pack_bits", "sample_pairs", "token_histogram", "tokenize",
           "undelta", "unmed", "unpack_bits"]
