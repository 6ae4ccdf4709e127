"""Wire codec, static codebooks: training on sample tensors and the ``SPCB`` serialization."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable

import numpy as np

from splitc.wire import huffman as hf
from splitc.wire.backend import _token_counts
from splitc.wire.format import (
    CODEBOOK_MAGIC,
    CODEBOOK_VERSION,
    DEFAULT_CHUNK_LOG2,
    ENCODE_MAX_CODE_LEN,
    QUANT_BITS,
    BadHeader,
    BadVersion,
    InvalidCodebook,
    LengthMismatch,
    TruncatedFrame,
    _check_lengths,
    _check_magic,
    _nibble_bytes,
    _pack_nibbles,
    _unpack_nibbles,
)
from splitc.wire.quant import _check_quant_bits, _flat_symbols


class Codebook:
    """A static Huffman codebook for one bit width, trained offline on sample tensors.

    Holds the dominant (run) symbol and the code lengths of both contexts. Its
    ``id`` is the CRC-32 of ``bytes([bits, dominant]) + nibble-packed lengths``;
    frames coded with it carry only this id.
    """

    __slots__ = ("bits", "dominant", "lengths_a", "lengths_b", "_id")

    def __init__(self, bits: int, dominant: int, lengths_a, lengths_b):
        _check_quant_bits(bits)
        size_a, size_b = hf.alphabet_sizes(bits)
        self.bits = int(bits)
        self.dominant = int(dominant)
        self.lengths_a = np.asarray(lengths_a, np.int64).copy()
        self.lengths_b = np.asarray(lengths_b, np.int64).copy()
        if not 0 <= self.dominant < size_b:
            raise InvalidCodebook(f"dominant symbol {dominant} is out of range for {bits} bits")
        if self.lengths_a.shape != (size_a,) or self.lengths_b.shape != (size_b,):
            raise InvalidCodebook(f"a {bits}-bit codebook needs {size_a} + {size_b} code lengths")
        both = np.concatenate([self.lengths_a, self.lengths_b])
        if both.min() < 0 or both.max() > hf.MAX_CODE_LEN:
            raise InvalidCodebook(f"code lengths must be 0..{hf.MAX_CODE_LEN}")
        _check_lengths(self.lengths_a, self.lengths_b, self.bits, self.dominant)
        body = bytes([self.bits, self.dominant]) + self.nibbles()
        self._id = zlib.crc32(body) & 0xFFFFFFFF

    @property
    def id(self) -> int:
        """32-bit id: CRC-32 of bits, dominant symbol and code lengths."""
        return self._id

    def nibbles(self) -> bytes:
        """The code lengths, context A then B, nibble-packed as in the frame."""
        return _pack_nibbles(np.concatenate([self.lengths_a, self.lengths_b]).astype(np.uint8))

    @classmethod
    def train(cls, samples: Iterable[np.ndarray], bits: int, chunk_log2: int = DEFAULT_CHUNK_LOG2) -> Codebook:
        """Train on sample symbol tensors (uint8 in ``[0, 2**bits)``).

        The dominant symbol is the most frequent one overall. Token counts get
        add-one smoothing, so every token that can occur has a code; code
        lengths are limited to ``ENCODE_MAX_CODE_LEN`` (12) bits.
        """
        _check_quant_bits(bits)
        samples = [_flat_symbols(s, bits) for s in samples]
        hist = sum((np.bincount(s, minlength=256) for s in samples), np.zeros(256, np.int64))
        dominant = int(np.argmax(hist[: 1 << bits]))
        size_a, size_b = hf.alphabet_sizes(bits)
        counts = np.zeros(size_a + size_b, np.int64)
        for s in samples:
            if s.size:
                counts += _token_counts(s, bits, dominant, 1 << chunk_log2)[0]
        counts += 1
        counts[dominant] = 0
        counts[size_a + dominant] = 0
        len_a = hf.huffman_lengths(counts[:size_a], ENCODE_MAX_CODE_LEN)
        len_b = hf.huffman_lengths(counts[size_a:], ENCODE_MAX_CODE_LEN)
        return cls(bits, dominant, len_a, len_b)

    def to_bytes(self) -> bytes:
        """``SPCB``, version, bits, dominant, 0, nibble-packed lengths, id (u32 LE)."""
        head = CODEBOOK_MAGIC + bytes([CODEBOOK_VERSION, self.bits, self.dominant, 0])
        return head + self.nibbles() + struct.pack("<I", self.id)

    @classmethod
    def from_bytes(cls, data: bytes) -> Codebook:
        """Parse ``to_bytes`` output; raises a CodecError subclass on bad input."""
        data = bytes(data)
        _check_magic(data, CODEBOOK_MAGIC)
        if len(data) < 8:
            raise TruncatedFrame(f"codebook: {len(data)} bytes, the header needs 8")
        version, bits, dominant, reserved = data[4:8]
        if version != CODEBOOK_VERSION:
            raise BadVersion(f"codebook version {version}, this decoder reads version {CODEBOOK_VERSION}")
        if bits not in QUANT_BITS or reserved != 0:
            raise BadHeader(f"codebook: bits {bits} / reserved byte {reserved} not allowed")
        need = 8 + _nibble_bytes(bits) + 4
        if len(data) < need:
            raise TruncatedFrame(f"codebook: {len(data)} bytes, a {bits}-bit codebook has {need}")
        if len(data) > need:
            raise LengthMismatch(f"codebook: {len(data) - need} trailing bytes")
        size_a, size_b = hf.alphabet_sizes(bits)
        lengths = _unpack_nibbles(data[8 : need - 4], size_a + size_b)
        if dominant >= size_b:
            raise InvalidCodebook(f"codebook: dominant symbol {dominant} out of range for {bits} bits")
        book = cls(bits, dominant, lengths[:size_a], lengths[size_a:])
        (stored,) = struct.unpack_from("<I", data, need - 4)
        if stored != book.id:
            raise InvalidCodebook(f"codebook: stored id {stored:#010x} != CRC-32 of its lengths {book.id:#010x}")
        return book

    def __eq__(self, other):
        return isinstance(other, Codebook) and self.to_bytes() == other.to_bytes()

    def __hash__(self):
        return self._id

    def __repr__(self):
        return f"Codebook(bits={self.bits}, dominant={self.dominant}, id={self.id:#010x})"
