"""Float16 edge halves (--edge-precision fp16): the cost model, the emitted half, and the measured accuracy."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

import splitc
from splitc import joint
from splitc.testing import zoo
from splitc.calibration import calibrate
from splitc.passes import precision
from splitc.runtime import Pipeline
from splitc.targets import TargetError, get_target
from tests.conftest import run_model
from tests.test_cli import splitc_cli
from tests.test_jpeg import smooth_images

MID = "block2/relu"


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return zoo.build("resnet_blocks")


@pytest.fixture(scope="module")
def calib(tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, input=smooth_images(12, seed=5)[:, 0])
    return path


def test_fp16_targets_have_the_fp16_peak_and_half_the_bytes() -> None:
    tx2 = get_target("jetson-tx2")
    half = tx2.in_fp16()
    assert half.peak_flops == tx2.fp16_flops == 2 * tx2.peak_flops
    assert half.mem_bw == 2 * tx2.mem_bw and half.precision == "fp16" and half.in_fp16() is half
    assert (half.efficiency, half.overhead_us) == (tx2.efficiency, tx2.overhead_us)
    with pytest.raises(TargetError, match="raspberry-pi-4"):
        get_target("raspberry-pi-4").in_fp16()


def test_fp16_edge_times_are_the_fp16_roofline(model) -> None:
    """Twice the peak and half the bytes: each node's roofline term halves, its launch overhead stays."""
    fp32 = splitc.analyse(model, target="jetson-tx2")
    fp16 = splitc.analyse(model, target="jetson-tx2", edge_precision="fp16")
    m32, m16 = fp32.models[0], fp16.models[0]
    for node in fp32.graph.data_nodes:
        overhead = m32.overhead_us.get(node.op_type, m32.target.overhead_us) * 1e-3
        assert m16.node_ms(node) - overhead == pytest.approx((m32.node_ms(node) - overhead) / 2, rel=1e-9)
    assert np.array_equal(fp32.costs.cloud_ms, fp16.costs.cloud_ms)
    assert fp16.result.edge_only.total_ms < fp32.result.edge_only.total_ms


def test_an_fp16_plan_ships_a_float16_edge_half(model, tmp_path) -> None:
    with pytest.warns(joint.UncheckedAccuracy, match="float16"):
        split = splitc.compile(model, target="jetson-tx2", cut=[MID], bits=32, codec="none", edge_precision="fp16")
    split.save(tmp_path / "out")
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert plan["edge"]["precision"] == "fp16" and plan["edge"]["target"] == "jetson-tx2-fp16"
    edge = onnx.load(str(tmp_path / "out" / "edge.onnx"))
    onnx.checker.check_model(edge, full_check=True)
    weights = [t for t in edge.graph.initializer if len(t.dims) >= 2]
    assert weights and all(t.data_type == onnx.TensorProto.FLOAT16 for t in weights)
    assert [i.type.tensor_type.elem_type for i in edge.graph.input] == [onnx.TensorProto.FLOAT]
    assert [o.name for o in edge.graph.output] == [MID]
    x = smooth_images(1, seed=9)[0]
    got, want = Pipeline(tmp_path / "out").run({"input": x})["logits"], run_model(model, {"input": x})["logits"]
    assert not np.array_equal(got, want)  # it really computes in float16 ...
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-3 * np.abs(want).max())  # ... to float16 accuracy


def test_calibration_measures_the_float16_prefix(model, calib) -> None:
    analysis = splitc.analyse(model, target="jetson-tx2", bandwidth="50KBps", edge_precision="fp16")
    options = joint.EncodingOptions(32, "none", 1.0, calib, metric="rel-l2")
    measured, table = joint.measured_options(analysis, options, [(), (MID,)], prune=False)
    images = [x[None] for x in np.load(calib)["input"]]
    reference = [run_model(model, {"input": x})["logits"] for x in images]
    whole16 = calibrate._session(precision.to_fp16(model))
    edge_only = [whole16.run(None, {"input": x})[0] for x in images]
    expected = np.mean([np.linalg.norm(o - r) / (np.linalg.norm(r) + 1e-12) for o, r in zip(edge_only, reference)])
    by_cut = {o.cut: o for o in measured}
    assert by_cut[()].drop == pytest.approx(expected, rel=1e-6) and by_cut[()].drop > 0
    split = analysis.split([MID])
    prefix = calibrate._session(split.edge_model)
    suffix = calibrate._session(split.cloud_model)
    outputs = [suffix.run(None, {MID: prefix.run(None, {"input": x})[0]})[0] for x in images]
    errors = [np.linalg.norm(o - r) / (np.linalg.norm(r) + 1e-12) for o, r in zip(outputs, reference)]
    assert by_cut[(MID,)].drop == pytest.approx(np.mean(errors), rel=1e-2) and by_cut[(MID,)].drop > 0


def test_nothing_computed_in_float16_is_assumed_exact(model, calib) -> None:
    """With a zero bound only the float32 input sent to the cloud is exact: edge-only (10x faster) is not."""
    split = splitc.compile(model, target="jetson-tx2", bandwidth="1MBps", calib=calib, metric="rel-l2", max_drop=0.0,
                           edge_precision="fp16")
    assert split.plan["kind"] == "cloud-only" and [c["bits"] for c in split.plan["cut"]] == [32]
    assert split.plan["baselines"]["edge_only_ms"] < split.plan["predicted"]["total_ms"] / 10


def test_cli_refuses_fp16_where_the_target_has_no_fp16_rate(tmp_path) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(zoo.build("resnet_blocks"), str(path))
    result = splitc_cli(str(path), "--target", "raspberry-pi-4", "--edge-precision", "fp16", "-o", str(tmp_path / "o"))
    message = result.stdout + result.stderr
    assert result.returncode != 0 and "raspberry-pi-4" in message and "Traceback" not in message
    assert not (tmp_path / "o").exists()
    result = splitc_cli(str(path), "--edge-precision", "fp8", "-o", str(tmp_path / "o"))
    assert result.returncode != 0 and "fp32 or fp16" in result.stdout + result.stderr
