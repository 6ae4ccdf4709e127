"""Requests and responses between the edge client and the cloud server.

A request carries the cut tensors of one inference, a response the cloud
half's outputs; both are one *container*: a small versioned header naming the
plan, then length-prefixed tensor records (each normally one frame of
``splitc.wire.codec``). The layout is specified in docs/wire-format.md,
section "Requests and responses".

Malformed input raises a subclass of ``codec.CodecError`` naming the problem;
every length is checked against the data (and the caller's limit) before use.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

import numpy as np

from splitc.wire import codec

REQUEST_MAGIC = b"SPRQ"
RESPONSE_MAGIC = b"SPRS"
VERSION = 1
MAX_RECORDS = 1024
MAX_PLAN_ID = 64
KIND_FRAME = 0
KIND_ARRAY = 1
PLAN_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# numpy dtypes a plain-array record may hold (code = index)
ARRAY_DTYPES = ("float32", "float16", "float64", "int64", "int32", "int16", "int8", "uint8", "uint16", "bool")

_HEAD = struct.Struct("<4sBBHIQIB3s")  # magic, version, flags, count, length, request id, plan crc, id len, reserved
_TIMING = struct.Struct("<3f")  # response only: decode_ms, cloud_ms, encode_ms
_RECORD = struct.Struct("<BBHI")  # kind, name length, reserved, data length
_ARRAY = struct.Struct("<BB2s")  # dtype code, ndim, reserved


@dataclass
class Record:
    """One tensor of a container: a codec frame (``kind`` 0) or a plain array (``kind`` 1)."""

    data: bytes
    name: str = ""
    kind: int = KIND_FRAME


@dataclass
class Message:
    """A decoded request or response."""

    plan_id: str
    records: list[Record]
    request_id: int = 0
    plan_crc: int = 0
    timing: dict[str, float] = field(default_factory=dict)  # responses: decode_ms, cloud_ms, encode_ms


class ArrayPayload(bytes):
    """A plain-array record's data (an integer or bool cut tensor): ``encode_request`` sends it as kind 1."""


