"""Fuzzing of the frame decoder, the codebook parser and the request / response containers.

A bounded fuzz run for CI: hypothesis mutates the stored corpus
(``tests/fuzz_corpus/*.hex``: the document's vectors plus one frame of each
mode - context mode with one and with three literal classes - a codebook,
requests and responses) - bit flips, byte overwrites,
truncation, insertion, splices of two seeds, header-field rewrites - and
also feeds raw random bytes. The only outcomes allowed are a result that
agrees with its own metadata or a ``CodecError``; never another exception,
never an allocation beyond the limits. ``SPLITC_FUZZ_EXAMPLES`` sets the
example budget per target (default 8000: about 20-40 s in all on 2 cores); a longer
local run: ``SPLITC_FUZZ_EXAMPLES=200000 pytest tests/test_fuzz_codec.py``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitc.wire import codec, request
from splitc.wire import lengths as codec_lengths

CORPUS = {p.stem: bytes.fromhex(p.read_text().strip())
          for p in sorted((Path(__file__).parent / "fuzz_corpus").glob("*.hex"))}
BOOKS = [codec.Codebook.from_bytes(v) for k, v in CORPUS.items() if k.startswith(("codebook", "v5-codebook"))]
FRAMES = [v for v in CORPUS.values() if v[:4] == codec.MAGIC]
CONTAINERS = [v for v in CORPUS.values() if v[:4] in (request.REQUEST_MAGIC, request.RESPONSE_MAGIC)]
EXAMPLES = int(os.environ.get("SPLITC_FUZZ_EXAMPLES", "8000"))
LIMIT = 1 << 20  # elements: what a plan-aware caller would pass
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.integers(0, 6))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == 0 and data:  # flip a bit
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == 1 and data:  # overwrite a byte
            data[pos] = draw(st.integers(0, 255))
        elif op == 2:  # truncate
            del data[pos:]
        elif op == 3:  # insert bytes
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 4 and len(data) >= pos + 4:  # rewrite a 32-bit field (lengths, shape dims)
            value = draw(st.sampled_from([0, 1, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF, len(data), len(data) + 1]))
            struct.pack_into("<I", data, pos, value)
        elif op == 5:  # splice the tail of another seed
            other = draw(st.sampled_from(seeds))
            data[pos:] = other[draw(st.integers(0, len(other))):]
        elif op == 6 and len(data) >= 12:  # keep the length field consistent, so deeper checks are reached
            struct.pack_into("<I", data, 8, len(data))
    return bytes(data)


def _check_frame(data: bytes) -> None:
    try:
        q, meta = codec.decode(data, codebook=BOOKS, max_elements=LIMIT)
    except codec.CodecError:
        return
    assert q.shape == meta.shape and q.size <= LIMIT
    if meta.mode != "raw":
        assert q.dtype == np.uint8 and (q.size == 0 or int(q.max()) < 1 << meta.bits or meta.mode == "jpeg")
        with np.errstate(all="ignore"):
            x = codec.dequantize(q, meta.bits, meta.lo, meta.hi, meta.per_channel_axis)
        assert np.all(np.isfinite(x))  # a frame that decodes never yields NaN or inf


def _check_container(data: bytes) -> None:
    for parse in (request.decode_request, request.decode_response):
        try:
            message = parse(data, max_length=len(data))
        except codec.CodecError:
            continue
        for record in message.records:
            try:
                value = request.record_array(record, max_elements=LIMIT)
            except codec.CodecError:
                continue
            assert value.size <= LIMIT


@FUZZ
@given(mutated(FRAMES))
def test_fuzz_frame_decoder(data: bytes) -> None:
    _check_frame(data)


@FUZZ
@given(st.binary(max_size=96).map(lambda b: codec.MAGIC + b"\x01" + b))
def test_fuzz_frame_decoder_random_headers(data: bytes) -> None:
    _check_frame(data)
    try:
        codec.decode(data)  # the default, proportionate limit
    except codec.CodecError:
        pass


@FUZZ
@given(mutated([CORPUS["codebook-c4"], CORPUS["v5-codebook"]]))
def test_fuzz_codebook_parser(data: bytes) -> None:
    try:
        codec.Codebook.from_bytes(data)
    except codec.CodecError:
        pass


@FUZZ
@given(st.binary(max_size=80), st.integers(1, 4 * 288 + 256))
def test_fuzz_compact_code_lengths(data: bytes, count: int) -> None:
    lengths, status = codec_lengths.unpack_lengths(np.frombuffer(data, np.uint8), count)
    assert lengths.shape == (count,)
    if status == codec_lengths.OK:
        assert 0 <= lengths.min() and lengths.max() <= 15


@FUZZ
@given(mutated(CONTAINERS))
def test_fuzz_request_container(data: bytes) -> None:
    _check_container(data)


def test_corpus_seeds_are_valid() -> None:
    for data in FRAMES:
        codec.decode(data, codebook=BOOKS)
    for data in CONTAINERS:
        (request.decode_request if data[:4] == request.REQUEST_MAGIC else request.decode_response)(data)
