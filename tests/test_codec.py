"""Tests of the wire codec: round trips, quantization bounds, test vectors, hostile frames."""

from __future__ import annotations

import contextlib
import heapq
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from splitc.wire import choose, kernels_numpy
from splitc.wire import codec as C
from splitc.wire import huffman as hf
from splitc.wire import lengths as codec_lengths

DOC = Path(__file__).resolve().parents[1] / "docs" / "wire-format.md"
BACKENDS = ["numba", "numpy"] if C.codec_numba is not None else ["numpy"]
FUZZ_LIMIT = 1 << 20  # max_elements in fuzz tests, so a mutated shape cannot allocate much


@contextlib.contextmanager
def backend(name):
    previous = C.set_backend(name)
    try:
        yield
    finally:
        C.set_backend(previous)


def sparse_symbols(rng, n, bits, p_zero=0.85):
    """ReLU-like symbols: mostly 0, small values more likely than large ones."""
    q = np.minimum(rng.geometric(0.35, n), (1 << bits) - 1).astype(np.uint8)
    q[rng.random(n) < p_zero] = 0
    return q


_BOOKS: dict[int, C.Codebook] = {}


def book_for(bits):
    if bits not in _BOOKS:
        rng = np.random.default_rng(bits)
        _BOOKS[bits] = C.Codebook.train([sparse_symbols(rng, 3000, bits) for _ in range(3)], bits)
    return _BOOKS[bits]


# ----------------------------------------------------------------------------- test vectors


def vector_inputs():
    """The inputs of the test vectors in docs/wire-format.md (name -> (frame, codebook))."""
    samples = [[0, 0, 0, 1, 0, 0, 2, 0, 0, 0, 0, 3, 1, 0], [0, 0, 1, 1] + [0] * 8 + [2]]
    book = C.Codebook.train([np.array(s, np.uint8) for s in samples], 2)
    channels = np.array([[0.0, 1.0, 2.0], [10.0, 10.0, 40.0]], np.float32)
    q4, lo4, hi4 = C.quantize(channels, 4, per_channel_axis=0)
    constant, clo, chi = C.quantize(np.full((2, 2), 0.5, np.float32), 4)
    ramp = np.arange(16, dtype=np.uint8).reshape(2, 8)
    plain = {"modes": ("embedded",), "filters": ("none",)}
    static = np.array([0, 0, 0, 0, 1, 0, 0, 2] + [0] * 4, np.uint8)
    return {
        "v1-c2-embedded": (C.encode(np.array([[0, 0, 1], [3, 0, 2]], np.uint8), 2, -1.0, 2.0, **plain), None),
        "v2-constant": (C.encode(constant, 4, clo, chi), None),
        "v3-raw-float32": (C.encode(np.array([1.5, -2.0, 0.25], np.float32), 32), None),
        "v4-per-channel": (C.encode(q4, 4, lo4, hi4, per_channel_axis=0, **plain), None),
        "v5-static": (C.encode(static, 2, 0.0, 3.0, codebook=book, modes=("embedded", "static"), filters=("none",)),
                      book),
        "v5-codebook": (book.to_bytes(), None),
        "v6-delta": (C.encode(ramp, 4, 0.0, 1.0, modes=("embedded",), filters=("delta",)), None),
        "v7-packed": (C.encode(np.array([[0, 1, 2], [3, 0, 1]], np.uint8), 2, -1.0, 1.0, coder="none"), None),
        "v8-context-med": (context_frame(CONTEXT_VECTOR, 3, (1,)), None),
    }


# v8: a 3x4 tensor at c = 3, coded in context mode with the MED filter and two literal classes.
CONTEXT_VECTOR = np.array([[2, 3, 3, 4], [2, 3, 4, 4], [3, 3, 4, 7]], np.uint8)


def context_frame(q, bits, thresholds, filt=C.FILTER_MED, lo=0.0, hi=1.0, chunk_log2=C.DEFAULT_CHUNK_LOG2):
    """A context-mode frame with a given filter and class thresholds (the encoder's building block)."""
    head = (bits, "float32", q.shape, C.PER_TENSOR, np.array([lo, hi], "<f4").tobytes())
    return choose.encode_context(np.ascontiguousarray(q).reshape(-1), head, chunk_log2, filt, thresholds)


def doc_vectors():
    """name -> bytes for every ``<!-- vector: name -->`` + ```hex block in the doc."""
    text = DOC.read_text()
    found = re.findall(r"<!-- vector: ([\w-]+) -->\s*```hex\n(.*?)```", text, re.S)
    return {name: bytes.fromhex("".join(body.split())) for name, body in found}


