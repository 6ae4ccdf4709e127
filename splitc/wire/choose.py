"""Wire codec, the encoder's choices: filter, coding mode and literal contexts of one tensor.

The encoder samples the tensor to pick the filter(s) worth coding (none, delta,
MED), tokenizes the symbols once per filter, then prices every coding of the
tokens exactly (code bits + extra bits + code section): embedded code lengths
(mode 2), a static codebook (mode 3), and context mode (6) with one to four
literal classes. The cheapest is emitted, and kept only if it is smaller than
the same symbols bit-packed (mode 4).
"""

from __future__ import annotations

import struct
from itertools import pairwise

import numpy as np

from splitc.wire import backend as _backend
from splitc.wire import huffman as hf
from splitc.wire import lengths as codec_lengths
from splitc.wire.backend import _buffer, _emit, _pack, _token_counts
from splitc.wire.format import (
    _FIXED,
    DELTA_ONLY_RATIO,
    DELTA_TRY_RATIO,
    DENSE_SHARE,
    ENCODE_MAX_CODE_LEN,
    FILTER_DELTA,
    FILTER_MED,
    FILTER_NAMES,
    FILTER_NONE,
    MODE_CONSTANT,
    MODE_CONTEXT,
    MODE_EMBEDDED,
    MODE_PACKED,
    MODE_STATIC,
    _frame,
    _pack_nibbles,
)

ENCODE_MODES = ("embedded", "static", "context", "packed")
ENCODE_FILTERS = ("none", "delta", "med")
FILTER_NAMES_INVERSE = {name: code for code, name in FILTER_NAMES.items()}
# Class thresholds the encoder tries in context mode, besides quantiles of the data.
THRESHOLD_SETS = ((1,), (2,), (4,), (1, 3), (2, 6), (1, 3, 8), (2, 6, 16), (1, 4, 16), (3, 10, 32))
# The encoder counts tokens by the previous literal's distance bucket; thresholds are bucket edges.
DISTANCE_EDGES = (0, 1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96)
CONTEXT_MIN_TOKENS = 4096  # below this, more literal contexts never pay for their code lengths


def _entropy(hist):
    p = hist[hist > 0] / max(1, hist.sum())
    return float(-(p * np.log2(p)).sum())


class _Tokens:
    """One filter's token stream: dominant symbol, token histogram, tokens, token count after each chunk."""

    def __init__(self, filt, dominant, counts, tok, tok_end, bits):
        self.filter, self.dominant, self.counts, self.tok, self.tok_end = filt, dominant, counts, tok, tok_end
        size_a = hf.alphabet_sizes(bits)[0]
        self.extra = int(np.dot(counts[1 << bits : size_a], hf.RUN_EXTRA))


class _Option:
    """One way to code a token stream: mode, code lengths per context, code section and cost in bits."""

    def __init__(self, tokens, mode, contexts, counts, code_section, thresholds=()):
        self.tokens, self.mode, self.contexts, self.thresholds = tokens, mode, contexts, thresholds
        self.code_section = code_section
        lengths = np.concatenate(contexts)
        usable = not np.any((counts > 0) & (lengths == 0))
        cost = hf.cost_bits(counts, lengths) + tokens.extra + 8 * len(code_section)
        self.cost = cost if usable else float("inf")


def _embedded(tokens, bits):
    size_a = hf.alphabet_sizes(bits)[0]
    len_a = hf.huffman_lengths(tokens.counts[:size_a], ENCODE_MAX_CODE_LEN)
    len_b = hf.huffman_lengths(tokens.counts[size_a:], ENCODE_MAX_CODE_LEN)
    section = _pack_nibbles(np.concatenate([len_a, len_b]).astype(np.uint8))
    return _Option(tokens, MODE_EMBEDDED, [len_a, len_b], tokens.counts, section)


def _static(tokens, codebook):
    section = struct.pack("<I", codebook.id)
    return _Option(tokens, MODE_STATIC, [codebook.lengths_a, codebook.lengths_b], tokens.counts, section)


