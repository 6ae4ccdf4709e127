"""JPEG coding of image-shaped cut tensors: the codec mode, its hostile frames, calibration and plans over HTTP."""

from __future__ import annotations

import io
import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import splitc
from splitc import joint
from splitc.testing import zoo
from splitc.calibration import calibrate
from splitc.partition.solve import forced_partition
from splitc.passes.qdq import Encoding, jpeg_width, round_trip
from splitc.partition.select import Option
from splitc.runtime import EdgeClient, Pipeline
from splitc.wire import codec
from splitc.wire import jpeg as codec_jpeg
from splitc.runtime.server import ServerThread


def smooth_images(count: int, shape=(1, 3, 32, 32), seed: int = 0) -> np.ndarray:
    """Photos stand-ins: sums of a few low-frequency waves per channel, in [0, 1]."""
    rng = np.random.default_rng(seed)
    n, c, h, w = shape
    yy, xx = np.meshgrid(np.linspace(0, 1, h), np.linspace(0, 1, w), indexing="ij")
    out = np.empty((count, *shape), np.float32)
    for i in range(count):
        for k in range(n * c):
            fy, fx, phase = rng.uniform(0.3, 2.0), rng.uniform(0.3, 2.0), rng.uniform(0, 6.3)
            out[i].reshape(n * c, h, w)[k] = 0.5 + 0.4 * np.sin(2 * np.pi * (fy * yy + fx * xx) + phase)
    return out


# ----------------------------------------------------------------------------- the codec mode


@pytest.mark.parametrize("shape", [(1, 3, 24, 40), (2, 1, 16, 8), (1, 20, 12, 3), (3, 9, 7, 1)])
def test_jpeg_frames_hold_what_pillow_decodes(shape) -> None:
    idx = np.indices(shape).astype(np.float32)
    q = np.rint(127.5 + 100 * np.sin(idx[-1] / 5 + idx[-2] / 7 + idx[0] + idx[1] / 3)).astype(np.uint8)
    frame = codec.encode(q, 8, -1.0, 3.0, coder="jpeg", quality=85)
    got, meta = codec.decode(frame)
    assert meta.mode == "jpeg" and meta.bits == 8 and meta.shape == shape and (meta.lo, meta.hi) == (-1.0, 3.0)
    assert got.dtype == np.uint8 and got.shape == shape
    np.testing.assert_array_equal(got, codec_jpeg.round_trip(q, 85))
    payload = frame[-meta.payload_bytes:]
    with Image.open(io.BytesIO(payload)) as picture:  # the payload is a plain JPEG file
        layout = codec_jpeg.image_layout(shape)
        channels = shape[1] if layout == "nchw" else shape[3]
        assert picture.format == "JPEG" and picture.mode == ("L" if channels == 1 else "RGB")
        assert picture.size[1] == shape[0] * (shape[2] if layout == "nchw" else shape[1])
    assert np.abs(got.astype(int) - q).mean() < 3.0  # smooth content: small error at quality 85


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 3), st.sampled_from([1, 3]), st.integers(1, 20), st.integers(1, 20), st.integers(1, 100),
       st.booleans())
def test_any_image_shape_round_trips_to_its_shape(n, c, h, w, quality, last) -> None:
    shape = (n, h, w, c) if last and h not in (1, 3) else (n, c, h, w)
    q = np.random.default_rng(n * h * w).integers(0, 256, shape, dtype=np.uint8)
    got, meta = codec.decode(codec.encode(q, 8, 0.0, 1.0, coder="jpeg", quality=quality))
    assert got.shape == shape and meta.mode == "jpeg"
    np.testing.assert_array_equal(got, codec_jpeg.decode(codec_jpeg.encode(q, quality), shape))


def test_jpeg_needs_an_image_shape_8_bits_and_a_tensor_range() -> None:
    with pytest.raises(ValueError, match="image-shaped"):
        codec.encode(np.zeros((1, 4, 8, 8), np.uint8), 8, 0.0, 1.0, coder="jpeg")
    with pytest.raises(ValueError, match="bits 8"):
        codec.encode(np.zeros((1, 3, 8, 8), np.uint8), 4, 0.0, 1.0, coder="jpeg")
    with pytest.raises(ValueError, match="bits 8"):
        codec.encode(np.zeros((1, 3, 8, 8), np.uint8), 8, np.zeros(3), np.ones(3), per_channel_axis=1, coder="jpeg")
    with pytest.raises(ValueError, match="1..100"):
        codec.encode(np.zeros((1, 3, 8, 8), np.uint8), 8, 0.0, 1.0, coder="jpeg", quality=0)


def _frame_with(shape, payload: bytes, bits: int = 8) -> bytes:
    """A jpeg-mode frame of ``shape`` around any payload (what a hostile sender can make)."""
    head = (bits, "float32", tuple(shape), codec.PER_TENSOR, struct.pack("<2f", 0.0, 1.0))
    return codec._frame(head, codec.MODE_JPEG, 0, 0, codec.FILTER_NONE, b"", b"", payload)