@pytest.mark.parametrize("name", list(vector_inputs()))
def test_doc_vectors_are_byte_identical(name):
    frame, _ = vector_inputs()[name]
    assert doc_vectors().get(name) == frame, f"docs/wire-format.md vector {name} drifted from the code"


@pytest.mark.parametrize("be", BACKENDS)
def test_doc_vectors_decode_and_reencode(be):
    vectors = doc_vectors()
    book = C.Codebook.from_bytes(vectors["v5-codebook"])
    with backend(be):
        for name, data in vectors.items():
            if name == "v5-codebook":
                assert book.to_bytes() == data
                continue
            q, meta = C.decode(data, codebook=book)
            if meta.mode == "context":
                filt = {v: k for k, v in C.FILTER_NAMES.items()}[meta.filter]
                assert context_frame(q, meta.bits, meta.thresholds, filt, meta.lo, meta.hi) == data, name
                continue
            again = C.encode(
                q, meta.bits, meta.lo, meta.hi,
                codebook=book if meta.mode == "static" else None,
                dtype=meta.dtype, per_channel_axis=meta.per_channel_axis,
                chunk_log2=meta.chunk_log2 or C.DEFAULT_CHUNK_LOG2,
                coder="none" if meta.mode == "packed" else "huffman",
                modes=("embedded", "static") if meta.mode in ("embedded", "static") else None,
                filters=(meta.filter,),
            )
            assert again == data, name
    q, meta = C.decode(vectors["v1-c2-embedded"])
    assert q.tolist() == [[0, 0, 1], [3, 0, 2]] and meta.mode == "embedded" and (meta.lo, meta.hi) == (-1.0, 2.0)
    assert C.decode_tensor(vectors["v2-constant"]).tolist() == [[0.5, 0.5], [0.5, 0.5]]
    assert C.decode_tensor(vectors["v3-raw-float32"]).tolist() == [1.5, -2.0, 0.25]
    x = C.decode_tensor(vectors["v4-per-channel"])
    assert np.allclose(x, [[0.0, 16 / 15, 2.0], [10.0, 10.0, 40.0]], atol=1.01)
    assert C.decode(vectors["v5-static"], codebook=book)[1].codebook_id == book.id
    q, meta = C.decode(vectors["v6-delta"])
    assert meta.filter == "delta" and q.tolist() == np.arange(16).reshape(2, 8).tolist()
    q, meta = C.decode(vectors["v8-context-med"])
    assert np.array_equal(q, CONTEXT_VECTOR) and (meta.mode, meta.filter, meta.classes) == ("context", "med", 2)


# ----------------------------------------------------------------------------- round trips


def check_round_trip(q, bits, codebook=None, chunk_log2=C.DEFAULT_CHUNK_LOG2):
    frames = []
    for be in BACKENDS:
        with backend(be):
            frame = C.encode(q, bits, -1.0, 1.0, codebook=codebook, chunk_log2=chunk_log2)
            out, meta = C.decode(frame, codebook=codebook)
            assert out.dtype == np.uint8 and out.shape == q.shape
            assert np.array_equal(out, q)
            assert meta.bits == bits and meta.shape == q.shape
            frames.append(frame)
    assert all(f == frames[0] for f in frames), "numba and numpy backends wrote different bytes"
    return frames[0], meta


def symbol_arrays(max_side=12):
    @st.composite
    def build(draw):
        bits = draw(st.integers(1, 8))
        shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=max_side))
        top = (1 << bits) - 1
        small = st.integers(0, top)
        mostly_zero = st.one_of(st.just(0), st.just(0), st.just(0), small)
        q = draw(hnp.arrays(np.uint8, shape, elements=draw(st.sampled_from([small, mostly_zero]))))
        if draw(st.booleans()):  # smooth: a random walk, so that the delta filter is chosen
            steps = draw(hnp.arrays(np.int64, shape, elements=st.integers(-1, 1)))
            q = (np.cumsum(steps.reshape(-1)) & top).astype(np.uint8).reshape(shape)
        return q, bits

    return build()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(symbol_arrays(), st.booleans(), st.sampled_from([8, 13]))
def test_round_trip_any_symbols(args, static, chunk_log2):
    q, bits = args
    frame, meta = check_round_trip(q, bits, book_for(bits) if static else None, chunk_log2)
    if q.size and np.all(q == q.flat[0]) and not static:
        assert meta.mode == "constant"


