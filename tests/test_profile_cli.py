"""``splitc profile`` and ``--target profile.json`` through the command line, bad profiles included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from splitc.testing import zoo
from splitc.profiling.command import write_profile
from splitc.profiling.measure import profile_model


def splitc_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "splitc.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    paths = {}
    for name in ("chain_cnn", "opset7_cnn"):
        paths[name] = folder / f"{name}.onnx"
        onnx.save(zoo.build(name), paths[name])
    return paths


@pytest.fixture(scope="module")
def profile(models, tmp_path_factory) -> dict:
    return profile_model(models["opset7_cnn"], runs=3, warmup=1, threads=1, min_seconds=0.0)


def test_profile_command_then_compile(models, tmp_path):
    out = tmp_path / "dev.json"
    made = splitc_cli("profile", str(models["chain_cnn"]), "-o", str(out), "--runs", "3", "--warmup", "1",
                      "--threads", "1", "--min-time", "0", "--json")
    assert made.returncode == 0, made.stderr
    summary = json.loads(made.stdout)
    assert summary["nodes"] == 12 and summary["cut_vertices"] >= 10
    document = json.loads(out.read_text())
    assert document["schema"] == "splitc.profile/1" and document["settings"]["threads"] == 1
    compiled = splitc_cli(str(models["chain_cnn"]), "--target", str(out), "--cloud", "t4",
                          "-o", str(tmp_path / "split"), "--json")
    assert compiled.returncode == 0, compiled.stderr
    plan = json.loads((tmp_path / "split" / "plan.json").read_text())
    assert plan["edge"]["cost_model"]["kind"] == "profile" and plan["targets"]["edge"] == "dev"
    assert "has no times" not in compiled.stderr


def _write(tmp_path: Path, name: str, content) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _bad_profiles(profile: dict, tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Name -> (profile file, a phrase its error must contain)."""
    foreign_schema = {**profile, "schema": "splitc.profile/9"}
    negative = json.loads(json.dumps(profile))
    negative["nodes"]["stage1/conv"]["median_ms"] = -1.0
    no_nodes = {k: v for k, v in profile.items() if k != "nodes"}
    other_input = json.loads(json.dumps(profile))
    other_input["model"]["inputs"][0]["shape"] = [1, 3, 64, 64]
    return {
        "not json": (_write(tmp_path, "garbage.json", "{not json"), "not valid JSON"),
        "foreign json": (_write(tmp_path, "foreign.json", {"layers": [1, 2]}), "not a splitc profile"),
        "foreign schema": (_write(tmp_path, "future.json", foreign_schema), "is not supported"),
        "negative time": (_write(tmp_path, "negative.json", negative), "malformed"),
        "missing field": (_write(tmp_path, "nonodes.json", no_nodes), "malformed"),
        "other input shape": (_write(tmp_path, "shape.json", other_input), "measured with input"),
        "no such file": (tmp_path / "absent.json", "cannot be read"),
    }


def test_bad_profiles_are_one_line_errors(models, profile, tmp_path):
    for label, (path, phrase) in _bad_profiles(profile, tmp_path).items():
        result = splitc_cli(str(models["opset7_cnn"]), "--target", str(path), "-o", str(tmp_path / "out"))
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (label, result.stderr)
        assert len(lines) == 1 and "Traceback" not in result.stderr, (label, result.stderr)
        assert phrase in lines[0] and "profile" in lines[0], (label, lines[0])


def test_profile_of_another_model_is_refused(models, profile, tmp_path):
    path = tmp_path / "opset7.json"
    write_profile(profile, path)
    result = splitc_cli(str(models["chain_cnn"]), "--cloud", str(path), "-o", str(tmp_path / "out"))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr
    assert "measured on another model" in lines[0] and "splitc profile" in lines[0]


def test_profile_missing_nodes_warns(models, profile, tmp_path):
    partial = json.loads(json.dumps(profile))
    del partial["nodes"]["stage2/add"]
    path = _write(tmp_path, "partial.json", partial)
    result = splitc_cli(str(models["opset7_cnn"]), "--target", str(path), "-o", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:") and "profile" in line]
    assert len(warnings) == 1 and "stage2/add" in warnings[0] and "roofline" in warnings[0]
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert plan["edge"]["cost_model"]["fallback_nodes"] == ["stage2/add"]


def test_profile_command_bad_arguments(models, tmp_path):
    result = splitc_cli("profile", str(models["chain_cnn"]), "-o", str(tmp_path / "dev.txt"), "--runs", "1")
    assert result.returncode == 2 and "must end in .json" in result.stderr
    result = splitc_cli("profile", str(tmp_path / "absent.onnx"), "-o", str(tmp_path / "dev.json"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
