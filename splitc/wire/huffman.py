"""Canonical Huffman codes and the run-length token alphabet of the wire codec.

Pure functions on small arrays (one entry per alphabet symbol, at most 288),
shared by the numba and the numpy kernels. They are compiled with numba when it
is installed and run as plain Python otherwise; both give identical results.

The token alphabet (see docs/wire-format.md):

* context A (start of a chunk, or after a literal): ``2**bits`` literal symbols,
  then ``RUN_CLASSES`` run classes for runs of the dominant symbol;
* context B (right after a run): the ``2**bits`` literal symbols only.

Run class ``k`` codes a run of ``run_base(k) + extra`` dominant symbols, where
``extra`` is a ``run_extra_bits(k)``-bit number sent right after the code.
Context mode splits context A into one context per literal class (the class
of the previous literal, ``literal_classes``); its tables lie back to back.
"""

from __future__ import annotations

import numpy as np

try:  # numba is optional: without it these helpers run as plain Python.
    import numba
except ImportError:  # pragma: no cover - exercised only where numba is missing
    numba = None


_cache_warned = False


def njit_cached(fn, **options):
    """``numba.njit(cache=True, nogil=True, **options)(fn)``, or without the cache where numba cannot write one.

    Where numba finds no writable cache directory (a read-only install and no
    writable ``$HOME`` / ``NUMBA_CACHE_DIR``) it refuses ``cache=True`` with
    "cannot cache function"; then the function compiles in memory, in each
    process, and one RuntimeWarning says so.
    """
    global _cache_warned
    try:
        return numba.njit(cache=True, nogil=True, **options)(fn)
    except RuntimeError as exc:
        if "cannot cache" not in str(exc):
            raise
        if not _cache_warned:
            import warnings

            _cache_warned = True
            warnings.warn(f"splitc codec: numba cannot cache its compiled kernels ({exc}); they compile in "
                          f"each process (set NUMBA_CACHE_DIR to a writable directory)", RuntimeWarning,
                          stacklevel=2)
        return numba.njit(nogil=True, **options)(fn)


def jit(fn):
    """Compile with numba when it is installed (cached on disk where possible); else keep the Python function."""
    return njit_cached(fn) if numba is not None else fn

MAX_CODE_LEN = 15  # longest Huffman code, so a code length fits in a nibble
RUN_CLASSES = 32  # run classes cover runs of 1 .. 2**15 symbols
MAX_CHUNK_LOG2 = 15  # a chunk holds at most 2**15 symbols
MIN_CHUNK_LOG2 = 8
NO_CODE = 0xFFFF << 16  # decode-table entry of a bit pattern that is no code
MAX_CLASSES = 4  # literal contexts of context mode (A_0 .. A_3)
# A token (uint32) is ``index | extra_bits << 11 | extra_value << 15``: ``index`` addresses the
# concatenated alphabets of all contexts (at most 4 * 288 + 256 entries), extra values have <= 13 bits.
TOKEN_INDEX_BITS = 11
TOKEN_INDEX_MASK = (1 << TOKEN_INDEX_BITS) - 1
TOKEN_EXTRA_MASK = 15
TOKEN_VALUE_SHIFT = TOKEN_INDEX_BITS + 4


def run_classes() -> tuple[np.ndarray, np.ndarray]:
    """Base run length and number of extra bits of every run class."""
    base = np.zeros(RUN_CLASSES, np.int64)
    extra = np.zeros(RUN_CLASSES, np.int64)
    for k in range(RUN_CLASSES):
        if k < 8:
            base[k] = k + 1
        else:
            e, half = (k - 8) // 2 + 3, (k - 8) % 2
            base[k] = (1 << e) + half * (1 << (e - 1)) + 1
            extra[k] = e - 1
    return base, extra


RUN_BASE, RUN_EXTRA = run_classes()