@pytest.mark.parametrize("bits", range(1, 9))
@pytest.mark.parametrize("static", [False, True])
def test_round_trip_edge_cases(bits, static):
    book = book_for(bits) if static else None
    top = (1 << bits) - 1
    rng = np.random.default_rng(bits)
    cases = [
        np.zeros(0, np.uint8),
        np.zeros((3, 0, 2), np.uint8),
        np.array([top], np.uint8),
        np.array(7, np.uint8) if bits >= 3 else np.array(1, np.uint8),
        np.full((5, 7), top, np.uint8),
        np.zeros(1000, np.uint8),
        np.arange(600, dtype=np.uint8) & top,
        sparse_symbols(rng, 2000, bits),
        rng.integers(0, top + 1, 3000).astype(np.uint8),
    ]
    for q in cases:
        check_round_trip(q, bits, book)
    for q in cases[-2:]:
        check_round_trip(q, bits, book, chunk_log2=8)


@pytest.mark.parametrize("be", BACKENDS)
def test_long_runs_and_chunk_boundaries(be):
    with backend(be):
        n = 1 << 15
        for q in (np.zeros(3 * n, np.uint8), np.zeros(2 * n + 5, np.uint8)):
            q[-1] = 1
            q[n - 1] = 3
            q[n] = 2
            for log2 in (8, 12, 15):
                frame = C.encode(q, 2, 0.0, 1.0, chunk_log2=log2)
                assert np.array_equal(C.decode(frame)[0], q)
        lone = np.zeros(n, np.uint8)
        lone[0] = 1  # a run of 2**15 - 1, the longest run class
        assert np.array_equal(C.decode(C.encode(lone, 1, 0.0, 1.0, chunk_log2=15))[0], lone)


def test_backends_agree_on_activation_like_data():
    rng = np.random.default_rng(0)
    for bits in (2, 4, 6, 8):
        q = sparse_symbols(rng, 20000, bits, p_zero=0.7).reshape(20, 1000)
        check_round_trip(q, bits, chunk_log2=9)
        check_round_trip(q, bits, book_for(bits), chunk_log2=9)


def test_encode_tensor_and_meta():
    x = np.maximum(np.random.default_rng(2).standard_normal((2, 3, 40, 40)), 0).astype(np.float32)
    frame = C.encode_tensor(x, 4, per_channel_axis=1)
    y = C.decode_tensor(frame)
    q, meta = C.decode(frame)
    assert meta.bits == 4 and meta.shape == x.shape and meta.dtype == "float32" and meta.per_channel_axis == 1
    assert meta.mode in ("embedded", "context") and meta.payload_bytes > 0 and meta.chunk_log2 == C.DEFAULT_CHUNK_LOG2
    assert np.all(np.abs(y - x) <= error_bound(meta.lo, meta.hi, 4).max())
    assert np.array_equal(C.decode_tensor(C.encode_tensor(x, 32)), x)


def test_symbols_out_of_range_are_refused():
    with pytest.raises(ValueError):
        C.encode(np.array([0, 4], np.uint8), 2, 0.0, 1.0)
    with pytest.raises(ValueError):
        C.encode(np.array([0.5]), 2, 0.0, 1.0)
    with pytest.raises(ValueError):
        C.encode(np.array([0, 1], np.uint8), 9, 0.0, 1.0)
    with pytest.raises(ValueError):  # the delta filter would be chosen: still checked
        C.encode(np.arange(64, dtype=np.uint8), 5, 0.0, 1.0)


def test_raw_modes():
    x = np.random.default_rng(1).standard_normal((3, 4, 5)).astype(np.float32)
    frame = C.encode(x, 32, shape=None)
    out, meta = C.decode(frame)
    assert meta.mode == "raw" and out.dtype == np.float32 and np.array_equal(out, x)
    frame16 = C.encode(x, 16, dtype="float16")
    out16, meta16 = C.decode(frame16)
    assert out16.dtype == np.float16 and meta16.dtype == "float16"
    assert np.array_equal(C.decode_tensor(frame16), x.astype(np.float16).astype(np.float32))
    assert len(frame16) < len(frame)
    assert C.decode(C.encode(np.zeros((0, 3), np.float32), 32))[0].shape == (0, 3)


# ----------------------------------------------------------------------------- quantization

finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32)


def error_bound(lo, hi, bits):
    """Half a step, plus float32 rounding; a range under 1e-30 counts as constant (error up to the range)."""
    span = np.float64(hi) - np.float64(lo)
    step = span / ((1 << bits) - 1)
    slack = 4 * np.finfo(np.float32).eps * np.maximum(np.abs(lo), np.abs(hi))
    return np.where(span < 1e-30, span, step / 2) * (1 + 1e-9) + slack


