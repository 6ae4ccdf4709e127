"""Structured channel pruning with least-squares refit (``splitc.compress.prune``)."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from splitc.compress.base import Activations
from splitc.compress.prune import CONCAT, RESIDUAL, ChannelPrune, scope_flops, variants
from splitc.errors import SplitcError
from splitc.testing import zoo
from tests.conftest import run_model


def _weights(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}


def _calibration(model: onnx.ModelProto, count: int, seed: int = 0) -> Activations:
    return Activations(model, [zoo.random_inputs(model, seed + k) for k in range(count)])


def _chain_model(bn: bool = True, pad2: int = 1, seed: int = 0, edit=None) -> onnx.ModelProto:
    """x (1,4,12,12) -> conv1 (8) -> [bn1] -> relu1 -> pool1 (6x6) -> conv2 (6) -> relu2 -> y."""
    rng = np.random.default_rng(seed)
    w = {"W1": rng.standard_normal((8, 4, 3, 3)) * 0.3, "B1": rng.standard_normal(8) * 0.1,
         "W2": rng.standard_normal((6, 8, 3, 3)) * 0.2, "B2": rng.standard_normal(6) * 0.1,
         "scale": 1 + 0.2 * rng.standard_normal(8), "bias": 0.1 * rng.standard_normal(8),
         "mean": 0.1 * rng.standard_normal(8), "var": rng.uniform(0.5, 1.5, 8)}
    if edit is not None:
        edit(w)
    nodes = [helper.make_node("Conv", ["x", "W1", "B1"], ["c1"], "conv1", kernel_shape=[3, 3], pads=[1] * 4)]
    if bn:
        nodes.append(helper.make_node("BatchNormalization", ["c1", "scale", "bias", "mean", "var"], ["b1"], "bn1"))
    nodes += [helper.make_node("Relu", ["b1" if bn else "c1"], ["r1"], "relu1"),
              helper.make_node("MaxPool", ["r1"], ["p1"], "pool1", kernel_shape=[2, 2], strides=[2, 2]),
              helper.make_node("Conv", ["p1", "W2", "B2"], ["c2"], "conv2", kernel_shape=[3, 3], pads=[pad2] * 4),
              helper.make_node("Relu", ["c2"], ["y"], "relu2")]
    used = {n for node in nodes for n in node.input}
    inits = [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items() if k in used]
    side = 6 if pad2 else 4
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, side, side])], inits)
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


def _gemm_model() -> onnx.ModelProto:
    """x (1,4,6,6) -> conv (6) -> relu -> pool (2x2) -> Flatten -> Gemm (5) -> logits."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
             for n, s in [("W", (6, 4, 3, 3)), ("B", (6,)), ("FW", (5, 24)), ("FB", (5,))]]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], "conv", kernel_shape=[3, 3], pads=[1] * 4),
             helper.make_node("Relu", ["c"], ["r"], "relu"),
             helper.make_node("MaxPool", ["r"], ["p"], "pool", kernel_shape=[3, 3], strides=[3, 3]),
             helper.make_node("Flatten", ["p"], ["f"], "flatten", axis=1),
             helper.make_node("Gemm", ["f", "FW", "FB"], ["logits"], "fc", transB=1, alpha=0.5, beta=2.0)]
    graph = helper.make_graph(nodes, "gemm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 5])], inits)
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))


def _outputs_close(a: onnx.ModelProto, b: onnx.ModelProto, seed: int = 1000, tol: float = 1e-4) -> None:
    feeds = zoo.random_inputs(a, seed)
    expected, got = run_model(a, feeds), run_model(b, feeds)
    assert list(got) == list(expected)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=tol, atol=tol)


@pytest.mark.parametrize("build, samples", [(_chain_model, 8), (_gemm_model, 40),
                                            (lambda: zoo.build("resnet_blocks"), 6)],
                         ids=["conv-bn-relu-pool-conv", "conv-flatten-gemm", "resnet_blocks"])
def test_keeping_every_channel_reproduces_the_model(build, samples) -> None:
    """Level 1 runs the whole rewrite (selection, refit, write-back) and keeps the outputs."""
    model = build()
    rewrite = ChannelPrune(_calibration(model, samples), level=1.0)
    result = rewrite(model)
    assert result.modified and rewrite.detail["layers"]
    assert all(layer["kept"] == layer["channels"] for layer in rewrite.detail["layers"])
    _outputs_close(model, result.model)


