"""The request/response container: doc vectors, round trips, and hostile bytes."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from splitc.wire import codec, request

DOC = Path(__file__).resolve().parent.parent / "docs" / "wire-format.md"


def doc_vectors() -> dict[str, bytes]:
    text = DOC.read_text()
    found = re.findall(r"<!-- request-vector: ([\w-]+) -->\s*```hex\n(.*?)```", text, re.S)
    return {name: bytes.fromhex("".join(body.split())) for name, body in found}


def vector_request() -> bytes:
    frame = codec.encode(np.array([1.5, -2.0, 0.25], np.float32), 32)
    return request.encode_request("p0", [frame], request_id=1, plan_crc=0x12345678)


def vector_response() -> bytes:
    records = [request.Record(codec.encode(np.array([0.5, -1.0], np.float32), 32), "y"),
               request.output_record("k", np.array([3], np.int64))]
    timing = {"decode_ms": 0.25, "cloud_ms": 1.5, "encode_ms": 0.125}
    return request.encode_response(request.Message("p0", records, 1, 0x12345678, timing))


def test_doc_vectors_are_byte_identical() -> None:
    vectors = doc_vectors()
    assert vectors["r1-request"] == vector_request()
    assert vectors["r1-response"] == vector_response()


def test_doc_vectors_decode() -> None:
    vectors = doc_vectors()
    message = request.decode_request(vectors["r1-request"])
    assert (message.plan_id, message.request_id, message.plan_crc) == ("p0", 1, 0x12345678)
    assert codec.decode_tensor(message.records[0].data).tolist() == [1.5, -2.0, 0.25]
    reply = request.decode_response(vectors["r1-response"])
    assert reply.timing == {"decode_ms": 0.25, "cloud_ms": 1.5, "encode_ms": 0.125}
    arrays = {r.name: request.record_array(r) for r in reply.records}
    assert arrays["y"].tolist() == [0.5, -1.0] and arrays["k"].dtype == np.int64 and arrays["k"].tolist() == [3]


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool"])
def test_outputs_of_every_dtype_round_trip(dtype: str) -> None:
    value = (np.arange(24).reshape(2, 3, 4) % 5).astype(dtype)
    reply = request.encode_response(request.Message("default", [request.output_record("out", value)]))
    back = request.record_array(request.decode_response(reply).records[0])
    assert back.dtype == (np.float32 if dtype == "float32" else np.dtype(dtype))
    np.testing.assert_array_equal(back, value)


def test_every_prefix_is_truncated_and_extra_bytes_mismatch() -> None:
    data = vector_request()
    for cut in range(len(data)):
        with pytest.raises(codec.TruncatedFrame):
            request.decode_request(data[:cut])
    with pytest.raises(codec.LengthMismatch):
        request.decode_request(data + b"\0")


def _patched(data: bytes, offset: int, fmt: str, value) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


@pytest.mark.parametrize("offset, fmt, value, error", [
    (0, "<4s", b"SPRS", codec.BadMagic),  # a response where a request belongs
    (4, "<B", 2, codec.BadVersion),
    (5, "<B", 1, codec.BadHeader),  # flags
    (6, "<H", 2000, codec.BadHeader),  # count over the limit
    (6, "<H", 2, codec.LengthMismatch),  # a record that is not there
    (8, "<I", 10, codec.LengthMismatch),  # length below the header
    (24, "<B", 0, codec.BadHeader),  # empty plan id
    (25, "<B", 1, codec.BadHeader),  # reserved
    (28, "<B", ord("/"), codec.BadHeader),  # plan id outside the alphabet
    (30, "<B", 7, codec.BadHeader),  # unknown record kind
    (34, "<I", 10_000, codec.LengthMismatch),  # record longer than the message
])
def test_hostile_headers_give_specific_errors(offset, fmt, value, error) -> None:
    with pytest.raises(error):
        request.decode_request(_patched(vector_request(), offset, fmt, value))


def test_length_over_the_limit_is_refused_before_anything_else() -> None:
    with pytest.raises(codec.ShapeOverflow):
        request.decode_request(vector_request(), max_length=50)


def test_plain_array_hostile_shapes() -> None:
    record = request.output_record("x", np.zeros(4, np.int64))
    huge = request.Record(record.data[:4] + struct.pack("<I", 2**31) + record.data[8:], "x", request.KIND_ARRAY)
    with pytest.raises(codec.ShapeOverflow):
        request.record_array(huge)
    with pytest.raises(codec.TruncatedFrame):
        request.record_array(request.Record(b"\x03", "x", request.KIND_ARRAY))


def test_frame_shape_reads_the_header_only() -> None:
    frame = codec.encode(np.zeros((2, 3), np.float32), 32)
    assert request.frame_shape(frame) == (2, 3)
    assert request.frame_shape(frame[:10]) is None and request.frame_shape(b"garbage" * 5) is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 120), st.binary(min_size=1, max_size=8))
def test_garbage_and_mutations_only_raise_codec_errors(noise: bytes, offset: int, patch: bytes) -> None:
    for data in (noise, b"SPRQ\x01" + noise, vector_request()[:offset] + patch + vector_request()[offset + 1:]):
        try:
            message = request.decode_request(data)
        except codec.CodecError:
            continue
        for record in message.records:
            try:
                request.record_array(record, max_elements=1 << 16)
            except codec.CodecError:
                pass