@settings(max_examples=150, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=9), elements=finite), st.integers(1, 8))
def test_quantization_error_per_tensor(x, bits):
    q, lo, hi = C.quantize(x, bits)
    assert q.dtype == np.uint8 and q.max() <= (1 << bits) - 1
    assert lo == x.min() and hi == x.max()
    y = C.dequantize(q, bits, lo, hi)
    assert y.dtype == np.float32
    assert np.all(np.abs(y.astype(np.float64) - x) <= error_bound(lo, hi, bits))
    z = C.decode_tensor(C.encode(q, bits, lo, hi))
    assert np.array_equal(z, y)


@settings(max_examples=150, deadline=None)
@given(
    hnp.arrays(np.float32, hnp.array_shapes(min_dims=2, max_dims=4, max_side=6), elements=finite),
    st.integers(1, 8),
    st.data(),
)
def test_quantization_error_per_channel(x, bits, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    q, lo, hi = C.quantize(x, bits, per_channel_axis=axis)
    assert lo.shape == hi.shape == (x.shape[axis],)
    y = C.dequantize(q, bits, lo, hi, per_channel_axis=axis)
    shape = [1] * x.ndim
    shape[axis] = -1
    bound = error_bound(lo.reshape(shape), hi.reshape(shape), bits)
    assert np.all(np.abs(y.astype(np.float64) - x) <= bound)
    frame = C.encode(q, bits, lo, hi, per_channel_axis=axis)
    meta = C.decode(frame)[1]
    assert meta.per_channel_axis == axis % x.ndim and np.array_equal(meta.lo, lo)
    assert np.array_equal(C.decode_tensor(frame), y)


def test_constant_tensors_decode_to_lo():
    for bits in (1, 4, 8):
        x = np.full((3, 5), -2.25, np.float32)
        q, lo, hi = C.quantize(x, bits)
        assert lo == hi == np.float32(-2.25) and not q.any()
        frame = C.encode(q, bits, lo, hi)
        assert C.decode(frame)[1].mode == "constant"
        assert np.array_equal(C.decode_tensor(frame), x)
    x = np.stack([np.full(4, 3.0), np.arange(4.0)]).astype(np.float32)
    q, lo, hi = C.quantize(x, 3, per_channel_axis=0)
    y = C.decode_tensor(C.encode(q, 3, lo, hi, per_channel_axis=0))
    assert np.array_equal(y[0], x[0]) and np.allclose(y[1], x[1], atol=3 / 7 / 2 + 1e-6)
    with pytest.raises(ValueError):
        C.quantize(np.array([1.0, np.nan]), 4)


# ----------------------------------------------------------------------------- codebooks


def test_codebook_train_serialize_and_id():
    rng = np.random.default_rng(5)
    for bits in (1, 2, 4, 8):
        book = C.Codebook.train([sparse_symbols(rng, 5000, bits)], bits)
        size_a, size_b = hf.alphabet_sizes(bits)
        possible_a = np.ones(size_a, bool)
        possible_a[book.dominant] = False
        possible_b = np.ones(size_b, bool)
        possible_b[book.dominant] = False
        assert np.all(book.lengths_a[possible_a] > 0) and np.all(book.lengths_b[possible_b] > 0)
        assert max(book.lengths_a.max(), book.lengths_b.max()) <= hf.MAX_CODE_LEN
        assert hf.kraft_ok(book.lengths_a) and hf.kraft_ok(book.lengths_b)
        again = C.Codebook.from_bytes(book.to_bytes())
        assert again == book and again.id == book.id
        assert book.id == zlib.crc32(bytes([bits, book.dominant]) + book.nibbles())


def test_static_or_embedded_is_chosen_per_message():
    rng = np.random.default_rng(3)
    book = C.Codebook.train([sparse_symbols(rng, 50000, 4)], 4)
    similar = sparse_symbols(rng, 50000, 4)
    modes = ("embedded", "static")
    assert C.decode(C.encode(similar, 4, 0.0, 1.0, codebook=book, modes=modes), codebook=book)[1].mode == "static"
    different = np.full(50000, 15, np.uint8)
    different[::3] = 0
    different[1::7] = 9
    frame = C.encode(different, 4, 0.0, 1.0, codebook=book, modes=modes)
    assert C.decode(frame, codebook=book)[1].mode == "embedded"
    assert np.array_equal(C.decode(frame)[0], different)


def reference_huffman_cost(counts):
    """Cost in bits of an unconstrained Huffman code (heap merging)."""
    heap = [int(c) for c in counts if c > 0]
    if len(heap) < 2:
        return sum(heap)
    heapq.heapify(heap)
    cost = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        cost += merged
        heapq.heappush(heap, merged)
    return cost


def test_huffman_lengths_are_limited_and_optimal():
    fib = [1, 1]
    while len(fib) < 40:
        fib.append(fib[-1] + fib[-2])
    counts = np.array(fib, np.int64)
    lengths = hf.huffman_lengths(counts, 15)
    assert lengths.max() == 15 and hf.kraft_ok(lengths)
    assert int(np.sum(2 ** (15 - lengths))) == 1 << 15  # complete code
    rng = np.random.default_rng(0)
    for _ in range(200):
        c = rng.integers(0, 1000, rng.integers(2, 300)) * (rng.random(1) < 0.7)
        c[:2] = [5, 7]
        got = hf.huffman_lengths(c, 15)
        if hasattr(hf.huffman_lengths, "py_func"):
            assert np.array_equal(got, hf.huffman_lengths.py_func(c, 15))
        assert np.all((got > 0) == (c > 0)) and hf.kraft_ok(got)
        free = hf.huffman_lengths(c, 64)  # no effective limit
        assert hf.cost_bits(c, free) == reference_huffman_cost(c)
        if free.max() <= 15:
            assert np.array_equal(got, free)
        else:
            assert hf.cost_bits(c, got) >= hf.cost_bits(c, free)
        limited = hf.huffman_lengths(c, 9)
        assert limited.max() <= 9 and hf.kraft_ok(limited)


# ----------------------------------------------------------------------------- hostile input


def valid_frames():
    rng = np.random.default_rng(11)
    q = sparse_symbols(rng, 20000, 4).reshape(4, 5000)
    book = book_for(4)
    frames = [frame for name, (frame, _) in vector_inputs().items() if name != "v5-codebook"]
    frames.append(C.encode(q, 4, 0.0, 1.0, chunk_log2=12))
    frames.append(C.encode(q, 4, 0.0, 1.0, codebook=book, chunk_log2=12))
    return frames, book


def payload_length_offset(frame):
    """Offset of the u32 payload length (found by trying candidates from the end)."""
    for pos in range(len(frame) - 4, 15, -1):
        (value,) = struct.unpack_from("<I", frame, pos)
        if pos + 4 + value == len(frame):
            return pos
    raise AssertionError("no payload length")


def test_every_prefix_is_truncated():
    frames, book = valid_frames()
    for frame in frames:
        for size in range(len(frame)):
            with pytest.raises(C.TruncatedFrame):
                C.decode(frame[:size], codebook=book)
    with pytest.raises(C.TruncatedFrame):
        C.Codebook.from_bytes(book.to_bytes()[:-1])


def test_length_field_larger_than_data():
    frame = vector_inputs()["v1-c2-embedded"][0]
    pos = payload_length_offset(frame)
    (size,) = struct.unpack_from("<I", frame, pos)
    bad = bytearray(frame)
    struct.pack_into("<I", bad, pos, size + 1)
    with pytest.raises(C.LengthMismatch, match="payload length"):
        C.decode(bytes(bad))
    bad = bytearray(frame)
    struct.pack_into("<H", bad, pos - 2, 9)  # the one chunk claims 9 bytes
    with pytest.raises(C.LengthMismatch, match="chunk lengths"):
        C.decode(bytes(bad))
    bad = bytearray(frame)
    struct.pack_into("<I", bad, 8, 3)  # frame length shorter than the header
    with pytest.raises(C.LengthMismatch):
        C.decode(bytes(bad))
    per_channel = bytearray(vector_inputs()["v4-per-channel"][0])
    struct.pack_into("<I", per_channel, C.HEADER_SIZE, 4000)  # per-channel scales would run past the frame
    with pytest.raises(C.LengthMismatch, match="per-channel"):
        C.decode(bytes(per_channel))


def test_trailing_garbage():
    for frame, _ in vector_inputs().values():
        if frame.startswith(C.MAGIC):
            with pytest.raises(C.LengthMismatch, match="trailing"):
                C.decode(frame + b"\x00")
    with pytest.raises(C.LengthMismatch):
        C.Codebook.from_bytes(book_for(2).to_bytes() + b"!")


def test_shape_overflow():
    frame = vector_inputs()["v1-c2-embedded"][0]
    bad = bytearray(frame)
    struct.pack_into("<2I", bad, C.HEADER_SIZE, 0xFFFFFFFF, 0xFFFFFFFF)
    with pytest.raises(C.ShapeOverflow, match="limit"):
        C.decode(bytes(bad))
    with pytest.raises(C.ShapeOverflow):
        C.decode(frame, max_elements=5)
    raw = bytearray(vector_inputs()["v3-raw-float32"][0])
    struct.pack_into("<I", raw, C.HEADER_SIZE, 4)  # 4 elements, payload holds 3
    with pytest.raises(C.ShapeOverflow, match="payload"):
        C.decode(bytes(raw))
    many_dims = bytearray(frame)
    many_dims[12] = 200
    with pytest.raises(C.ShapeOverflow):
        C.decode(bytes(many_dims))


def test_invalid_codebook():
    frame = vector_inputs()["v1-c2-embedded"][0]
    start = C.HEADER_SIZE + 8 + 8  # header, shape (2 dims), lo/hi
    bad = bytearray(frame)
    bad[start : start + 18] = bytes([0x11]) * 18  # every context-A symbol gets a 1-bit code
    bad[start] = 0x10  # ... but the dominant literal
    with pytest.raises(C.InvalidCodebook, match="Kraft"):
        C.decode(bytes(bad))
    with pytest.raises(C.InvalidCodebook):
        C.Codebook(2, 0, [0, 1, 1, 1] + [0] * 32, [0, 1, 1, 1])
    book = book_for(2)
    static = C.encode(sparse_symbols(np.random.default_rng(1), 5000, 2), 2, 0.0, 1.0, codebook=book)
    with pytest.raises(C.InvalidCodebook, match="not given"):
        C.decode(static)
    with pytest.raises(C.InvalidCodebook):
        C.decode(static, codebook=book_for(3))
    assert C.decode(static, codebook={book.id: book, 1: book_for(3)})[1].mode == "static"
    blob = bytearray(book.to_bytes())
    blob[8] ^= 0x01  # flips a code length: the stored id no longer matches
    with pytest.raises(C.InvalidCodebook):
        C.Codebook.from_bytes(bytes(blob))


def test_version_magic_and_header_fields():
    frame = vector_inputs()["v1-c2-embedded"][0]
    with pytest.raises(C.BadVersion):
        C.decode(frame[:4] + b"\x02" + frame[5:])
    with pytest.raises(C.BadMagic):
        C.decode(b"SPLX" + frame[4:])
    with pytest.raises(C.BadMagic):
        C.decode(b"X")
    with pytest.raises(C.TruncatedFrame):
        C.decode(b"")
    for offset, value in ((5, 9), (6, 12), (7, 9), (13, 5), (14, 4), (15, 3), (16, 3), (17, 1), (19, 255)):
        bad = bytearray(frame)
        bad[offset] = value
        with pytest.raises(C.BadHeader):
            C.decode(bytes(bad))
    raw = bytearray(vector_inputs()["v3-raw-float32"][0])
    raw[16] = 1  # the delta filter is only allowed on Huffman-coded symbols
    with pytest.raises(C.BadHeader, match="filter"):
        C.decode(bytes(raw))
    with pytest.raises(C.BadMagic):
        C.Codebook.from_bytes(b"SPLT" + bytes(40))
    with pytest.raises(C.BadVersion):
        C.Codebook.from_bytes(b"SPCB\x07" + bytes(40))


def test_corrupt_payload():
    frame = bytearray(vector_inputs()["v1-c2-embedded"][0])
    frame[-1] = 0xFF  # decodes 4 symbols, then needs bits past the chunk
    with pytest.raises(C.CorruptPayload):
        C.decode(bytes(frame))
    frame[-1] = 0x2F  # the right symbols, but a padding bit is set
    with pytest.raises(C.CorruptPayload, match="padding"):
        C.decode(bytes(frame))
    incomplete = bytearray(vector_inputs()["v1-c2-embedded"][0])
    start = C.HEADER_SIZE + 8 + 8
    incomplete[start : start + 20] = bytes(20)
    incomplete[start + 2] = 0x10  # context A: only symbol 5 (a run of 2) has a code, "0"
    incomplete[-1] = 0x80  # first bit 1: no code
    with pytest.raises(C.CorruptPayload, match="no code"):
        C.decode(bytes(incomplete))


# ----------------------------------------------------------------------------- fuzzing


def decode_only_codec_errors(data, book):
    try:
        C.decode(data, codebook=book, max_elements=FUZZ_LIMIT)
    except C.CodecError:
        pass


FRAMES, FRAME_BOOK = valid_frames()


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes(data):
    decode_only_codec_errors(data, FRAME_BOOK)
    decode_only_codec_errors(C.MAGIC + bytes([C.VERSION]) + data, FRAME_BOOK)
    try:
        C.Codebook.from_bytes(b"SPCB\x01" + data)
    except C.CodecError:
        pass


@st.composite
def mutated_frames(draw):
    frame = bytearray(draw(st.sampled_from(FRAMES)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "set", "u32", "insert", "delete"]))
        pos = draw(st.integers(0, len(frame) - 1))
        if kind == "flip":
            frame[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set":
            frame[pos] = draw(st.integers(0, 255))
        elif kind == "u32" and pos + 4 <= len(frame):
            value = draw(st.sampled_from([0, 1, 0xFFFF, 0xFFFFFFFF, len(frame), draw(st.integers(0, 2**32 - 1))]))
            struct.pack_into("<I", frame, pos, value)
        elif kind == "insert":
            frame[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif kind == "delete" and len(frame) > 1:
            del frame[pos]
    if draw(st.booleans()):  # keep the frame length field consistent, to reach deeper checks
        struct.pack_into("<I", frame, 8, len(frame))
    return bytes(frame)


@pytest.mark.parametrize("be", BACKENDS)
def test_fuzz_mutated_frames(be):
    @settings(max_examples=300, deadline=None)
    @given(mutated_frames())
    def run(data):
        decode_only_codec_errors(data, FRAME_BOOK)

    with backend(be):
        run()


@settings(max_examples=100, deadline=None)
@given(hnp.arrays(np.uint8, hnp.array_shapes(min_dims=0, max_dims=3, max_side=12)), st.integers(1, 8))
def test_packed_mode_round_trip(q, bits):
    q = q & np.uint8((1 << bits) - 1)
    frame = C.encode(q, bits, 0.0, 1.0, coder="none")
    got, meta = C.decode(frame)
    assert np.array_equal(got, q)
    if q.size:
        assert meta.mode == "packed" and meta.payload_bytes == (q.size * bits + 7) // 8


def test_packed_mode_rejects_a_short_payload():
    frame = bytearray(C.encode(np.arange(8, dtype=np.uint8), 3, 0.0, 1.0, coder="none"))
    frame[-5:-1] = frame[-4:]  # drop one payload byte but keep the frame self-consistent
    frame = bytes(frame[:-1])
    with pytest.raises(C.CodecError):
        C.decode(frame)


# ----------------------------------------------------------------------------- mode choice, packed kernels, context mode


def packbits_reference(q, bits):
    """Packed-mode payload, one bit at a time (np.packbits)."""
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint8)
    return np.packbits(((q.reshape(-1)[:, None] >> shifts) & 1).astype(np.uint8)).tobytes()


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 8), st.integers(1, 131), st.data())
def test_packed_kernels_match_the_bitwise_reference(bits, n, data):
    q = data.draw(hnp.arrays(np.uint8, n, elements=st.integers(0, (1 << bits) - 1)))
    want = packbits_reference(q, bits)
    for be in BACKENDS:
        with backend(be):
            frame = C.encode(q, bits, 0.0, 1.0, coder="none")
            got, meta = C.decode(frame)
            assert frame[-len(want):] == want and meta.payload_bytes == len(want) == (n * bits + 7) // 8
            assert np.array_equal(got, q)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(symbol_arrays(max_side=16), st.booleans())
