"""INT8 edge halves (``splitc.compress.int8``) and the targets' INT8 figures."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from splitc.compress.int8 import ToInt8Edge, int8_edge
from splitc.cost.model import RooflineCostModel
from splitc.errors import SplitcError
from splitc.frontend import import_model
from splitc.targets import get_target
from splitc.testing import zoo
from tests.conftest import run_model

# Per-channel INT8 weights and per-tensor INT8 activations calibrated by min/max keep a small conv
# net's outputs within a few percent (8 bits: a step of 1/255 of each tensor's range, compounded over
# the layers); 5% relative (Frobenius) error is the bound the rewrite must meet on held-out inputs.
INT8_RELATIVE_ERROR = 0.05


def _conv_net() -> onnx.ModelProto:
    """x (1,3,16,16) -> conv (8) -> relu -> conv (8) -> relu -> y (the edge half of a small CNN)."""
    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
             for n, s in [("W1", (8, 3, 3, 3)), ("B1", (8,)), ("W2", (8, 8, 3, 3)), ("B2", (8,))]]
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], "conv1", kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c1"], ["r1"], "relu1"),
             helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], "conv2", kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c2"], ["y"], "relu2")]
    graph = helper.make_graph(nodes, "edge", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _feeds(model: onnx.ModelProto, count: int, seed: int = 0) -> list[dict[str, np.ndarray]]:
    return [zoo.random_inputs(model, seed + k) for k in range(count)]


def _relative_error(model: onnx.ModelProto, quantized: onnx.ModelProto, seed: int) -> float:
    feeds = zoo.random_inputs(model, seed)
    want, got = run_model(model, feeds), run_model(quantized, feeds)
    return max(float(np.linalg.norm(got[n] - want[n]) / np.linalg.norm(want[n])) for n in want)


@pytest.mark.parametrize("build", [_conv_net, lambda: zoo.build("resnet_blocks"), lambda: zoo.build("opset7_cnn")],
                         ids=["conv-net", "resnet_blocks", "opset7_cnn"])
def test_the_int8_half_is_close_to_float_and_keeps_its_names(build) -> None:
    model = build()
    quantized = int8_edge(model, _feeds(model, 16))
    ops = {n.op_type for n in quantized.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    io = lambda m: [(v.name, v.type.tensor_type.elem_type) for v in [*m.graph.input, *m.graph.output]]
    assert io(quantized) == io(model)
    assert all(t == TensorProto.FLOAT for _, t in io(quantized))
    for seed in (100, 101, 102):  # held-out inputs, not in the calibration feeds
        assert _relative_error(model, quantized, seed) < INT8_RELATIVE_ERROR
    onnx.checker.check_model(quantized, full_check=True)


def test_the_weights_are_int8_per_output_channel() -> None:
    model = _conv_net()
    quantized = int8_edge(model, _feeds(model, 8))
    weights = {t.name: numpy_helper.to_array(t) for t in quantized.graph.initializer}
    dequant = [n for n in quantized.graph.node if n.op_type == "DequantizeLinear" and weights.get(n.input[0]) is not None
               and weights[n.input[0]].ndim == 4]
    assert len(dequant) == 2
    for node in dequant:
        assert weights[node.input[0]].dtype == np.int8
        assert weights[node.input[1]].shape == (8,)  # one scale per output channel


def test_quantizing_writes_nothing_to_the_working_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    model = _conv_net()
    int8_edge(model, _feeds(model, 4))
    ToInt8Edge(_feeds(model, 4))(model)
    assert os.listdir(tmp_path) == []


def test_the_pass_quantizes_and_says_why_not() -> None:
    model = _conv_net()
    result = ToInt8Edge(_feeds(model, 8))(model)
    assert result.modified and any(n.op_type == "QuantizeLinear" for n in result.model.graph.node)
    empty = helper.make_model(helper.make_graph([], "empty", [], []), opset_imports=[helper.make_opsetid("", 13)])
    skipped = ToInt8Edge([{}])(empty)
    assert not skipped.modified and skipped.reason == "the edge half has no nodes"


def test_a_feed_without_the_half_s_input_is_refused() -> None:
    with pytest.raises(SplitcError, match="lacks the edge half's input"):
        int8_edge(_conv_net(), [{"other": np.zeros((1, 3, 16, 16), np.float32)}])


def test_int8_targets_use_the_datasheet_rate_and_a_quarter_of_the_bytes() -> None:
    t4 = get_target("t4")
    int8 = t4.in_int8()
    assert int8.peak_flops == t4.int8_ops == 130e12 and int8.mem_bw == 4 * t4.mem_bw
    assert int8.precision == "int8" and int8.in_int8() is int8
    assert (int8.efficiency, int8.overhead_us) == (t4.efficiency, t4.overhead_us)
    assert get_target("jetson-orin-nano").in_int8().peak_flops == 20e12


def test_targets_without_an_int8_rate_fall_back_with_a_note() -> None:
    nano = get_target("jetson-nano")
    assert nano.int8_ops is None
    as_fp16 = nano.in_int8()
    assert (as_fp16.peak_flops, as_fp16.mem_bw) == (nano.fp16_flops, 2 * nano.mem_bw)
    assert "FP16 rate" in as_fp16.description and as_fp16.precision == "int8"
    pi = get_target("raspberry-pi-4")
    as_fp32 = pi.in_int8()
    assert (as_fp32.peak_flops, as_fp32.mem_bw) == (pi.peak_flops, 4 * pi.mem_bw)
    assert "FP32 rate" in as_fp32.description


def test_the_roofline_prices_an_int8_half_at_the_int8_rate() -> None:
    graph = import_model(_conv_net())
    t4 = get_target("t4")
    fp32, int8 = RooflineCostModel(t4), RooflineCostModel(t4.in_int8())
    overhead = t4.overhead_us * 1e-3
    for node in graph.data_nodes:
        compute = node.flops / t4.peak_flops
        memory = node.memory_bytes / t4.mem_bw
        expected = max(node.flops / t4.int8_ops, node.memory_bytes / (4 * t4.mem_bw)) / t4.efficiency * 1e3
        assert int8.node_ms(node) - overhead == pytest.approx(expected, rel=1e-9)
        assert int8.node_ms(node) < fp32.node_ms(node) or max(compute, memory) == 0
