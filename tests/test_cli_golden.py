"""Golden CLI output at 80 columns: nothing cut, nothing wider than the terminal.

Regenerate after an intended change with ``SPLITC_UPDATE_GOLDEN=1 pytest tests/test_cli_golden.py``
and review the diff.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).parent / "golden"
DIGITS = ROOT / "examples" / "digits" / "digits_cnn.onnx"
CALIB = ROOT / "examples" / "digits" / "calib.npz"
MID = "/features/features.2/Relu_output_0"


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "80", "LINES": "50", "TERM": "dumb", "NO_COLOR": "1"}
    return subprocess.run([sys.executable, "-m", "splitc.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


def _normalise(text: str) -> str:
    text = re.sub(r"done in [0-9.]+ m?s \(partitioning [0-9]+ ms\)", "done in <time> (partitioning <ms>)", text)
    text = re.sub(r"done in [0-9.]+ m?s", "done in <time>", text)
    # plan.json and calibration.json grow with every new manifest field: their sizes are not the point here
    text = re.sub(r"(plan\.json|calibration\.json|Wrote out/) +\(?[0-9.]+ [KM]?B\)?", r"\1 <size>", text)
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def _check(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("SPLITC_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text()


def test_compile_output_at_80_columns(tmp_path: Path) -> None:
    result = _cli(str(DIGITS), "--target", "raspberry-pi-4", "--cloud", "t4", "--bw", "300KBps", "--rtt", "20ms",
                  "--cut", MID, "--calib", str(CALIB), "-o", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = _normalise(result.stdout)
    assert max(len(line) for line in out.splitlines()) <= 80
    assert "…" not in out  # nothing is cut with an ellipsis
    assert MID in out  # the cut tensor's name whole, on one line, to copy
    assert "link 300KBps / 20ms RTT" in out  # units as typed
    assert "Chosen split: edge + cloud" in out and "cloud-only (raw float32)" in out
    assert re.search(r"0\.\d\d%\s+0\.\d\d%", out)  # measured drop and certified bound side by side
    assert "pip install splitc" in out and "splitc serve out" in out
    _check("compile_digits_80.txt", out)


def test_compile_without_calibration_says_not_measured(tmp_path: Path) -> None:
    result = _cli(str(DIGITS), "--target", "raspberry-pi-4", "--bw", "5Mbps", "--cut", MID, "-o", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "not measured" in result.stdout
    assert "%" not in result.stdout.split("Candidates")[1].split("Predicted")[0]  # no number for the drop
    assert "accuracy bound was NOT checked" in result.stderr


def test_targets_at_80_columns_names_whole(tmp_path: Path) -> None:
    result = _cli("targets", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    for name in ("jetson-tx2", "jetson-orin-nano", "raspberry-pi-4", "snapdragon-835", "gtx-1080ti"):
        assert re.search(rf"^ ?{re.escape(name)} ", result.stdout, re.M), name
    assert "…" not in result.stdout
    verbose = _cli("targets", "--verbose", cwd=tmp_path)
    assert "NVIDIA Jetson TX2" in verbose.stdout and "…" not in verbose.stdout


def test_version_flag(tmp_path: Path) -> None:
    import splitc

    for flag in ("--version", "version"):
        result = _cli(flag, cwd=tmp_path)
        assert result.returncode == 0 and result.stdout.strip() == f"splitc {splitc.__version__}"


def test_inspect_counts_constant_weights_and_limits_rows(tmp_path: Path) -> None:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 64])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 64])
    nodes, prev = [], "x"
    for i in range(30):
        weight = numpy_helper.from_array(np.ones((64, 64), np.float32), f"w{i}")
        nodes.append(helper.make_node("Constant", [], [f"w{i}"], value=weight))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}" if i < 29 else "y"]))
        prev = f"h{i}"
    model = helper.make_model(helper.make_graph(nodes, "constants", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, tmp_path / "m.onnx")
    result = _cli("inspect", "m.onnx", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "weights 491.5 KB" in result.stdout  # 30 x 64 x 64 float32 in Constant nodes
    assert "more cut vertices (--limit 0 shows all" in result.stdout
    everything = _cli("inspect", "m.onnx", "--limit", "0", cwd=tmp_path)
    assert "more cut vertices" not in everything.stdout and " h28 " in everything.stdout


@pytest.mark.parametrize("folder_flag", [None, "none"])
def test_image_folder_needs_preprocess(tmp_path: Path, folder_flag) -> None:
    import numpy as np
    from PIL import Image

    images = tmp_path / "imgs" / "3"
    images.mkdir(parents=True)
    for i in range(3):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(images / f"{i}.png")
    args = [str(DIGITS), "--calib", str(tmp_path / "imgs"), "--cut", MID, "-o", "out"]
    if folder_flag:
        args += ["--preprocess", folder_flag]
    result = _cli(*args, cwd=tmp_path)
    if folder_flag is None:
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert "--preprocess" in result.stderr and "--preprocess none" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    else:
        assert result.returncode == 0, result.stderr
        assert "cannot certify" in result.stderr and "samples could" in result.stderr


def test_preprocess_is_carried_into_the_plan_and_applied(tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    import splitc
    from splitc.runtime import EdgeClient, Pipeline

    split = splitc.compile(DIGITS, target="raspberry-pi-4", bits=32, cut=[MID], preprocess="mean=0.5,std=0.25")
    assert split.plan["preprocess"] == {"mean": [0.5], "std": [0.25], "layout": "nchw", "scale": 255.0}
    out = split.save(tmp_path / "out")
    pixels = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 3)
    Image.fromarray(pixels).save(tmp_path / "x.png")
    expected = ((pixels.astype(np.float32) / 255 - 0.5) / 0.25)[None, None]
    want = Pipeline(out).run({"image": expected})["logits"]
    np.testing.assert_allclose(Pipeline(out).run({"image": str(tmp_path / "x.png")})["logits"], want, rtol=1e-5)
    with EdgeClient(out, None, fallback="local") as client:
        np.testing.assert_allclose(client.run({"image": tmp_path / "x.png"})["logits"], want, rtol=1e-5)
