"""Pure-numpy kernels of the wire codec: the fallback when numba is missing.

Same interface and byte-identical output as codec_numba, with no per-symbol
Python loop: the tokenizer and the bit packer are vectorised over the whole
tensor, and the decoder steps all chunks in lock-step (one numpy step decodes
one token of every unfinished chunk), so it is slower than numba by a factor
that shrinks with the number of chunks.
"""

from __future__ import annotations

import numpy as np

from splitc.wire.huffman import TOKEN_INDEX_BITS, TOKEN_INDEX_MASK, TOKEN_VALUE_SHIFT

PAD = 16
OK, BAD_CODE, OVERRUN, RUN_OVERFLOW, BAD_END = 0, 1, 2, 3, 4
_U64 = np.uint64


def _med_predictions(q: np.ndarray, index: np.ndarray, width: int) -> np.ndarray:
    """The MED filter's predictions of ``q[index]`` in rows of ``width`` (docs/wire-format.md)."""
    q = q.astype(np.int64)
    a = np.where(index > 0, q[np.maximum(index - 1, 0)], 0)
    b = np.where(index >= width, q[np.maximum(index - width, 0)], a)
    c = np.where(index > width, q[np.maximum(index - width - 1, 0)], b)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    pred = np.where(c >= hi, lo, np.where(c <= lo, hi, a + b - c))
    pred = np.where((index % width == 0) & (index >= width), b, pred)
    return np.where(index < width, a, pred)


def sample_pairs(q: np.ndarray, stride: int, mask: int, width: int) -> np.ndarray:
    """Rows: symbol, delta and MED residual at i, each followed by its value at i - 1 (0 before the start).

    For i in ``range(0, n, stride)``; the MED residual uses rows of ``width`` symbols.
    """
    index = np.arange(0, q.size, stride)
    rows = []
    for at in (index, index - 1):
        valid = at >= 0
        at = np.maximum(at, 0)
        sample = q[at].astype(np.int64)
        before = np.where(at > 0, q[np.maximum(at - 1, 0)], 0).astype(np.int64)
        residual = (sample - _med_predictions(q, at, width)) & mask
        rows.append([np.where(valid, v, 0) for v in (sample, (sample - before) & mask, residual)])
    return np.array([v for pair in zip(*rows) for v in pair], np.int64).reshape(6, index.size)


def med(q: np.ndarray, width: int, mask: int, out: np.ndarray) -> None:
    """The MED filter: ``out[i] = (q[i] - prediction(i)) & mask`` in rows of ``width``."""
    index = np.arange(q.size)
    np.bitwise_and(q.astype(np.int64) - _med_predictions(q, index, width), mask, out=out[: q.size], casting="unsafe")


def unmed(q: np.ndarray, width: int, mask: int) -> None:
    """Invert the MED filter in place: row 0 and column 0 by prefix sums, the rest by anti-diagonals."""
    rows = q.size // width
    grid = q.reshape(rows, width)
    undelta(grid[0], mask)
    column = np.ascontiguousarray(grid[:, 0])
    undelta(column, mask)
    grid[:, 0] = column
    g = grid.astype(np.int64)
    for k in range(2, rows + width - 1):  # cells (r, k - r) with r, k - r >= 1 depend on earlier diagonals only
        r = np.arange(max(1, k - width + 1), min(rows - 1, k - 1) + 1)
        x = k - r
        a, b, c = g[r, x - 1], g[r - 1, x], g[r - 1, x - 1]
        lo, hi = np.minimum(a, b), np.maximum(a, b)
        g[r, x] = (g[r, x] + np.where(c >= hi, lo, np.where(c <= lo, hi, a + b - c))) & mask
    grid[:] = g