def test_frame_is_never_larger_than_packed(args, static):
    q, bits = args
    book = book_for(bits) if static else None
    frames = []
    for be in BACKENDS:
        with backend(be):
            frames.append(C.encode(q, bits, -1.0, 1.0, codebook=book))
            out, meta = C.decode(frames[-1], codebook=book)
            assert np.array_equal(out, q) and out.shape == q.shape
    assert all(f == frames[0] for f in frames), "numba and numpy backends wrote different bytes"
    packed = C.encode(q, bits, -1.0, 1.0, coder="none")
    assert len(frames[0]) <= len(packed)
    if meta.mode == "packed":
        assert frames[0] == packed


def smooth_tensor(rng, shape, bits):
    """Spatially correlated dense symbols: blurred noise plus a ramp, quantized to ``bits``."""
    x = rng.standard_normal(shape).astype(np.float32)
    for axis in (-1, -2):
        for _ in range(3):
            x = (x + np.roll(x, 1, axis) + np.roll(x, -1, axis)) / 3
    x += np.linspace(0, 1, shape[-1], dtype=np.float32)
    return C.quantize(x, bits)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_dense_smooth_tensors_choose_the_med_filter_and_classes(bits):
    q, lo, hi = smooth_tensor(np.random.default_rng(bits), (4, 96, 96), bits)
    frames = []
    for be in BACKENDS:
        with backend(be):
            frames.append(C.encode(q, bits, lo, hi))
            out, meta = C.decode(frames[-1])
            assert np.array_equal(out, q)
    assert all(f == frames[0] for f in frames)
    assert meta.mode in ("embedded", "context") and meta.filter == "med"
    assert len(frames[0]) <= len(C.encode(q, bits, lo, hi, modes=("embedded",)))
    assert len(frames[0]) <= len(context_frame(q, bits, (), C.FILTER_DELTA, lo, hi))
    if bits == 8:
        assert meta.classes > 1 and len(meta.thresholds) == meta.classes - 1


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(symbol_arrays(), st.sampled_from([C.FILTER_NONE, C.FILTER_DELTA, C.FILTER_MED]), st.data())
def test_context_mode_round_trip(args, filt, data):
    q, bits = args
    if q.size == 0:
        return
    top = 1 << (bits - 1)
    thresholds = tuple(sorted(data.draw(st.sets(st.integers(1, top), max_size=min(3, top)))))
    frames = []
    for be in BACKENDS:
        with backend(be):
            frames.append(context_frame(q, bits, thresholds, filt, chunk_log2=8))
            out, meta = C.decode(frames[-1])
            assert np.array_equal(out, q)
    assert all(f == frames[0] for f in frames)
    if meta.mode == "context":  # a run of one symbol is sent in constant mode
        assert meta.classes == len(thresholds) + 1 and meta.thresholds == thresholds
        assert meta.filter == C.FILTER_NAMES[filt]