def run_token_table() -> np.ndarray:
    """``table[r]`` packs the token of a run of ``r`` symbols (1 <= r <= 2**15).

    Packing (uint32): ``class | extra_bits << TOKEN_INDEX_BITS | extra_value << TOKEN_VALUE_SHIFT``.
    """
    r = np.arange((1 << MAX_CHUNK_LOG2) + 1, dtype=np.int64)
    cls = np.searchsorted(RUN_BASE, r, side="right") - 1
    cls[0] = 0
    nbits = RUN_EXTRA[cls]
    value = np.where(r > 0, r - RUN_BASE[cls], 0)
    return (cls | (nbits << TOKEN_INDEX_BITS) | (value << TOKEN_VALUE_SHIFT)).astype(np.uint32)


RUN_TOKENS = run_token_table()


def alphabet_sizes(bits: int) -> tuple[int, int]:
    """Sizes of the context-A and context-B alphabets for ``bits``-bit symbols."""
    return (1 << bits) + RUN_CLASSES, 1 << bits


@jit
def _minimum_redundancy(weights):
    """Huffman code lengths for ``weights`` sorted ascending (n >= 2).

    In-place algorithm of Moffat and Katajainen (1995); the returned lengths are
    non-increasing (the lightest symbol gets the longest code).
    """
    a = weights.copy()
    n = a.size
    a[0] += a[1]
    root = 0
    leaf = 2
    for nxt in range(1, n - 1):
        if leaf >= n or a[root] < a[leaf]:
            a[nxt] = a[root]
            a[root] = nxt
            root += 1
        else:
            a[nxt] = a[leaf]
            leaf += 1
        if leaf >= n or (root < nxt and a[root] < a[leaf]):
            a[nxt] += a[root]
            a[root] = nxt
            root += 1
        else:
            a[nxt] += a[leaf]
            leaf += 1
    a[n - 2] = 0
    for nxt in range(n - 3, -1, -1):
        a[nxt] = a[a[nxt]] + 1
    avail = 1
    used = 0
    depth = 0
    root = n - 2
    nxt = n - 1
    while avail > 0:
        while root >= 0 and a[root] == depth:
            used += 1
            root -= 1
        while avail > used:
            a[nxt] = depth
            nxt -= 1
            avail -= 1
        avail = 2 * used
        depth += 1
        used = 0
    return a


@jit
def _limit_lengths(lengths, max_len):
    """Cap non-increasing code lengths at ``max_len`` (JPEG Annex K.3 adjustment)."""
    n = lengths.size
    count = np.zeros(max(n, max_len) + 2, np.int64)
    for length in lengths:
        count[length] += 1
    i = count.size - 1
    while i > max_len:
        while count[i] > 0:
            j = i - 2
            while count[j] == 0:
                j -= 1
            count[i] -= 2
            count[i - 1] += 1
            count[j + 1] += 2
            count[j] -= 1
        i -= 1
    out = np.empty(n, np.int64)
    k = 0
    for length in range(max_len, 0, -1):
        for _ in range(count[length]):
            out[k] = length
            k += 1
    return out


@jit
def huffman_lengths(counts, max_len):
    """Length-limited Huffman code lengths (0 for symbols with a zero count).

    Deterministic: ties are broken by symbol index (stable sort).
    """
    lengths = np.zeros(counts.size, np.int64)
    used = np.flatnonzero(counts > 0)
    if used.size == 1:
        lengths[used[0]] = 1
    if used.size < 2:
        return lengths
    order = used[np.argsort(counts[used], kind="mergesort")]
    sorted_lengths = _limit_lengths(_minimum_redundancy(counts[order]), max_len)
    for i in range(order.size):
        lengths[order[i]] = sorted_lengths[i]
    return lengths


@jit
def canonical_codes(lengths):
    """Canonical codes (RFC 1951 rule): by increasing length, then symbol index."""
    count = np.zeros(MAX_CODE_LEN + 2, np.int64)
    for length in lengths:
        count[length] += 1
    count[0] = 0
    next_code = np.zeros(MAX_CODE_LEN + 2, np.int64)
    code = 0
    for length in range(1, MAX_CODE_LEN + 1):
        code = (code + count[length - 1]) << 1
        next_code[length] = code
    codes = np.zeros(lengths.size, np.int64)
    for s in range(lengths.size):
        length = lengths[s]
        if length:
            codes[s] = next_code[length]
            next_code[length] += 1
    return codes


