"""Pure-numpy kernels of the wire codec: the fallback when numba is missing.

Same interface and byte-identical output as codec_numba, with no per-symbol
Python loop: the tokenizer and the bit packer are vectorised over the whole
tensor, and the decoder steps all chunks in lock-step (one numpy step decodes
one token of every unfinished chunk), so it is slower than numba by a factor
that shrinks with the number of chunks.
"""

from __future__ import annotations

import numpy as np

PAD = 16
OK, BAD_CODE, OVERRUN, RUN_OVERFLOW, BAD_END = 0, 1, 2, 3, 4
_U64 = np.uint64


def sample_histograms(q: np.ndarray, stride: int, mask: int):
    """Histograms (256 bins) of ``q[i]`` and of ``(q[i] - q[i-1]) & mask`` for i in ``range(0, n, stride)``.

    ``q[-1]`` counts as 0.
    """
    index = np.arange(0, q.size, stride)
    sample = q[index]
    before = np.where(index > 0, q[np.maximum(index - 1, 0)], 0).astype(np.uint8)
    delta = (sample - before) & mask
    return np.bincount(sample, minlength=256).astype(np.int64), np.bincount(delta, minlength=256).astype(np.int64)


def undelta(q: np.ndarray, mask: int) -> None:
    """Invert the delta filter in place: ``q[i] = (q[i] + q[i-1]) & mask``."""
    np.cumsum(q, dtype=np.uint8, out=q)
    np.bitwise_and(q, mask, out=q)


def _neighbours(is_dom: np.ndarray, chunk: int) -> tuple[np.ndarray, np.ndarray]:
    """Whether the previous / next symbol in the same chunk is the dominant one."""
    n = is_dom.size
    prev = np.zeros(n, bool)
    prev[1:] = is_dom[:-1]
    prev[::chunk] = False
    nxt = np.zeros(n, bool)
    nxt[:-1] = is_dom[1:]
    nxt[chunk - 1 :: chunk] = False
    return prev, nxt


def tokenize(q, dominant, n_literals, size_a, chunk, run_tokens):
    """Tokens (uint32, same packing as codec_numba.tokenize), per-chunk ends, OR of symbols."""
    n = q.size
    is_dom = q == dominant
    prev, nxt = _neighbours(is_dom, chunk)
    starts = np.flatnonzero(is_dom & ~prev)
    ends = np.flatnonzero(is_dom & ~nxt)
    literals = np.flatnonzero(~is_dom)
    run_tok = run_tokens[ends - starts + 1].astype(np.int64) + n_literals
    lit_tok = prev[literals].astype(np.int64) * size_a + q[literals]
    position = np.concatenate([starts, literals])
    order = np.argsort(position, kind="stable")
    tok = np.concatenate([run_tok, lit_tok])[order].astype(np.uint32)
    bounds = np.arange(1, (n + chunk - 1) // chunk + 1, dtype=np.int64) * chunk
    tok_end = np.searchsorted(position[order], bounds, side="left").astype(np.int64)
    seen = int(np.bitwise_or.reduce(q)) | int(dominant)
    return tok, tok_end, seen


def token_histogram(tok: np.ndarray, nbins: int) -> np.ndarray:
    """Histogram of token indices (low 10 bits)."""
    return np.bincount(tok & 1023, minlength=nbins).astype(np.int64)


def emit(tok, tok_end, table):
    """Pack the tokens' codes MSB-first, each chunk padded to a byte.

    Returns (payload uint8 array, byte offset after each chunk).
    """
    t = tok.astype(np.int64)
    entry = table[t & 1023].astype(np.int64)
    extra_bits = (t >> 10) & 15
    nbits = (entry & 31) + extra_bits
    value = ((entry >> 5) << extra_bits) | (t >> 14)
    counts = np.diff(np.concatenate([[0], tok_end]))
    chunk_of = np.repeat(np.arange(tok_end.size), counts)
    total = np.cumsum(nbits)
    before = np.concatenate([[0], total])[np.concatenate([[0], tok_end])]
    chunk_bits = np.diff(before)
    chunk_bytes = (chunk_bits + 7) // 8
    ends = np.cumsum(chunk_bytes)
    first_byte = ends - chunk_bytes
    local = total - nbits - before[:-1][chunk_of]
    position = first_byte[chunk_of] * 8 + local
    return _pack(value, nbits, position, int(ends[-1]) if ends.size else 0), ends


def _pack(value, nbits, position, nbytes):
    """OR each value (nbits wide) into a big-endian bitstream at its (increasing) bit position."""
    words = np.zeros(nbytes // 8 + 2, _U64)
    aligned = value.astype(_U64) << (64 - nbits).astype(_U64)
    offset = (position & 63).astype(_U64)
    word = position >> 6
    _or_sorted(words, word, aligned >> offset)
    spill = (position & 63) + nbits > 64
    _or_sorted(words, word[spill] + 1, aligned[spill] << (_U64(64) - offset[spill]))
    return words.astype(">u8").view(np.uint8)[:nbytes].copy()


def _or_sorted(words, index, bits):
    """``words[index] |= bits`` for a sorted ``index`` with repeats (bits do not overlap)."""
    if index.size == 0:
        return
    first = np.flatnonzero(np.diff(index, prepend=-1))
    words[index[first]] |= np.bitwise_or.reduceat(bits, first)


def _load_be(buf, byte):
    """Big-endian 64-bit words starting at the given byte offsets."""
    w = np.zeros(byte.size, _U64)
    for j in range(8):
        w = (w << _U64(8)) | buf[byte + j].astype(_U64)
    return w


def _chunk_end_ok(buf, bp, end_bit):
    """Vectorised codec_numba._chunk_end_ok."""
    pad = end_bit - bp
    last = buf[np.maximum((end_bit >> 3) - 1, 0)].astype(np.int64)
    return (((bp + 7) >> 3) == (end_bit >> 3)) & ((last & ((1 << pad) - 1)) == 0)


def decode(buf, bit_start, bit_end, sym_start, sym_end, lanes, table, peek_bits, out):
    """Decode all chunks into ``out`` (pre-filled with the dominant symbol); ``lanes`` is unused."""
    shift = _U64(64 - peek_bits)
    chunk = np.arange(bit_start.size)
    bp = bit_start.astype(np.int64)
    o = sym_start.astype(np.int64)
    ctx = np.zeros(chunk.size, np.int64)
    while chunk.size:
        w = _load_be(buf, bp >> 3) << (bp & 7).astype(_U64)
        e = table[ctx + (w >> shift).astype(np.int64)].astype(np.int64)
        length = e & 15
        if np.any(length == 0):
            return BAD_CODE
        extra_bits = (e >> 4) & 15
        base = e >> 16
        extra = ((w << length.astype(_U64)) >> _U64(49)) >> (15 - extra_bits).astype(_U64)
        out[o] = (e >> 8) & 255
        o += base + extra.astype(np.int64) + (base == 0)
        bp += length + extra_bits
        ctx = (base != 0).astype(np.int64) << peek_bits
        if np.any(bp > bit_end[chunk]):
            return OVERRUN
        done = o >= sym_end[chunk]
        if np.any(done):
            if np.any(o[done] != sym_end[chunk[done]]):
                return RUN_OVERFLOW
            if not np.all(_chunk_end_ok(buf, bp[done], bit_end[chunk[done]])):
                return BAD_END
            keep = ~done
            chunk, bp, o, ctx = chunk[keep], bp[keep], o[keep], ctx[keep]
    return OK