def array_payload(value: np.ndarray) -> ArrayPayload:
    """A tensor as a plain-array record's data: dtype code, rank, shape, then the values (exact)."""
    value = np.asarray(value)
    if str(value.dtype) not in ARRAY_DTYPES:
        raise ValueError(f"dtype {value.dtype} cannot be sent as a plain array")
    head = _ARRAY.pack(ARRAY_DTYPES.index(str(value.dtype)), value.ndim, bytes(2))
    shape = struct.pack(f"<{value.ndim}I", *value.shape)
    return ArrayPayload(head + shape + np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<")).tobytes())


def plain_array(data, max_elements: int = codec.DEFAULT_MAX_ELEMENTS) -> np.ndarray:
    """The array a plain-array record's data holds; raises ``codec.CodecError`` subclasses when malformed."""
    return _plain_array(memoryview(data), max_elements)


def encode_request(plan_id: str, frames: list[bytes], request_id: int = 0, plan_crc: int = 0) -> bytes:
    """A request container: the cut frames in the plan's order (records without names).

    An ``ArrayPayload`` (an integer or bool cut tensor) goes as a plain-array record, any other as a frame.
    """
    records = [Record(f, kind=KIND_ARRAY if isinstance(f, ArrayPayload) else KIND_FRAME) for f in frames]
    return _container(REQUEST_MAGIC, plan_id, records, request_id, plan_crc, b"")


def encode_response(message: Message) -> bytes:
    """A response container holding ``message.records`` and the server's timings."""
    t = message.timing
    timing = _TIMING.pack(t.get("decode_ms", 0.0), t.get("cloud_ms", 0.0), t.get("encode_ms", 0.0))
    return _container(RESPONSE_MAGIC, message.plan_id, message.records, message.request_id, message.plan_crc, timing)


def decode_request(data, max_length: int = 2**31) -> Message:
    """Parse a request container; raises ``codec.CodecError`` subclasses on malformed data."""
    return _parse(data, REQUEST_MAGIC, max_length)


def decode_response(data, max_length: int = 2**31) -> Message:
    """Parse a response container; raises ``codec.CodecError`` subclasses on malformed data."""
    return _parse(data, RESPONSE_MAGIC, max_length)


def output_record(name: str, value: np.ndarray, bits: int = 32) -> Record:
    """A cloud output as a record: a raw frame (``bits`` 32 or 16) for float tensors, else a plain array."""
    value = np.asarray(value)
    if value.dtype == np.float32:
        return Record(codec.encode(value, bits, dtype="float32"), name)
    if str(value.dtype) not in ARRAY_DTYPES:
        raise ValueError(f"output {name!r} has dtype {value.dtype}, which a response cannot carry")
    head = _ARRAY.pack(ARRAY_DTYPES.index(str(value.dtype)), value.ndim, bytes(2))
    shape = struct.pack(f"<{value.ndim}I", *value.shape)
    return Record(head + shape + np.ascontiguousarray(value).astype(value.dtype.newbyteorder("<")).tobytes(),
                  name, KIND_ARRAY)


def record_array(record: Record, max_elements: int = codec.DEFAULT_MAX_ELEMENTS) -> np.ndarray:
    """The array a response record holds (float32 for frames)."""
    if record.kind == KIND_FRAME:
        values, _meta = codec.decode(record.data, max_elements=max_elements)
        return np.asarray(values, np.float32)
    return _plain_array(memoryview(record.data), max_elements)


def frame_shape(frame) -> tuple[int, ...] | None:
    """The shape a frame's header declares, or None when the header is too short to say."""
    view = memoryview(frame)
    if len(view) < 20 or bytes(view[:4]) != codec.MAGIC:
        return None
    ndim = view[12]
    if ndim > 16 or len(view) < 20 + 4 * ndim:
        return None
    return struct.unpack_from(f"<{ndim}I", view, 20)


# ----------------------------------------------------------------------------- internals


def _container(magic: bytes, plan_id: str, records: list[Record], request_id: int, plan_crc: int,
               timing: bytes) -> bytes:
    ident = _plan_id_bytes(plan_id)
    if len(records) > MAX_RECORDS:
        raise ValueError(f"at most {MAX_RECORDS} tensors per message, got {len(records)}")
    body = [_record_bytes(r) for r in records]
    length = _HEAD.size + len(ident) + len(timing) + sum(len(b) for b in body)
    if length > 0xFFFFFFFF:
        raise ValueError("message is larger than 4 GiB")
    head = _HEAD.pack(magic, VERSION, 0, len(records), length, request_id & (2**64 - 1), plan_crc, len(ident),
                      bytes(3))
    return b"".join([head, ident, timing, *body])


def _plan_id_bytes(plan_id: str) -> bytes:
    if not PLAN_ID.match(plan_id or ""):
        raise ValueError(f"plan id {plan_id!r}: 1..64 characters of A-Z a-z 0-9 . _ -")
    return plan_id.encode("ascii")


def _record_bytes(record: Record) -> bytes:
    name = record.name.encode("utf-8")
    if len(name) > 255:
        raise ValueError(f"tensor name {record.name[:40]!r}... is longer than 255 bytes")
    return _RECORD.pack(record.kind, len(name), 0, len(record.data)) + name + bytes(record.data)


def _parse(data, magic: bytes, max_length: int) -> Message:
    view = memoryview(data).cast("B") if not isinstance(data, memoryview) else data.cast("B")
    length = _check_head(view, magic, max_length)
    (_, _, _, count, _, request_id, plan_crc, id_len, _) = _HEAD.unpack_from(view)
    pos = _HEAD.size
    ident = bytes(_take(view, pos, id_len, "the plan id", length))
    pos += id_len
    plan_id = ident.decode("ascii", errors="replace")
    if not PLAN_ID.match(plan_id):
        raise codec.BadHeader(f"plan id {plan_id!r} is not 1..64 characters of A-Z a-z 0-9 . _ -")
    timing = {}
    if magic == RESPONSE_MAGIC:
        values = _TIMING.unpack(_take(view, pos, _TIMING.size, "the timing block", length))
        timing = dict(zip(("decode_ms", "cloud_ms", "encode_ms"), values))
        pos += _TIMING.size
    records = []
    for index in range(count):
        record, pos = _parse_record(view, pos, index, length)
        records.append(record)
    if pos != length:
        raise codec.LengthMismatch(f"{length - pos} bytes after the last of {count} records")
    return Message(plan_id, records, request_id, plan_crc, timing)


def _check_head(view: memoryview, magic: bytes, max_length: int) -> int:
    """The checks that come first, in order, so that prefixes read as truncated (as for frames)."""
    head = bytes(view[:4])
    if not magic.startswith(head):
        raise codec.BadMagic(f"bad magic {head!r}, expected {magic!r}")
    if len(view) < 5:
        raise codec.TruncatedFrame(f"{len(view)} bytes: too short for a message header")
    if view[4] != VERSION:
        raise codec.BadVersion(f"message version {view[4]}, this reader reads version {VERSION}")
    if len(view) < _HEAD.size:
        raise codec.TruncatedFrame(f"{len(view)} bytes: the message header needs {_HEAD.size}")
    (_, _, flags, count, length, _, _, id_len, reserved) = _HEAD.unpack_from(view)
    if length < _HEAD.size:
        raise codec.LengthMismatch(f"message length {length} is shorter than its header")
    if length > max_length:
        raise codec.ShapeOverflow(f"message length {length} exceeds the limit of {max_length} bytes")
    if len(view) < length:
        raise codec.TruncatedFrame(f"{len(view)} bytes of a {length}-byte message")
    if len(view) > length:
        raise codec.LengthMismatch(f"{len(view) - length} bytes after the {length}-byte message")
    if flags or reserved != bytes(3):
        raise codec.BadHeader("reserved header bytes are not zero")
    if count > MAX_RECORDS or not 1 <= id_len <= MAX_PLAN_ID:
        raise codec.BadHeader(f"{count} records (at most {MAX_RECORDS}), plan id of {id_len} bytes (1..64)")
    return length


def _take(view: memoryview, pos: int, size: int, what: str, length: int) -> memoryview:
    if pos + size > length:
        raise codec.LengthMismatch(f"{what} needs {size} bytes at offset {pos}, the message ends at {length}")
    return view[pos : pos + size]


def _parse_record(view: memoryview, pos: int, index: int, length: int) -> tuple[Record, int]:
    kind, name_len, reserved, size = _RECORD.unpack(_take(view, pos, _RECORD.size, f"record {index}", length))
    if kind not in (KIND_FRAME, KIND_ARRAY) or reserved:
        raise codec.BadHeader(f"record {index}: unknown kind {kind} or non-zero reserved bytes")
    pos += _RECORD.size
    raw_name = bytes(_take(view, pos, name_len, f"record {index}'s name", length))
    try:
        name = raw_name.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise codec.BadHeader(f"record {index}: the name is not UTF-8") from exc
    pos += name_len
    data = _take(view, pos, size, f"record {index}'s data", length)
    return Record(bytes(data), name, kind), pos + size


def _plain_array(view: memoryview, max_elements: int) -> np.ndarray:
    if len(view) < _ARRAY.size:
        raise codec.TruncatedFrame(f"plain array of {len(view)} bytes: the header needs {_ARRAY.size}")
    code, ndim, reserved = _ARRAY.unpack_from(view)
    if code >= len(ARRAY_DTYPES) or ndim > 16 or reserved != bytes(2):
        raise codec.BadHeader(f"plain array: dtype code {code}, ndim {ndim} or reserved bytes not allowed")
    if len(view) < _ARRAY.size + 4 * ndim:
        raise codec.TruncatedFrame("plain array: the shape is cut short")
    shape = struct.unpack_from(f"<{ndim}I", view, _ARRAY.size)
    n = int(np.prod(shape, dtype=object)) if shape else 1
    dtype = np.dtype(ARRAY_DTYPES[code]).newbyteorder("<")
    if n > max_elements:
        raise codec.ShapeOverflow(f"plain array of {n} elements exceeds the limit of {max_elements}")
    payload = view[_ARRAY.size + 4 * ndim :]
    if len(payload) != n * dtype.itemsize:
        raise codec.ShapeOverflow(f"plain array {list(shape)} {dtype.name} needs {n * dtype.itemsize} bytes, "
                                  f"has {len(payload)}")
    return np.frombuffer(payload, dtype).astype(dtype.newbyteorder("="), copy=True).reshape(shape)