def encode_table(*contexts):
    """Per token index (the contexts' alphabets back to back): ``code << 5 | length``.

    Each context is an array of code lengths; its codes are canonical on their own.
    """
    return np.concatenate([_context_codes(np.asarray(lengths, np.int64)) for lengths in contexts])


@jit
def _context_codes(lengths):
    codes = canonical_codes(lengths)
    table = np.zeros(lengths.size, np.uint32)
    for s in range(lengths.size):
        table[s] = (codes[s] << 5) | lengths[s]
    return table


@jit
def decode_table(lengths, n_classes, n_literals, dominant, peek_bits, run_base, run_extra):
    """Lookup table on the next ``peek_bits`` bits for contexts A_0 .. A_{n_classes-1}, then B.

    ``lengths`` holds the code lengths of the contexts back to back (``n_classes``
    context-A alphabets of ``n_literals + RUN_CLASSES`` symbols, then the
    context-B alphabet of ``n_literals``). Context ``k`` owns entries
    ``k << peek_bits`` onwards. Entry (uint32): ``length | extra_bits << 4 |
    written_symbol << 8 | run_base << 16``; ``run_base == 0`` marks a literal
    (one symbol). A bit pattern that is no code gets ``NO_CODE``: length 0 and
    run base 0xFFFF, a run longer than any chunk, so decoders report it when
    the chunk ends.
    """
    size_a = n_literals + run_base.size
    table = np.full((n_classes + 1) << peek_bits, NO_CODE, np.uint32)
    for ctx in range(n_classes + 1):
        start = ctx * size_a
        size = size_a if ctx < n_classes else n_literals
        ctx_lengths = lengths[start : start + size]
        codes = canonical_codes(ctx_lengths)
        offset = ctx << peek_bits
        for s in range(size):
            length = ctx_lengths[s]
            if length == 0:
                continue
            if s < n_literals:
                entry = length | (s << 8)
            else:
                k = s - n_literals
                entry = length | (run_extra[k] << 4) | (dominant << 8) | (run_base[k] << 16)
            shift = peek_bits - length
            lo = offset + (codes[s] << shift)
            hi = offset + ((codes[s] + 1) << shift)
            for i in range(lo, hi):
                table[i] = entry
    return table


def next_context(classes: np.ndarray, n_classes: int, peek_bits: int) -> np.ndarray:
    """Table offset of the context after a token: ``out[s]`` after literal ``s``, ``out[256 + s]`` after a run.

    ``classes[s]`` is the class of literal ``s`` (all 0 with one literal
    context); after a run comes context B, the last one.
    """
    out = np.zeros(512, np.int64)
    out[: classes.size] = np.asarray(classes, np.int64) << peek_bits
    out[256:] = n_classes << peek_bits
    return out


def literal_distances(bits: int, dominant: int) -> np.ndarray:
    """Distance of every literal ``s`` to ``dominant``: ``min(u, 2**bits - u)``, ``u = (s - dominant) mod 2**bits``."""
    size = 1 << bits
    u = (np.arange(size, dtype=np.int64) - dominant) & (size - 1)
    return np.minimum(u, size - u)


def literal_classes(bits: int, dominant: int, thresholds) -> np.ndarray:
    """Class of every literal: how many of the (increasing) ``thresholds`` its distance reaches."""
    distance = literal_distances(bits, dominant)
    return np.searchsorted(np.asarray(thresholds, np.int64), distance, side="right").astype(np.int64)


def kraft_ok(lengths: np.ndarray) -> bool:
    """True when the code lengths satisfy Kraft's inequality (sum 2**-len <= 1)."""
    used = lengths[lengths > 0].astype(np.int64)
    return int(np.sum(np.int64(1) << (MAX_CODE_LEN - used))) <= (1 << MAX_CODE_LEN)


def cost_bits(counts: np.ndarray, lengths: np.ndarray) -> int:
    """Bits spent on codes (not extra bits) when ``counts`` are coded with ``lengths``."""
    return int(np.dot(counts.astype(np.int64), lengths.astype(np.int64)))
