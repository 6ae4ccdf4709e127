"""Compact code lengths of context mode: the lengths of all contexts, run-length and Huffman coded.

The scheme is DEFLATE's (RFC 1951, section 3.2.7), written MSB-first like the
payload (docs/wire-format.md, "Compact code lengths"):

* 19 three-bit numbers: the code lengths (0..7) of the *length symbols* 0..18;
* then length symbols, each a canonical Huffman code of that length code:
  ``0..15`` is one code length; ``16`` repeats the previous length 3..6 times
  (2 extra bits); ``17`` is 3..10 zero lengths (3 extra bits); ``18`` is
  11..138 zero lengths (7 extra bits). Extra bits follow their code, MSB-first.

The section ends at the first byte boundary after the last length, padded with
zero bits. All functions are compiled with numba when it is installed.
"""

from __future__ import annotations

import numpy as np

from splitc.wire.huffman import canonical_codes, huffman_lengths, jit

LENGTH_SYMBOLS = 19
LENGTH_CODE_BITS = 3  # bits of each length-symbol code length in the section's header
MAX_LENGTH_CODE = 7
REPEAT, ZEROS, LONG_ZEROS = 16, 17, 18
OK, PAST_END, BAD_LENGTH_CODE, BAD_SYMBOL, BAD_END = 0, 1, 2, 3, 4
ERRORS = {
    PAST_END: "the code lengths run past their section",
    BAD_LENGTH_CODE: "the length code violates Kraft's inequality or is empty",
    BAD_SYMBOL: "a bit pattern that is no length code, a repeat with no previous length, or too many lengths",
    BAD_END: "the code-length section has trailing bytes or non-zero padding bits",
}


@jit
def _runs(lengths):
    """Length symbols, their extra values and extra-bit counts (encoder's choice of runs)."""
    n = lengths.size
    syms = np.zeros(n, np.int64)
    extra = np.zeros(n, np.int64)
    nbits = np.zeros(n, np.int64)
    k = 0
    i = 0
    while i < n:
        v = lengths[i]
        j = i
        while j < n and lengths[j] == v:
            j += 1
        run = j - i
        if v == 0:
            while run >= 11:
                take = min(run, 138)
                syms[k], extra[k], nbits[k] = LONG_ZEROS, take - 11, 7
                k += 1
                run -= take
            if run >= 3:
                syms[k], extra[k], nbits[k] = ZEROS, run - 3, 3
                k += 1
                run = 0
        else:
            syms[k] = v
            k += 1
            run -= 1
            while run >= 3:
                take = min(run, 6)
                syms[k], extra[k], nbits[k] = REPEAT, take - 3, 2
                k += 1
                run -= take
        for _ in range(run):
            syms[k] = v
            k += 1
        i = j
    return syms[:k], extra[:k], nbits[:k]


@jit
def _length_code(syms):
    counts = np.zeros(LENGTH_SYMBOLS, np.int64)
    for s in syms:
        counts[s] += 1
    return huffman_lengths(counts, MAX_LENGTH_CODE)


def section_bits(lengths: np.ndarray) -> int:
    """Bits of the coded lengths (before padding to a byte)."""
    syms, _, nbits = _runs(np.asarray(lengths, np.int64))
    code = _length_code(syms)
    return LENGTH_SYMBOLS * LENGTH_CODE_BITS + int(code[syms].sum() + nbits.sum())


@jit
def _write(syms, extra, nbits, code):
    codes = canonical_codes(code)
    total = LENGTH_SYMBOLS * LENGTH_CODE_BITS
    for i in range(syms.size):
        total += code[syms[i]] + nbits[i]
    out = np.zeros((total + 7) // 8, np.uint8)
    pos = 0
    for i in range(LENGTH_SYMBOLS + syms.size):
        if i < LENGTH_SYMBOLS:
            value, width = code[i], LENGTH_CODE_BITS
        else:
            s = syms[i - LENGTH_SYMBOLS]
            value = (codes[s] << nbits[i - LENGTH_SYMBOLS]) | extra[i - LENGTH_SYMBOLS]
            width = code[s] + nbits[i - LENGTH_SYMBOLS]
        for b in range(width - 1, -1, -1):
            if (value >> b) & 1:
                out[pos >> 3] |= np.uint8(0x80 >> (pos & 7))
            pos += 1
    return out


def pack_lengths(lengths: np.ndarray) -> bytes:
    """The coded section of a sequence of code lengths (0..15)."""
    syms, extra, nbits = _runs(np.asarray(lengths, np.int64))
    return _write(syms, extra, nbits, _length_code(syms)).tobytes()


@jit
def _read(data, pos, width):
    """``width`` bits at bit ``pos`` (MSB-first), or -1 past the end."""
    if pos + width > data.size * 8:
        return -1
    value = 0
    for b in range(width):
        p = pos + b
        value = (value << 1) | ((data[p >> 3] >> (7 - (p & 7))) & 1)
    return value


@jit
def _length_table(code):
    """7-bit peek table of the length code: ``symbol << 3 | length``, or -1; None-equivalent status."""
    used = 0
    for length in code:
        if length:
            used += 1 << (MAX_LENGTH_CODE - length)
    table = np.full(1 << MAX_LENGTH_CODE, -1, np.int64)
    if used == 0 or used > 1 << MAX_LENGTH_CODE:
        return table, BAD_LENGTH_CODE
    codes = canonical_codes(code)
    for s in range(LENGTH_SYMBOLS):
        if code[s]:
            shift = MAX_LENGTH_CODE - code[s]
            for i in range(codes[s] << shift, (codes[s] + 1) << shift):
                table[i] = (s << 3) | code[s]
    return table, OK


@jit
def unpack_lengths(data, count):
    """``(lengths, status)``: ``count`` code lengths from a coded section; status OK or an error code."""
    out = np.zeros(count, np.int64)
    code = np.zeros(LENGTH_SYMBOLS, np.int64)
    for s in range(LENGTH_SYMBOLS):
        v = _read(data, s * LENGTH_CODE_BITS, LENGTH_CODE_BITS)
        if v < 0:
            return out, PAST_END
        code[s] = v
    table, status = _length_table(code)
    if status != OK:
        return out, status
    pos = LENGTH_SYMBOLS * LENGTH_CODE_BITS
    k = 0
    total = data.size * 8
    while k < count:
        if pos >= total:
            return out, PAST_END
        peek = 0
        for b in range(MAX_LENGTH_CODE):  # bits past the end read as zeros; checked below
            p = pos + b
            bit = (data[p >> 3] >> (7 - (p & 7))) & 1 if p < total else 0
            peek = (peek << 1) | bit
        entry = table[peek]
        if entry < 0:
            return out, BAD_SYMBOL
        s, width = entry >> 3, entry & 7
        if pos + width > total:
            return out, PAST_END
        pos += width
        if s < REPEAT:
            out[k] = s
            k += 1
            continue
        nbits, base = (2, 3) if s == REPEAT else ((3, 3) if s == ZEROS else (7, 11))
        run = _read(data, pos, nbits)
        if run < 0:
            return out, PAST_END
        pos += nbits
        run += base
        if k + run > count or (s == REPEAT and k == 0):
            return out, BAD_SYMBOL
        value = out[k - 1] if s == REPEAT else 0
        for _ in range(run):
            out[k] = value
            k += 1
    if (pos + 7) >> 3 != data.size or (pos & 7 and data[pos >> 3] & ((1 << (8 - (pos & 7))) - 1)):
        return out, BAD_END
    return out, OK
