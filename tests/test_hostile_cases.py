"""Regression tests of hostile inputs found by an adversarial pass over the CLI, codec, server and client.

CLI cases run ``splitc.cli.main`` in this process and check the exit code and
that stderr is one line without a traceback; codec, server and client cases
check the error class or the HTTP status.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import splitc
from splitc.cli import main
from splitc.errors import SplitcError
from splitc.wire import codec, request
from splitc.runtime.cloud_service import CloudService, Rejected
from splitc.runtime.pipeline import PlanError
from tests.stitching import CALIB, DIGITS, compile_quantized

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return compile_quantized(tmp_path_factory.mktemp("hostile") / "out")


def _cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return code, err


def _one_line_error(code: int, err: str, *words: str) -> None:
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 or all(not line.startswith(" ") for line in lines[:1]), err
    text = " ".join(err.split())
    for word in words:
        assert word in text, err


# ----------------------------------------------------------------------------- 1. user files are never deleted


def test_output_directory_with_user_files_is_refused(tmp_path, capsys) -> None:
    user = tmp_path / "u"
    user.mkdir()
    (user / "plan.json").write_text('{"trip":"Lisbon"}')
    (user / "thesis.txt").write_text("x")
    code, err = _cli(capsys, DIGITS, "-o", user)
    _one_line_error(code, err, "not a splitc output")
    assert (user / "thesis.txt").read_text() == "x" and json.loads((user / "plan.json").read_text())["trip"]


def test_a_real_output_is_replaced_but_not_with_a_user_file_inside(tmp_path, capsys) -> None:
    target = tmp_path / "o"
    assert _cli(capsys, DIGITS, "-o", target)[0] == 0
    marker = json.loads((target / ".splitc-output.json").read_text())
    assert marker["schema"] == "splitc.output/1" and "plan.json" in marker["files"]
    assert _cli(capsys, DIGITS, "-o", target)[0] == 0  # an earlier splitc output: replaced
    (target / "notes.txt").write_text("mine")
    code, err = _cli(capsys, DIGITS, "-o", target)
    _one_line_error(code, err, "notes.txt")
    assert (target / "notes.txt").read_text() == "mine" and (target / "plan.json").is_file()


def test_a_forged_or_corrupt_marker_does_not_allow_replacement(tmp_path) -> None:
    from splitc.backends.output import MARKER, write_directory

    def fill(tmp: Path) -> None:
        (tmp / "plan.json").write_text("{}")

    for marker in ("not json", json.dumps({"schema": "other/1", "files": ["a.txt"]}),
                   json.dumps({"schema": "splitc.output/1", "files": "a.txt"})):
        target = tmp_path / f"d{len(marker)}"
        target.mkdir()
        (target / "a.txt").write_text("keep")
        (target / MARKER).write_text(marker)
        with pytest.raises(SplitcError):
            write_directory(target, fill)
        assert (target / "a.txt").read_text() == "keep"


# ----------------------------------------------------------------------------- 2. non-finite figures


@pytest.mark.parametrize("flag,value", [("--bw", "1e400Mbps"), ("--rtt", "1e400s"), ("--bw", "1e400KBps..5Mbps")])
def test_non_finite_figures_are_refused(tmp_path, capsys, flag, value) -> None:
    code, err = _cli(capsys, DIGITS, flag, value, "-o", tmp_path / "o")
    _one_line_error(code, err, "finite")
    assert not (tmp_path / "o").exists()


def test_api_refuses_non_finite_numbers() -> None:
    for kwargs in ({"bandwidth": float("inf")}, {"bandwidth": float("nan")}, {"rtt": float("inf")}):
        with pytest.raises(SplitcError):
            splitc.compile(DIGITS, **kwargs)


# ----------------------------------------------------------------------------- 3. range widths and tiny ranges


def test_non_finite_range_width_is_refused_on_encode_and_decode(out) -> None:
    with pytest.raises(ValueError, match="not finite"):
        codec.encode(np.zeros((2, 3), np.uint8), 8, -3e38, 3e38)
    with pytest.raises(ValueError, match="not finite"):
        codec.quantize(np.array([-3e38, 3e38], np.float32), 8)
    frame = bytearray(codec.encode(np.zeros((2, 3), np.uint8), 8, -1.0, 1.0, coder="none"))
    struct.pack_into("<2f", frame, 20 + 8, -3e38, 3e38)
    with pytest.raises(codec.BadHeader, match="not finite"):
        codec.decode(bytes(frame))
    # over HTTP's service: 400, not 200 with NaN logits
    service = CloudService(out)
    plan = json.loads((out / "plan.json").read_text())
    shape = plan["cut"][0]["shape"]
    good = bytearray(codec.encode(np.zeros(shape, np.uint8), 4, 0.0, 1.0))
    struct.pack_into("<2f", good, 20 + 4 * len(shape), -3e38, 3e38)
    body = request.encode_request("default", [bytes(good)])
    with pytest.raises(Rejected) as caught:
        service.infer(body)
    assert caught.value.status == 400


def test_tiny_ranges_are_quantized_as_the_document_says() -> None:
    doc = (ROOT / "docs" / "wire-format.md").read_text()
    assert "a range below 1e-30 counts as constant" not in doc
    assert "only when `hi == lo`" in doc and "no fused multiply-add" in doc
    q, lo, hi = codec.quantize(np.array([0.0, 1e-31], np.float32), 8)
    assert q.tolist() == [0, 26]  # floor(1e-31 * 255 / 1e-30 + 0.5): the divisor is max(hi - lo, 1e-30)
    x = codec.dequantize(q, 8, lo, hi)
    assert x[1] == np.float32(26) * ((np.float32(1e-31) - np.float32(0)) / np.float32(255))
    q, _, _ = codec.quantize(np.full(4, 3.5, np.float32), 8)
    assert not q.any()  # hi == lo: constant, all zeros


# ----------------------------------------------------------------------------- 5. per-channel frame, per-tensor plan


def test_per_channel_frame_to_a_per_tensor_plan_is_a_400(out) -> None:
    service = CloudService(out)
    shape = json.loads((out / "plan.json").read_text())["cut"][0]["shape"]
    channels = shape[1]
    frame = codec.encode(np.zeros(shape, np.uint8), 4, np.zeros(channels), np.ones(channels), per_channel_axis=1)
    with pytest.raises(Rejected) as caught:
        service.infer(request.encode_request("default", [frame]))
    assert caught.value.status == 400 and "per-channel" in str(caught.value)


# ----------------------------------------------------------------------------- 7. corrupt codebook files


def test_corrupt_codebook_is_a_one_line_error(out, tmp_path, capsys) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "codebooks" / "0.bin").write_bytes(b"<html>not a codebook</html>")
    with pytest.raises(PlanError, match="0.bin"):
        CloudService(broken)
    np.save(tmp_path / "x.npy", np.zeros((1, 1, 8, 8), np.float32))
    code, err = _cli(capsys, "run", broken, "--input", tmp_path / "x.npy")
    _one_line_error(code, err, "0.bin", "codebook")
    code, err = _cli(capsys, "serve", broken, "--port", "0")
    _one_line_error(code, err, "0.bin", "codebook")


# ----------------------------------------------------------------------------- 8. read-only parent


def test_read_only_parent_is_a_one_line_error(tmp_path, capsys, monkeypatch) -> None:
    parent = tmp_path / "ro"
    parent.mkdir()
    if os.geteuid() == 0:  # root writes anywhere: refuse the way a read-only parent does
        def refuse(*args, **kwargs):
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    else:
        parent.chmod(0o500)
    try:
        code, err = _cli(capsys, DIGITS, "-o", parent / "out")
    finally:
        parent.chmod(0o700)
    _one_line_error(code, err, "Permission denied", "cannot write")


# ----------------------------------------------------------------------------- 9. NaN in calibration data


def test_nan_in_calibration_names_input_and_sample(tmp_path, capsys) -> None:
    with np.load(CALIB) as data:
        arrays = {k: data[k] for k in data.files}
    name = next(k for k in arrays if k != "labels")
    arrays[name] = arrays[name].astype(np.float32)
    arrays[name][5, 0, 3, 3] = np.nan
    np.savez(tmp_path / "nan.npz", **arrays)
    code, err = _cli(capsys, DIGITS, "--calib", tmp_path / "nan.npz", "-o", tmp_path / "o")
    _one_line_error(code, err, "sample 5", repr(name), "NaN")


# ----------------------------------------------------------------------------- 10. numba without a cache directory


def test_numba_without_a_writable_cache_falls_back_with_one_warning(tmp_path) -> None:
    script = (
        "import warnings, numba.core.caching as c\n"
        "c.CacheImpl._locator_classes = []\n"  # what numba sees with no writable cache directory anywhere
        "import numpy as np\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    from splitc.wire import codec\n"
        "    frame = codec.encode_tensor(np.arange(12.0).reshape(3, 4), 4)\n"
        "    assert (codec.decode(frame)[0] == codec.quantize(np.arange(12.0).reshape(3, 4), 4)[0]).all()\n"
        "print(len([x for x in w if 'cannot cache' in str(x.message)]), codec.BACKEND)\n"
    )
    env = {**os.environ, "HOME": str(tmp_path / "nohome")}
    ran = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=240, env=env,
                         cwd=ROOT)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["1", "numba"]


# ----------------------------------------------------------------------------- 11. zero-size dim beside overflowing dims


def test_zero_size_dimension_beside_overflowing_dimensions() -> None:
    frame = bytes.fromhex("53504c54010104002c00000003ff00000000000000000000ffffffffffffffff000000000000803f00000000")
    assert len(frame) == 44
    with pytest.raises(codec.ShapeOverflow):
        codec.decode(frame)
    with pytest.raises(codec.ShapeOverflow):
        codec.decode(frame, max_elements=codec.MAX_ELEMENTS)
    with pytest.raises(ValueError):
        codec.encode(np.zeros((0, 2**32 - 1, 2**32 - 1), np.uint8), 8, 0.0, 1.0)
    q, meta = codec.decode(codec.encode(np.zeros((0, 5), np.uint8), 8, 0.0, 1.0))  # a plain empty tensor is fine
    assert q.shape == (0, 5) and meta.mode == "constant"


# ----------------------------------------------------------------------------- 13. amplification


def test_small_frames_cannot_declare_huge_tensors() -> None:
    head = codec._frame((8, "float32", (240 * 1024, 1024), 0xFF, struct.pack("<2f", 0, 1)), 1, 0, 0, 0, b"", b"", b"")
    assert len(head) == 40
    with pytest.raises(codec.ShapeOverflow):
        codec.decode(head)
    q, _ = codec.decode(head, max_elements=240 * 1024 * 1024 + 1)  # a caller who expects the tensor may raise it
    assert q.shape == (240 * 1024, 1024)
    del q
    sparse = np.zeros(2**25, np.uint8)
    sparse[12345] = 1
    frame = codec.encode(sparse, 2, 0.0, 1.0, chunk_log2=15)
    assert len(frame) * codec.EXPANSION_RATIO < sparse.size
    with pytest.raises(codec.ShapeOverflow):
        codec.decode(frame)
    assert (codec.decode(frame, max_elements=sparse.size)[0] == sparse).all()
    small = codec.encode(np.ones((1000,), np.uint8), 2, 0.0, 1.0)
    assert codec.decode(small)[0].sum() == 1000


def test_jpeg_frames_have_splitc_s_own_pixel_limit() -> None:
    from splitc.wire import jpeg as codec_jpeg

    jpeg = codec.encode(np.full((1, 1, 16, 16), 128, np.uint8), 8, 0.0, 1.0, coder="jpeg", quality=50)
    forged = bytearray(jpeg)
    struct.pack_into("<4I", forged, 20, 1, 1, 16384, 16384)
    with pytest.raises(codec.ShapeOverflow, match="pixels"):
        codec.decode(bytes(forged), max_elements=codec.MAX_ELEMENTS)
    assert 16384 * 16384 > codec_jpeg.MAX_PIXELS
    q, meta = codec.decode(jpeg)
    assert meta.mode == "jpeg" and q.shape == (1, 1, 16, 16)