def _context(tokens, bits, thresholds, by_bucket=None, bucket_edges=DISTANCE_EDGES):
    """Context mode with ``len(thresholds) + 1`` literal classes.

    ``by_bucket`` holds the class_histogram rows of the distance buckets that start at ``bucket_edges``.
    """
    size_a = hf.alphabet_sizes(bits)[0]
    if thresholds:
        edges = [0, *(bucket_edges.index(t) for t in thresholds), by_bucket.shape[0]]
        parts = [by_bucket[lo:hi, :size_a].sum(axis=0, dtype=np.int64) for lo, hi in pairwise(edges)]
    else:
        parts = [tokens.counts[:size_a]]
    parts.append(tokens.counts[size_a:])
    contexts = [hf.huffman_lengths(np.ascontiguousarray(c), ENCODE_MAX_CODE_LEN) for c in parts]
    table = codec_lengths.pack_lengths(np.concatenate(contexts))
    head = bytes([len(thresholds) + 1, *thresholds, *bytes(3 - len(thresholds))]) + struct.pack("<H", len(table))
    return _Option(tokens, MODE_CONTEXT, contexts, np.concatenate(parts), head + table, tuple(thresholds))


def _threshold_sets(bits, by_bucket, size_a):
    """Candidate class thresholds: fixed sets and quantiles of the previous literal's distance bucket."""
    top = 1 << (bits - 1)
    mass = by_bucket[:, :size_a].sum(axis=1, dtype=np.int64).cumsum()
    quantiles = []
    for classes in (2, 3, 4):
        cut = np.searchsorted(mass, mass[-1] * np.arange(1, classes) / classes, side="right")
        quantiles.append(tuple(DISTANCE_EDGES[int(c)] for c in np.clip(cut, 1, len(DISTANCE_EDGES) - 1)))
    found = []
    for t in (*THRESHOLD_SETS, *quantiles):
        if t not in found and all(1 <= v <= top for v in t) and all(a < b for a, b in pairwise(t)):
            found.append(t)
    return found


def _context_classes(tokens, bits):
    """Context mode with the best of the candidate splits into 2..4 literal classes (or no option)."""
    if bits == 1 or tokens.tok.size < CONTEXT_MIN_TOKENS:
        return []
    size_a, size_b = hf.alphabet_sizes(bits)
    edges = np.asarray(DISTANCE_EDGES)
    bucket = np.searchsorted(edges, hf.literal_distances(bits, tokens.dominant), side="right") - 1
    by_bucket = _backend.kernels.class_histogram(tokens.tok, tokens.tok_end, bucket, size_a, size_b, edges.size)
    cumulative = np.vstack([np.zeros(size_a, np.int64), by_bucket[:, :size_a].cumsum(axis=0, dtype=np.int64)])
    candidates = _threshold_sets(bits, by_bucket, size_a)
    return [_context(tokens, bits, candidates[int(np.argmin(_estimated_bits(cumulative, candidates)))], by_bucket)]


def _estimated_bits(cumulative, candidates):
    """Per threshold set: order-0 entropy of the context-A tokens split into its classes, plus ~4 bits per code."""
    owner, lo, hi = [], [], []
    for k, thresholds in enumerate(candidates):
        rows = [0, *(DISTANCE_EDGES.index(t) for t in thresholds), cumulative.shape[0] - 1]
        owner += [k] * (len(rows) - 1)
        lo += rows[:-1]
        hi += rows[1:]
    counts = (cumulative[hi] - cumulative[lo]).astype(np.float64)
    totals = counts.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        bits = np.where(counts > 0, counts * np.log2(np.where(counts > 0, counts, 1)), 0.0).sum(axis=1)
    per_range = totals * np.log2(np.maximum(totals, 1)) - bits + 4 * (counts > 0).sum(axis=1)
    return np.bincount(owner, weights=per_range, minlength=len(candidates))