def test_hostile_jpeg_frames_raise_codec_errors() -> None:
    good = codec_jpeg.encode(np.zeros((1, 3, 8, 8), np.uint8), 90)
    cases = {
        "other size": _frame_with((1, 3, 8, 16), good),
        "other mode": _frame_with((1, 1, 8, 8), good),
        "not image-shaped": _frame_with((1, 5, 8, 8), good),
        "truncated picture": _frame_with((1, 3, 8, 8), good[: len(good) // 2]),
        "garbage": _frame_with((1, 3, 8, 8), b"\xff\xd8garbage" * 20),
        "png inside": _frame_with((1, 3, 8, 8), _png(np.zeros((8, 8, 3), np.uint8))),
        "empty": _frame_with((1, 3, 8, 8), b""),
    }
    for name, frame in cases.items():
        with pytest.raises(codec.CodecError):
            codec.decode(frame)
            pytest.fail(name)
    with pytest.raises(codec.BadHeader, match="jpeg mode needs bits 8"):
        codec.decode(_frame_with((1, 3, 8, 8), good, bits=4))


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_huge_declared_picture_is_refused_before_decoding() -> None:
    tiny = codec_jpeg.encode(np.zeros((1, 1, 8, 8), np.uint8), 90)
    with pytest.raises(codec.ShapeOverflow):
        codec.decode(_frame_with((1, 3, 60000, 60000), tiny))


# ----------------------------------------------------------------------------- calibration and plans


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    model = zoo.build("resnet_blocks")
    images = smooth_images(24, seed=1)
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, input=images[:, 0])
    return model, path


def test_image_shaped_cuts_get_jpeg_widths_and_others_do_not(calib) -> None:
    model, path = calib
    analysis = splitc.analyse(model)
    options = joint.EncodingOptions("auto", "huffman", 0.01, path)
    bits = options.bit_choices()
    widths = options.widths(analysis.graph, ("input",), bits)
    assert widths[len(bits):] == [jpeg_width(q) for q in joint.JPEG_QUALITIES]
    assert options.widths(analysis.graph, ("block2/relu",), bits) == bits  # 32 channels: not an image
    for off in (joint.EncodingOptions("auto", "huffman", 0.01, path, jpeg=False),
                joint.EncodingOptions(8, "huffman", 0.01, path),
                joint.EncodingOptions("auto", "none", 0.01, path),
                joint.EncodingOptions("auto", "huffman", 0.01, None)):
        assert not any(isinstance(w, str) for w in off.widths(analysis.graph, ("input",), off.bit_choices()))


def test_calibration_measures_jpeg_sizes_and_drops_exactly(calib) -> None:
    model, path = calib
    analysis = splitc.analyse(model)
    options = joint.EncodingOptions("auto", "huffman", 0.0, path, metric="rel-l2")  # nothing lossy passes
    measured, table = joint.measured_options(analysis, options, [("input",)], prune=False)
    jpeg = {o.jpeg_quality: o for o in measured if o.jpeg_quality}
    images = [x[None] for x in np.load(path)["input"]]
    cloud = analysis.split(["input"]).cloud_model
    session = calibrate._session(cloud)
    reference = [session.run(None, {"input": x})[0] for x in images]
    for quality, option in jpeg.items():
        enc = Encoding("input", 8, None, "jpeg", quality)
        frames = []
        for x in images:
            q, lo, hi = calibrate.simulate(x, enc)
            frames.append(codec.encode(q, 8, float(lo), float(hi), coder="jpeg", quality=quality))
        assert option.sent_bytes == pytest.approx(np.mean([len(f) for f in frames]), rel=1e-12)
        outputs = [session.run(None, {"input": round_trip(x, enc)})[0] for x in images]
        errors = [np.linalg.norm(o - r) / (np.linalg.norm(r) + 1e-12) for o, r in zip(outputs, reference)]
        assert option.drop == pytest.approx(np.mean(errors), rel=1e-6, abs=1e-9)
    assert set(jpeg) == set(joint.JPEG_QUALITIES), "with no width passing, every JPEG width is measured"
    sizes = [jpeg[q].sent_bytes for q in sorted(jpeg)]
    assert sizes == sorted(sizes)


def _jpeg_plan(model, path, out, quality: int = 90):
    analysis = splitc.analyse(model)
    options = joint.EncodingOptions("auto", "huffman", 0.01, path)
    part = forced_partition(analysis.problem, ["input"])
    option = Option(("input",), 8, part.edge_ms, part.cloud_ms, 1000.0, part.down_bytes, 0.0, part.kind,
                    jpeg_quality=quality)
    choice = joint.make_choice(analysis, options, option, [option], None)
    analysis.split(choice=choice).save(out)
    return out


def test_a_jpeg_plan_over_http_matches_the_pipeline_and_the_calibration(calib, tmp_path) -> None:
    model, path = calib
    out = _jpeg_plan(model, path, tmp_path / "out")
    plan = json.loads((out / "plan.json").read_text())
    assert plan["cut"][0]["codec"] == {"name": "jpeg", "quality": 90} and plan["cut"][0]["bits"] == 8
    pipeline = Pipeline(out)
    cloud = splitc.analyse(model).split(["input"]).cloud_model
    session = calibrate._session(cloud)
    images = smooth_images(4, seed=7)
    with ServerThread(out) as running, EdgeClient(out, running.url) as client:
        for image in images:
            result = client.infer({"input": image})
            np.testing.assert_array_equal(result.outputs["logits"], pipeline.run({"input": image})["logits"])
            simulated = session.run(None, {"input": round_trip(image, Encoding("input", 8, None, "jpeg", 90))})[0]
            np.testing.assert_allclose(result.outputs["logits"], simulated, rtol=1e-5, atol=1e-5)
            assert result.bytes_up < image.size  # under one byte per value