def pack_bits(q: np.ndarray, bits: int) -> np.ndarray:
    """Each symbol as ``bits`` bits, MSB first: 8 symbols make ``bits`` bytes (uint8 array)."""
    n = q.size
    groups = (n + 7) // 8
    v = np.zeros(groups * 8, _U64)
    v[:n] = q
    shifts = (_U64(64) - _U64(bits) * np.arange(1, 9, dtype=_U64)).astype(_U64)
    words = np.bitwise_or.reduce(v.reshape(groups, 8) << shifts, axis=1)
    return words.astype(">u8").view(np.uint8).reshape(groups, 8)[:, :bits].reshape(-1)[: (n * bits + 7) // 8]


def unpack_bits(payload, bits: int, n: int) -> np.ndarray:
    """Inverse of ``pack_bits``: ``n`` symbols."""
    groups = (n + 7) // 8
    raw = np.zeros((groups, 8), np.uint8)
    flat = np.frombuffer(payload, np.uint8)
    padded = np.zeros(groups * bits, np.uint8)
    padded[: flat.size] = flat
    raw[:, :bits] = padded.reshape(groups, bits)
    words = raw.view(">u8").reshape(groups, 1).astype(_U64)
    shifts = (_U64(64) - _U64(bits) * np.arange(1, 9, dtype=_U64)).astype(_U64)
    return ((words >> shifts) & _U64((1 << bits) - 1)).astype(np.uint8).reshape(-1)[:n]


def context_tokens(tok, tok_end, classes, size_a, n_classes):
    """Move every token to its context's alphabet, in place (the contexts of codec_numba.emit).

    A context-A token after a literal of class k (k = 0 at a chunk's start)
    gets index ``k * size_a + index``, a context-B token (``size_a + s``) gets
    ``n_classes * size_a + s``.
    """
    index = (tok & TOKEN_INDEX_MASK).astype(np.int64)
    literal = np.where(index >= size_a, index - size_a, index)
    cls = np.where(literal < classes.size, classes[np.minimum(literal, classes.size - 1)], 0)
    before = np.zeros(tok.size, np.int64)
    before[1:] = cls[:-1]
    before[tok_end[:-1][tok_end[:-1] < tok.size]] = 0
    shift = np.where(index >= size_a, (n_classes - 1) * size_a, before * size_a)
    tok += shift.astype(np.uint32)


def class_histogram(tok, tok_end, bucket, size_a, size_b, rows):
    """Token counts by the distance bucket of the previous literal (same as codec_numba.class_histogram)."""
    index = (tok & TOKEN_INDEX_MASK).astype(np.int64)
    literal = np.where(index >= size_a, index - size_a, index)
    m = np.where(literal < bucket.size, bucket[np.minimum(literal, bucket.size - 1)], 0)
    before = np.zeros(tok.size, np.int64)
    before[1:] = m[:-1]
    before[tok_end[:-1][tok_end[:-1] < tok.size]] = 0
    nbins = size_a + size_b
    return np.bincount(before * nbins + index, minlength=rows * nbins).reshape(rows, nbins).astype(np.int32)


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
    return np.bincount(tok & TOKEN_INDEX_MASK, minlength=nbins).astype(np.int64)


def emit(tok, tok_end, table):
    """Pack the tokens' codes MSB-first, each chunk padded to a byte.

    Returns (payload uint8 array, byte offset after each chunk).
    """
    t = tok.astype(np.int64)
    entry = table[t & TOKEN_INDEX_MASK].astype(np.int64)
    extra_bits = (t >> TOKEN_INDEX_BITS) & 15
    nbits = (entry & 31) + extra_bits
    value = ((entry >> 5) << extra_bits) | (t >> TOKEN_VALUE_SHIFT)
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


def decode(buf, bit_start, bit_end, sym_start, sym_end, lanes, table, peek_bits, ctx_of, out):
    """Decode all chunks into ``out`` (pre-filled with the dominant symbol); ``lanes`` is unused.

    ``ctx_of`` gives the next context's table offset (see ``huffman.next_context``); None: A after a
    literal, B after a run.
    """
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
        sym = (e >> 8) & 255
        out[o] = sym
        o += base + extra.astype(np.int64) + (base == 0)
        bp += length + extra_bits
        run = (base != 0).astype(np.int64)
        ctx = run << peek_bits if ctx_of is None else ctx_of[sym | (run << 8)]
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