@pytest.mark.parametrize("shape", [(1,), (7,), (5, 1), (1, 9), (3, 4), (6, 17), (2, 3, 33), (40, 3)])
def test_med_filter_kernels_agree_and_invert(shape):
    rng = np.random.default_rng(len(shape))
    q = rng.integers(0, 256, shape).astype(np.uint8).reshape(-1)
    width = shape[-1]
    outs = []
    for kernels in {C.codec_numba or kernels_numpy, kernels_numpy}:
        out = np.empty_like(q)
        kernels.med(q, width, 255, out)
        outs.append(out.copy())
        kernels.unmed(out, width, 255)
        assert np.array_equal(out, q)
    assert all(np.array_equal(o, outs[0]) for o in outs)
    grid = q.astype(np.int64).reshape(-1, width)  # the predictor as docs/wire-format.md states it
    for r in range(grid.shape[0]):
        for x in range(width):
            if r == 0:
                pred = grid[0, x - 1] if x else 0
            elif x == 0:
                pred = grid[r - 1, 0]
            else:
                a, b, c = grid[r, x - 1], grid[r - 1, x], grid[r - 1, x - 1]
                pred = min(a, b) if c >= max(a, b) else max(a, b) if c <= min(a, b) else a + b - c
            assert outs[0][r * width + x] == (grid[r, x] - pred) & 255


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 15), min_size=1, max_size=700), st.integers(1, 30))
def test_compact_code_lengths_round_trip(values, repeat):
    x = np.repeat(np.array(values, np.int64), repeat)[: max(len(values), 1400)]
    data = codec_lengths.pack_lengths(x)
    assert len(data) == (codec_lengths.section_bits(x) + 7) // 8
    got, status = codec_lengths.unpack_lengths(np.frombuffer(data, np.uint8), x.size)
    assert status == codec_lengths.OK and np.array_equal(got, x)
    assert codec_lengths.unpack_lengths(np.frombuffer(data[:-1], np.uint8), x.size)[1] != codec_lengths.OK
    assert codec_lengths.unpack_lengths(np.frombuffer(data + b"\0", np.uint8), x.size)[1] != codec_lengths.OK


