"""The splitc command line, end to end in a subprocess, and its error paths."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from splitc.testing import zoo
from tests.conftest import random_feeds, run_model


def splitc_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "160"}
    return subprocess.run([sys.executable, "-m", "splitc.cli", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=300)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "resnet_blocks.onnx"
    onnx.save(zoo.build("resnet_blocks"), path)
    return path


def test_documented_command_end_to_end(model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = splitc_cli(str(model_path), "--target", "jetson-tx2", "--bw", "5Mbps", "--bits", "32", "-o", str(out))
    assert result.returncode == 0, result.stderr
    plan = json.loads((out / "plan.json").read_text())
    assert plan["link"]["bandwidth_bps"] == pytest.approx(5e6)
    assert plan["targets"]["edge"] == "jetson-tx2"
    assert "Predicted latency" in result.stdout
    feeds = random_feeds(zoo.build("resnet_blocks"))
    np.save(tmp_path / "x.npy", feeds["input"])
    ran = splitc_cli("run", str(out), "--input", str(tmp_path / "x.npy"), "--save", str(tmp_path / "y.npz"))
    assert ran.returncode == 0, ran.stderr
    expected = run_model(model_path, feeds)["logits"]
    np.testing.assert_allclose(np.load(tmp_path / "y.npz")["logits"], expected, rtol=1e-5, atol=1e-6)


def test_compile_subcommand_json_and_forced_cut(model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = splitc_cli("compile", str(model_path), "--cut", "block2/relu", "--rtt", "5ms", "--bits", "32", "--json",
                        "-o", str(out))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["cut"] == ["block2/relu"] and summary["kind"] == "split"
    assert sorted(p.name for p in out.iterdir()) == [".splitc-output.json", "cloud.onnx", "edge.onnx", "plan.json"]


def test_input_shape_flag(tmp_path: Path) -> None:
    model = zoo.build("chain_cnn")
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    path = tmp_path / "dyn.onnx"
    onnx.save(model, path)
    result = splitc_cli(str(path), "--input-shape", "input=2x3x32x32", "--json", "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert plan["model"]["inputs"][0]["shape"] == [2, 3, 32, 32]


def test_inspect_and_targets(model_path: Path) -> None:
    inspected = splitc_cli("inspect", str(model_path), "--json")
    assert inspected.returncode == 0, inspected.stderr
    info = json.loads(inspected.stdout)
    assert info["data_nodes"] == 29
    assert [c["tensor"] for c in info["cut_vertices"]][:3] == ["stem/conv", "stem/bn", "stem/relu"]
    assert info["cut_vertices"][0]["bytes"] == 16 * 32 * 32 * 4
    targets = splitc_cli("targets", "--json")
    names = {t["name"] for t in json.loads(targets.stdout)}
    assert {"jetson-tx2", "jetson-nano", "jetson-orin-nano", "raspberry-pi-4", "tegra-k1", "snapdragon-835",
            "gtx-1080ti", "t4", "a100", "h100"} <= names
    assert "cut vertices" in splitc_cli("inspect", str(model_path)).stdout


def test_help() -> None:
    result = splitc_cli("--help")
    assert result.returncode == 0
    for command in ("compile", "inspect", "targets", "run"):
        assert command in result.stdout
    assert "--bw" in splitc_cli("compile", "--help").stdout


def _bad_inputs(tmp_path: Path, model_path: Path) -> dict[str, tuple[list[str], str]]:
    text = tmp_path / "text.onnx"
    text.write_text("hello")
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model_path.read_bytes()[:5000])
    ext = tmp_path / "ext.onnx"
    onnx.save_model(zoo.build("resnet_blocks"), ext, save_as_external_data=True, location="ext.data", size_threshold=0)
    (tmp_path / "ext.data").unlink()
    dynamic = tmp_path / "dynamic.onnx"
    model = zoo.build("chain_cnn")
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"
    onnx.save(model, dynamic)
    m = str(model_path)
    return {
        "not onnx": ([str(text)], "not"),
        "truncated": ([str(truncated)], "truncated.onnx"),
        "missing external data": ([str(ext)], "missing external data file 'ext.data'"),
        "missing file": ([str(tmp_path / "absent.onnx")], "no such file"),
        "unknown target": ([m, "--target", "pentium"], "unknown target 'pentium'"),
        "unknown cloud": ([m, "--cloud", "tpu9"], "unknown target 'tpu9'"),
        "bad bandwidth": ([m, "--bw", "5 megabits"], "bad bandwidth '5 megabits'"),
        "bad rtt": ([m, "--rtt", "soon"], "bad time 'soon'"),
        "bad shape string": ([m, "--input-shape", "input=1x3xfoo"], "bad shape"),
        "dynamic dimension": ([str(dynamic)], "dynamic dimension 2 (height)"),
        "bad cut": ([m, "--cut", "block3/a/relu"], "add it to the cut"),
    }


def test_bad_inputs_exit_2_with_one_line_and_no_output(model_path: Path, tmp_path: Path) -> None:
    for label, (args, message) in _bad_inputs(tmp_path, model_path).items():
        out = tmp_path / f"out-{label.replace(' ', '-')}"
        result = splitc_cli(*args, "-o", str(out))
        assert result.returncode == 2, (label, result.stderr)
        assert message in result.stderr, (label, result.stderr)
        assert "Traceback" not in result.stderr, label
        assert len(result.stderr.strip().splitlines()) == 1, (label, result.stderr)
        assert not out.exists(), label
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_run_errors(model_path: Path, tmp_path: Path) -> None:
    result = splitc_cli("run", str(tmp_path), "--input", "x.npy")
    assert result.returncode == 2 and "no plan.json" in result.stderr
    out = tmp_path / "out"
    assert splitc_cli(str(model_path), "-o", str(out), "--json").returncode == 0
    np.save(tmp_path / "bad.npy", np.zeros((1, 3, 8, 8), np.float32))
    result = splitc_cli("run", str(out), "--input", str(tmp_path / "bad.npy"))
    assert result.returncode == 2 and "has shape [1, 3, 8, 8], expected [1, 3, 32, 32]" in result.stderr