def _geometry_model(rank: int, attrs: dict) -> onnx.ModelProto:
    """x (1,3,11,...) -> conv1 (6) -> Tanh -> conv2 (5, no bias, ``attrs``) -> y, in ``rank`` spatial dims."""
    rng = np.random.default_rng(rank)
    inits = [numpy_helper.from_array((rng.standard_normal([c, cin] + [3] * rank) * 0.3).astype(np.float32), n)
             for n, c, cin in [("W1", 6, 3), ("W2", 5, 6)]]
    nodes = [helper.make_node("Conv", ["x", "W1"], ["c1"], "conv1", pads=[1] * (2 * rank)),
             helper.make_node("Tanh", ["c1"], ["t"], "tanh"),
             helper.make_node("Conv", ["t", "W2"], ["y"], "conv2", **attrs)]
    graph = helper.make_graph(nodes, "geometry", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                                [1, 3] + [11] * rank)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("rank, attrs", [
    (2, {"strides": [2, 2], "auto_pad": "SAME_UPPER"}),
    (2, {"strides": [2, 1], "pads": [0, 2, 1, 0], "dilations": [2, 2]}),
    (2, {"auto_pad": "VALID"}),
    (1, {"pads": [2, 1], "dilations": [2]}),
    (3, {"pads": [1] * 6, "strides": [2, 2, 2]}),
], ids=["same-upper-stride2", "asymmetric-pads-dilated", "valid", "conv1d", "conv3d"])
def test_the_consumer_s_receptive_fields_are_read_right(rank, attrs) -> None:
    """A consumer without bias gains one; at level 1 its refit reproduces every geometry."""
    model = _geometry_model(rank, attrs)
    result = ChannelPrune(_calibration(model, 20), level=1.0)(model)
    assert len(next(n for n in result.model.graph.node if n.name == "conv2").input) == 3
    _outputs_close(model, result.model)


def _zero_consumer_columns(w: dict) -> None:
    w["W2"][:, 1::2] = 0.0


def _constant_channels(w: dict) -> None:
    w["W1"][1::2] = 0.0  # these channels are a constant after conv1, BatchNormalization, Relu and MaxPool
    w["B1"][1::2] = 0.7


@pytest.mark.parametrize("edit, pad2", [(_zero_consumer_columns, 1), (_constant_channels, 0)],
                         ids=["zero-consumer-columns", "constant-channels"])
@pytest.mark.parametrize("refit", [True, False])
def test_exactly_redundant_channels_are_the_ones_removed(edit, pad2, refit) -> None:
    model = _chain_model(pad2=pad2, edit=edit)
    rewrite = ChannelPrune(_calibration(model, 6), level=0.5, refit=refit)
    result = rewrite(model)
    (layer,) = rewrite.detail["layers"]
    assert layer["kept_channels"] == [0, 2, 4, 6]
    assert layer["prune_error"] < 1e-6
    _outputs_close(model, result.model, tol=1e-4)


def test_the_refit_error_is_at_most_the_prune_only_error() -> None:
    """Least squares on every calibration row cannot do worse there than keeping the weights."""
    model = _chain_model()
    activations = _calibration(model, 20)  # 20 x 36 rows of conv2: all of them are fitted
    errors = {}
    for refit in (True, False):
        rewrite = ChannelPrune(activations, scope={"conv1"}, level=0.5, refit=refit)
        pruned = rewrite(model).model
        got = Activations(pruned, activations.samples).get(["c2"])["c2"]
        want = activations.get(["c2"])["c2"]
        errors[refit] = np.linalg.norm(got - want) / np.linalg.norm(want)
        (layer,) = rewrite.detail["layers"]
        assert layer["rows"] == 20 * 36
        assert layer["refit_error" if refit else "prune_error"] == pytest.approx(errors[refit], rel=1e-3)
    assert errors[True] <= errors[False]
    assert errors[True] < 0.9 * errors[False]  # random weights: the refit recovers a real part of the loss


def test_every_layer_of_a_sequence_is_refitted_at_least_as_well() -> None:
    model = zoo.build("resnet_blocks")
    rewrite = ChannelPrune(_calibration(model, 6), level=0.5)
    assert rewrite(model).modified
    assert len(rewrite.detail["layers"]) == 3
    for layer in rewrite.detail["layers"]:
        assert layer["refit_error"] <= layer["prune_error"] + 1e-9


def test_batch_normalization_loses_the_pruned_channels() -> None:
    model = _chain_model()
    rewrite = ChannelPrune(_calibration(model, 6), level=0.5, refit=False)
    before, after = _weights(model), _weights(rewrite(model).model)
    kept = rewrite.detail["layers"][0]["kept_channels"]
    assert len(kept) == 4
    for name in ("W1", "B1", "scale", "bias", "mean", "var"):
        np.testing.assert_array_equal(after[name], before[name][kept])
    np.testing.assert_array_equal(after["W2"], before["W2"][:, kept])


