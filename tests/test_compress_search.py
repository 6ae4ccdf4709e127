"""The joint (cut, width, edge variant) search: exact against brute force, bound-safe, emitted exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import splitc
from splitc.api import analyse
from splitc.compress.names import FAMILIES, parse_compress
from splitc.compress.search import branch_and_bound, exhaustive, prepare
from splitc.errors import SplitcError
from splitc.options import CompileOptions
from splitc.partition.select import within_bound
from splitc.runtime import EdgeClient, Pipeline
from splitc.runtime.server import ServerThread
from tests.conftest import run_model

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "examples" / "digits" / "digits_cnn.onnx"
CUTS = [(), ("/features/features.2/Relu_output_0",), ("/features/features.6/MaxPool_output_0",),
        ("/features/features.9/MaxPool_output_0",)]
MAX_DROP = 0.1


@pytest.fixture(scope="module")
def small_calib(tmp_path_factory) -> Path:
    """80 labelled digits: 40 to fit rewrites on, 40 to certify them."""
    data = np.load(ROOT / "examples" / "digits" / "calib.npz")
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, image=data["image"][:80], labels=data["labels"][:80])
    return path


@pytest.fixture(scope="module")
def space(small_calib: Path):
    options = CompileOptions(target="raspberry-pi-4", cloud="t4", rtt=0, calib=small_calib,
                             compress=("prune", "bottleneck"), max_drop=MAX_DROP)
    analysis = analyse(DIGITS, options.target, options.cloud, options.bandwidth, options.rtt)
    return prepare(analysis, options, cuts=CUTS)


@pytest.mark.parametrize("bandwidth", [1e5, 1e7, 1e8])
def test_branch_and_bound_is_the_brute_force_optimum_with_fewer_evaluations(space, bandwidth: float) -> None:
    brute = exhaustive(space.candidates, space.evaluator, bandwidth, 0.0, MAX_DROP, space.resolver)
    every = sum(len(space.evaluator.widths(c)) for c in space.resolve_all())
    assert len(brute.measured) == every  # brute force measured every (cut, variant, width)
    found = branch_and_bound(space.candidates, space.evaluator, bandwidth, 0.0, MAX_DROP, space.resolver)
    assert found.total_ms() == pytest.approx(brute.total_ms(), rel=1e-12)
    assert (found.best.candidate.key, found.best.width) == (brute.best.candidate.key, brute.best.width)
    assert found.evaluations < brute.evaluations
    assert within_bound(found.best.option.drop, found.best.option.drop_se, MAX_DROP)


def test_a_variant_over_the_bound_is_never_chosen(space) -> None:
    bandwidth = 1e8
    brute = exhaustive(space.candidates, space.evaluator, bandwidth, 0.0, MAX_DROP, space.resolver)
    faster = [m for m in brute.measured if m.option.total_ms(bandwidth, 0.0) < brute.total_ms()]
    assert faster and all(m.option.bound > MAX_DROP for m in faster)  # the faster ones all break the bound
    assert any(not m.candidate.spec.is_base for m in faster)
    for max_drop in (0.0, 0.05, MAX_DROP, 0.3):
        found = branch_and_bound(space.candidates, space.evaluator, bandwidth, 0.0, max_drop, space.resolver)
        for m in found.ranked:
            assert m.option.drop + m.option.drop_se <= max_drop + 1e-12


def test_compress_names() -> None:
    assert parse_compress("none") == () and CompileOptions(compress="none").compress == ()
    assert parse_compress("auto") == FAMILIES
    assert parse_compress("prune, bottleneck,prune") == ("prune", "bottleneck")
    with pytest.raises(SplitcError, match="unknown --compress 'bogus'.*bottleneck, lowrank, prune, int8, fp16"):
        CompileOptions(compress="prune,bogus")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "splitc.cli", *args], capture_output=True, text=True, timeout=300)


def test_cli_bogus_compress_exits_2_with_one_line(tmp_path: Path) -> None:
    result = _cli("compile", str(DIGITS), "--compress", "bogus", "-o", str(tmp_path / "out"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown --compress 'bogus'")
    assert "bottleneck, lowrank, prune, int8, fp16" in lines[0]
    assert not (tmp_path / "out").exists()


def _comparable(plan: dict) -> dict:
    """The plan without the wall-clock times it records (partitioning, shape resolution)."""
    plan = json.loads(json.dumps(plan))
    plan.pop("solve_ms")
    (plan["model"].get("shapes") or {}).pop("seconds", None)
    return plan


@pytest.mark.filterwarnings("ignore::splitc.calibration.data.CalibrationWarning")
def test_compress_none_gives_the_plan_of_a_plain_compile(small_calib: Path, tmp_path: Path) -> None:
    out = tmp_path / "none"
    result = _cli("compile", str(DIGITS), "--calib", str(small_calib), "--compress", "none", "-o", str(out), "--json")
    assert result.returncode == 0, result.stderr
    plain = splitc.compile(DIGITS, calib=small_calib)
    assert _comparable(json.loads((out / "plan.json").read_text())) == _comparable(plain.plan)
    assert "compression" not in plain.plan["edge"]


def _bottleneck_split(calib: Path, **settings):
    return splitc.compile(DIGITS, target="raspberry-pi-4", cloud="t4", bandwidth="1Mbps", calib=calib,
                          cut=("/features/features.6/MaxPool_output_0",), bits=32, max_drop=0.5,
                          compress=("bottleneck", "prune", "lowrank"), **settings)


def test_plan_records_the_rewrites_and_the_split_is_exact(small_calib: Path, tmp_path: Path) -> None:
    split = _bottleneck_split(small_calib)
    record = split.plan["edge"]["compression"]
    assert record["variant"] != "base" and record["applied"] and split.plan["forced"]
    names = [step["rewrite"] for step in record["applied"]]
    assert "+".join(f"{s['rewrite']}{s['level'] * 100:g}" for s in record["applied"]) == record["variant"]
    for step in record["applied"]:
        assert 0 < step["level"] <= 1 and step["drop"] == record["drop"]
        assert step["drop_bound"] == pytest.approx(record["drop_bound"]) and record["drop_bound"] <= 0.5
        assert step["flops_before"] > 0 and np.isfinite(step["flops_saved"])
    assert set(record["not_applied"]) == {"bottleneck", "prune", "lowrank"} - set(names)
    assert all(isinstance(v, str) and v for v in record["not_applied"].values())
    assert record["search"]["evaluations"] >= 1 and record["samples"] == 40 and record["fit_samples"] == 40
    split.save(tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert saved["edge"]["compression"] == json.loads(json.dumps(record))
    # the halves are ordinary ONNX: the runtime's pipeline (codec included) equals the rewritten full model
    pipeline = Pipeline(tmp_path / "out")
    images = np.load(ROOT / "examples" / "digits" / "test.npz")["image"][:6]
    with ServerThread(tmp_path / "out") as server, EdgeClient(tmp_path / "out", server.url) as client:
        for k in range(len(images)):
            feeds = {"image": images[k:k + 1]}
            want = run_model(split.graph.model, feeds)
            for got in (pipeline.run(feeds), client.run(feeds)):  # in process, and through `splitc serve`
                for name in want:
                    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


def test_calibration_too_small_to_fit_is_skipped_with_the_reason(tmp_path: Path) -> None:
    data = np.load(ROOT / "examples" / "digits" / "calib.npz")
    path = tmp_path / "tiny.npz"
    np.savez(path, image=data["image"][:10], labels=data["labels"][:10])
    split = _bottleneck_split(path, confidence=0.5)
    record = split.plan["edge"]["compression"]
    assert record["variant"] == "base" and record["applied"] == []
    for reason in record["not_applied"].values():
        assert "10 samples" in reason and "at least 16" in reason


def _elementwise_model() -> onnx.ModelProto:
    """x -> Relu -> Mul(2) -> Sigmoid -> y: nothing to prune or factor."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="relu"),
             helper.make_node("Mul", ["a", "two"], ["b"], name="mul"),
             helper.make_node("Sigmoid", ["b"], ["y"], name="sigmoid")]
    graph = helper.make_graph(nodes, "elementwise", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
                              [numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_a_model_with_nothing_to_compress_compiles_as_before(tmp_path: Path) -> None:
    model = _elementwise_model()
    path = tmp_path / "calib.npz"
    np.savez(path, x=np.random.default_rng(0).normal(size=(40, 64)).astype(np.float32))
    settings = dict(target="raspberry-pi-4", cloud="t4", bandwidth="5Mbps", calib=path, metric="rel-l2",
                    max_drop=0.05)
    plain = splitc.compile(model, **settings)
    packed = splitc.compile(model, compress=("lowrank", "prune"), **settings)
    assert packed.plan["cut"] == plain.plan["cut"] and packed.plan["kind"] == plain.plan["kind"]
    assert packed.plan["predicted"]["total_ms"] == pytest.approx(plain.plan["predicted"]["total_ms"], rel=1e-9)
    record = packed.plan["edge"]["compression"]
    assert record["variant"] == "base" and record["applied"] == []
    assert "no Gemm/MatMul/Conv in the edge half" in record["not_applied"]["lowrank"]
    assert "no convolution in the edge half to prune" in record["not_applied"]["prune"]


def test_an_int8_edge_runs_as_it_was_measured(small_calib: Path, tmp_path: Path) -> None:
    """Emitting an INT8 candidate gives the halves calibration measured: same top-1 on the certify share."""
    from splitc.compress.emit import emit_choice

    options = CompileOptions(target="raspberry-pi-4", cloud="t4", calib=small_calib, compress=("int8",), bits=32,
                             max_drop=1.0)
    analysis = analyse(DIGITS, options.target, options.cloud, options.bandwidth, options.rtt)
    space = prepare(analysis, options, cuts=[CUTS[2]])
    found = exhaustive(space.candidates, space.evaluator, 1e6, 20.0, 1.0, space.resolver)
    chosen = next(m for m in found.measured if m.candidate.spec.precision == "int8")
    split = emit_choice(space, chosen, found.ranked)
    assert split.plan["edge"]["precision"] == "int8"
    assert any(n.op_type == "QuantizeLinear" for n in split.edge_model.graph.node)
    split.save(tmp_path / "out")
    pipeline, certify = Pipeline(tmp_path / "out"), space.shares.certify
    right = [int(pipeline.run(s)["logits"].argmax() == y) for s, y in zip(certify.samples, certify.labels)]
    reference = space.evaluator.reference("certify")
    float_right = [int(o["logits"].argmax() == y) for o, y in zip(reference.outputs, certify.labels)]
    assert np.mean(float_right) - np.mean(right) == pytest.approx(chosen.option.drop, abs=1e-12)