def _filtered(flat, bits, filt, width):
    mask = (1 << bits) - 1
    out = _buffer("delta", flat.size, np.uint8)[: flat.size]
    if filt == FILTER_MED:
        _backend.kernels.med(flat, width, mask, out)
        return out
    out[0] = flat[0]
    np.subtract(flat[1:], flat[:-1], out=out[1:])
    np.bitwise_and(out, mask, out=out)
    return out


def _estimates(pairs):
    """Bits per symbol of each filter's sample, coded in two contexts: after its most frequent value, and otherwise.

    A cheap stand-in for run-length coding, which costs little after the dominant symbol.
    ``pairs`` rows: values then values before, per filter.
    """
    values, before = pairs[0::2], pairs[1::2]
    filters = np.arange(values.shape[0])[:, None]
    hist = np.bincount((filters * 256 + values).ravel(), minlength=256 * values.shape[0]).reshape(-1, 256)
    after = before == np.argmax(hist, axis=1)[:, None]
    joint = np.bincount(((filters * 2 + after) * 256 + values).ravel(), minlength=512 * values.shape[0])
    joint = joint.reshape(-1, 256).astype(np.float64)
    totals = joint.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        bits = np.where(joint > 0, joint * np.log2(np.where(joint > 0, joint, 1)), 0.0).sum(axis=1)
    per_context = totals * np.log2(np.maximum(totals, 1)) - bits
    return per_context.reshape(-1, 2).sum(axis=1) / max(1, values.shape[1]), hist


def _filters(flat, bits, width, allowed):
    """(filters to code, sample histogram per filter): none and/or the better of delta and MED (if ``allowed``)."""
    pairs = _backend.kernels.sample_pairs(flat, max(1, flat.size >> 13), (1 << bits) - 1, width)
    estimates, histograms = _estimates(pairs)
    filters = (FILTER_NONE, FILTER_DELTA, FILTER_MED)
    hist = dict(zip(filters, histograms))
    cost = dict(zip(filters, estimates.tolist()))
    candidates = [f for f in (FILTER_DELTA, FILTER_MED) if f in allowed]
    if not candidates or FILTER_NONE not in allowed:
        return [FILTER_NONE] if not candidates else [min(candidates, key=cost.get)], hist
    best = min(candidates, key=cost.get)
    ratio = cost[best] / cost[FILTER_NONE] if cost[FILTER_NONE] > 0 else float("inf")
    if max(hist[FILTER_NONE].max(), hist[best].max()) < DENSE_SHARE * pairs.shape[1]:
        ratio = 0.0 if ratio < 1.0 else float("inf")  # dense: runs hardly matter, the estimates decide alone
    chosen = [FILTER_NONE] if ratio >= DELTA_ONLY_RATIO else []
    if ratio < DELTA_TRY_RATIO:
        chosen.append(best)
    return chosen, hist


def _tokenize(flat, bits, filt, hist, chunk, width, codebook):
    symbols = flat if filt == FILTER_NONE else _filtered(flat, bits, filt, width)
    if hist is None:
        hist = {filt: np.bincount(symbols, minlength=256)}
    if filt == FILTER_NONE and codebook is not None:
        dominant = codebook.dominant
    else:
        dominant = int(np.argmax(hist[filt]))
    sparse = hist[filt][dominant] > 0.75 * hist[filt].sum()
    scratch = "tok" if filt == FILTER_NONE else "tok_delta"
    return _Tokens(filt, dominant, *_token_counts(symbols, bits, dominant, chunk, sparse, scratch), bits)


def packed_frame(flat, head) -> bytes:
    """The symbols bit-packed, ``bits`` each (mode 4)."""
    return _frame(head, MODE_PACKED, 0, 0, FILTER_NONE, b"", b"", _pack(flat, head[0]))


def packed_frame_size(head, n: int) -> int:
    """Length of the packed-mode frame of ``n`` symbols, without building it."""
    bits, _, shape, _, scales = head
    return _FIXED.size + 4 * len(shape) + len(scales) + 4 + (n * bits + 7) // 8