def test_golden_structure_of_a_pruned_chain_cnn() -> None:
    model = zoo.build("chain_cnn")
    rewrite = ChannelPrune(_calibration(model, 12), level=0.5)
    result = rewrite(model)
    shapes = {name: value.shape for name, value in _weights(result.model).items()}
    assert shapes == {
        "stage1/conv/W": (8, 3, 3, 3), "stage1/conv/B": (8,),
        "stage2/conv/W": (16, 8, 3, 3), "stage2/conv/B": (16,),
        "stage3/conv/W": (32, 16, 3, 3), "stage3/conv/B": (32,),
        "head/fc/W": (10, 512), "head/fc/B": (10,),
    }
    assert [layer["conv"] for layer in rewrite.detail["layers"]] == ["stage1/conv", "stage2/conv"]
    assert "calibration rows" in rewrite.detail["skipped"]["stage3/conv"]
    infos = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in result.model.graph.value_info}
    assert infos["stage1/pool"] == [1, 8, 16, 16] and infos["stage2/pool"] == [1, 16, 8, 8]
    assert [o.SerializeToString() for o in result.model.graph.output] == \
        [o.SerializeToString() for o in model.graph.output]


def test_a_flattened_gemm_consumer_is_refitted_per_channel_block() -> None:
    model = _gemm_model()
    rewrite = ChannelPrune(_calibration(model, 40), level=0.5)
    result = rewrite(model)
    weights = _weights(result.model)
    assert weights["W"].shape == (3, 4, 3, 3) and weights["FW"].shape == (5, 12) and weights["FB"].shape == (5,)
    gemm = next(n for n in result.model.graph.node if n.op_type == "Gemm")
    assert {a.name for a in gemm.attribute} == {"transB"}  # alpha and beta folded into the weights
    (layer,) = rewrite.detail["layers"]
    assert layer["refit_error"] <= layer["prune_error"]


def test_a_consumer_outside_the_scope_is_rewritten_and_the_cut_tensor_keeps_its_name() -> None:
    model = zoo.build("chain_cnn")
    rewrite = ChannelPrune(_calibration(model, 12), scope={"stage1/conv", "stage1/relu", "stage1/pool"}, level=0.25)
    result = rewrite(model)
    (layer,) = rewrite.detail["layers"]
    assert (layer["consumer"], layer["tensor"], layer["kept"]) == ("stage2/conv", "stage1/pool", 4)
    assert _weights(result.model)["stage2/conv/W"].shape == (32, 4, 3, 3)
    assert run_model(result.model, zoo.random_inputs(model, 1))["probs"].shape == (1, 10)


def test_convs_tied_by_a_residual_add_are_skipped() -> None:
    model = zoo.build("resnet_blocks")
    activations = _calibration(model, 4)
    rewrite = ChannelPrune(activations, level=0.5)
    rewrite(model)
    for conv in ("stem/conv", "block1/b/conv", "block2/b/conv", "block2/proj/conv", "block3/b/conv"):
        assert rewrite.detail["skipped"][conv] == RESIDUAL
    assert [layer["conv"] for layer in rewrite.detail["layers"]] == ["block1/a/conv", "block2/a/conv",
                                                                      "block3/a/conv"]
    only_tied = ChannelPrune(activations, scope={"block1/b/conv", "block2/proj/conv"}, level=0.5)
    result = only_tied(model)
    assert not result.modified and result.model is model and RESIDUAL in result.reason


def test_convs_feeding_a_concat_are_skipped() -> None:
    model = zoo.build("inception_blocks")
    rewrite = ChannelPrune(_calibration(model, 4), level=0.5)
    rewrite(model)
    assert rewrite.detail["skipped"]["inc1/b1x1/conv"] == CONCAT


def test_too_few_calibration_rows_fail_with_a_reason() -> None:
    model = zoo.build("chain_cnn")
    result = ChannelPrune(_calibration(model, 12), scope={"stage3/conv"}, level=0.5)(model)
    assert not result.modified
    assert "'head/fc'" in result.reason and "12 calibration rows for 257 unknowns" in result.reason


def test_variants_prune_more_at_lower_levels() -> None:
    model = _chain_model()
    found = variants(model, _calibration(model, 6), levels=(0.25, 0.5, 0.75))
    assert [v.level for v in found] == [0.25, 0.5, 0.75]
    assert all(v.rewrite == "prune" and v.flops_before == scope_flops(model) for v in found)
    after = [v.flops_after for v in found]
    assert after[0] < after[1] < after[2] < found[0].flops_before
    assert [v.detail["layers"][0]["kept"] for v in found] == [2, 4, 6]
    for v in found:
        assert [o.name for o in v.model.graph.output] == ["y"]


@pytest.mark.parametrize("level", [0.0, 1.5])
def test_a_level_outside_zero_one_is_refused(level) -> None:
    model = _chain_model()
    with pytest.raises(SplitcError, match="fraction of channels kept"):
        ChannelPrune(_calibration(model, 1), level=level)