def test_context_mode_header_is_checked():
    frame = vector_inputs()["v8-context-med"][0]
    start = C.HEADER_SIZE + 8 + 8  # header, shape (2 dims), lo/hi: classes, 3 thresholds, u16 section bytes
    assert frame[start : start + 4] == bytes([2, 1, 0, 0])
    for patch, error in (
        ({start: 0}, C.BadHeader),  # no class
        ({start: 5}, C.BadHeader),  # more than 4 classes
        ({start + 1: 0}, C.BadHeader),  # threshold 0
        ({start + 1: 5}, C.BadHeader),  # above 2**(bits-1) = 4
        ({start + 2: 1}, C.BadHeader),  # an unused threshold not zero
        ({start: 3, start + 2: 1}, C.BadHeader),  # not increasing
        ({start + 4: 0xFF}, C.LengthMismatch),  # the section runs past the frame
        ({start + 6: 0xFF, start + 7: 0xFF}, C.InvalidCodebook),  # a broken length code
    ):
        bad = bytearray(frame)
        for pos, value in patch.items():
            bad[pos] = value
        with pytest.raises(error):
            C.decode(bytes(bad))
    with pytest.raises(ValueError, match="modes"):
        C.encode(CONTEXT_VECTOR, 3, 0.0, 1.0, modes=("zip",))