def encode_lossless(flat, head, codebook, chunk_log2, modes, filters=ENCODE_FILTERS) -> bytes:
    """The smallest frame of the allowed ``modes`` and ``filters`` (names in ``ENCODE_MODES`` / ``ENCODE_FILTERS``).

    For non-empty symbols. Literal classes (context mode) are priced only for
    the filter whose one-class coding is cheapest.
    """
    bits, shape = head[0], head[2]
    width = int(shape[-1]) if shape else 1
    allowed = [FILTER_NAMES_INVERSE[name] for name in filters]
    filters, hist = _filters(flat, bits, width, allowed)
    options = []
    for filt in filters:
        if FILTER_NONE not in filters and int(flat.max()) >> bits:  # no plain tokenizer checked the range
            raise ValueError(f"symbol {int(flat.max())} does not fit in {bits} bits")
        tokens = _tokenize(flat, bits, filt, hist, 1 << chunk_log2, width, codebook)
        no_runs = not tokens.counts[hf.alphabet_sizes(bits)[0] :].any()
        if filt == FILTER_NONE and not tokens.counts[: 1 << bits].any() and no_runs:
            return _frame(head, MODE_CONSTANT, tokens.dominant, 0, FILTER_NONE, b"", b"", b"")
        if "embedded" in modes:
            options.append(_embedded(tokens, bits))
        if "static" in modes and codebook is not None and filt == FILTER_NONE:
            options.append(_static(tokens, codebook))
        if "context" in modes:
            options.append(_context(tokens, bits, ()))
    best = min(options, key=lambda option: option.cost, default=None)
    if best is not None and "context" in modes:
        best = min([best, *_context_classes(best.tokens, bits)], key=lambda option: option.cost)
    packed_size = packed_frame_size(head, flat.size)
    fixed = packed_size - (flat.size * bits + 7) // 8 + 2 * -(-flat.size >> chunk_log2)
    if best is None or "packed" in modes and fixed + best.cost / 8 >= packed_size:
        if "packed" not in modes:
            raise ValueError(f"no coding mode to choose from in {modes}")
        return packed_frame(flat, head)
    frame = _emit_option(best, head, bits, chunk_log2)
    return packed_frame(flat, head) if "packed" in modes and len(frame) >= packed_size else frame


def encode_context(flat, head, chunk_log2, filt, thresholds) -> bytes:
    """Context mode with a given filter and class ``thresholds`` (increasing, in 1..2**(bits-1)).

    The building block of ``encode_lossless``, for tests and examples; the
    dominant symbol is the most frequent filtered symbol.
    """
    bits, shape = head[0], head[2]
    width = int(shape[-1]) if shape else 1
    if int(flat.max()) >> bits:
        raise ValueError(f"symbol {int(flat.max())} does not fit in {bits} bits")
    tokens = _tokenize(flat, bits, filt, None, 1 << chunk_log2, width, None)
    by_bucket, edges = None, DISTANCE_EDGES
    if thresholds:
        size_a, size_b = hf.alphabet_sizes(bits)
        distance = hf.literal_distances(bits, tokens.dominant)
        edges = tuple(range(int(distance.max()) + 1))
        by_bucket = _backend.kernels.class_histogram(tokens.tok, tokens.tok_end, distance, size_a, size_b, len(edges))
    return _emit_option(_context(tokens, bits, tuple(thresholds), by_bucket, edges), head, bits, chunk_log2)


def _emit_option(option, head, bits, chunk_log2) -> bytes:
    tokens = option.tokens
    classes = hf.literal_classes(bits, tokens.dominant, option.thresholds)
    table = hf.encode_table(*option.contexts)
    payload, ends = _emit(tokens.tok, tokens.tok_end, table, classes, hf.alphabet_sizes(bits)[0],
                          len(option.contexts) - 1)
    chunk_table = np.diff(ends, prepend=0).astype("<u2").tobytes()
    return _frame(head, option.mode, tokens.dominant, chunk_log2, tokens.filter, option.code_section, chunk_table,
                  payload)
