"""The cut bottleneck: exact at d = C, PCA reconstruction below, folding into consumers, structure, failures."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from splitc.compress.base import Activations
from splitc.compress.bottleneck import CutBottleneck
from splitc.errors import SplitcError
from splitc.frontend import import_model
from tests.conftest import run_model

C = 8


def _structured(shape, rng, decay=0.6) -> np.ndarray:
    """A matrix (rows = shape[0], columns = the rest) with geometrically decaying singular values."""
    rows, cols = shape[0], int(np.prod(shape[1:]))
    k = min(rows, cols)
    u = np.linalg.qr(rng.normal(size=(rows, k)))[0]
    v = np.linalg.qr(rng.normal(size=(cols, k)))[0]
    return (3 * (u * decay ** np.arange(k)) @ v.T).reshape(shape).astype(np.float32)


def _model(nodes, x_shape, outputs, inits, opset=13) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
        [helper.make_empty_tensor_value_info(n) for n in outputs],
        [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in inits.items()])
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]))


def _conv_cut_model(rng, opset=13):
    """x -> stem (1x1 Conv, low-rank-ish) -> r, read by a padded 3x3 Conv, a 1x1 Conv, an unpadded strided
    3x3 Conv, a Sigmoid, and the graph outputs."""
    inits = {"w0": _structured((C, C, 1, 1), rng), "b0": rng.normal(size=C),
             "w1": rng.normal(size=(5, C, 3, 3)), "b1": rng.normal(size=5),
             "w2": rng.normal(size=(6, C, 1, 1)),
             "w3": rng.normal(size=(4, C, 3, 3)), "b3": rng.normal(size=4)}
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["r"], name="stem"),
             helper.make_node("Conv", ["r", "w1", "b1"], ["y1"], name="pad3", pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["r", "w2"], ["y2"], name="one"),
             helper.make_node("Conv", ["r", "w3", "b3"], ["y3"], name="valid3", strides=[2, 2]),
             helper.make_node("Sigmoid", ["r"], ["y4"], name="sig")]
    return _model(nodes, [2, C, 7, 7], ["y1", "y2", "y3", "y4", "r"], inits, opset)


def _dense_cut_model(rng, relu=True, opset=13):
    """x (4, 10) -> stem Gemm -> r (4, 12), read by a Gemm (transB, alpha, beta, row bias), a MatMul, a Relu."""
    inits = {"w0": _structured((10, 12), rng), "w1": rng.normal(size=(5, 12)), "c1": rng.normal(size=(1, 5)),
             "w2": rng.normal(size=(12, 4))}
    nodes = [helper.make_node("Gemm", ["x", "w0"], ["r"], name="stem"),
             helper.make_node("Gemm", ["r", "w1", "c1"], ["y1"], name="fc", transB=1, alpha=2.0, beta=0.5),
             helper.make_node("MatMul", ["r", "w2"], ["y2"], name="mm")]
    if relu:
        nodes.append(helper.make_node("Relu", ["r"], ["y3"], name="act"))
    return _model(nodes, [4, 10], ["y1", "y2", "y3"][: 2 + relu], inits, opset)


def _samples(shape, count, rng):
    return [{"x": rng.normal(size=shape).astype(np.float32)} for _ in range(count)]


def _outputs(model, samples):
    runs = [run_model(model, feed) for feed in samples]
    return {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}


def _ops(model):
    return [(n.op_type, n.name, n.input[0]) for n in model.graph.node]


def _shapes(model, node_name):
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    node = next(n for n in model.graph.node if n.name == node_name)
    return [inits[i] for i in node.input[1:]]


def _pca_reconstruction(x: np.ndarray, d: int) -> tuple[np.ndarray, float]:
    """Rank-d PCA reconstruction of x (N, C, ...) over channels, and the explained variance, by SVD."""
    moved = np.moveaxis(x.astype(np.float64), 1, -1)
    rows = moved.reshape(-1, moved.shape[-1])
    mean = rows.mean(axis=0)
    _, s, vt = np.linalg.svd(rows - mean, full_matrices=False)
    rebuilt = (rows - mean) @ vt[:d].T @ vt[:d] + mean
    return np.moveaxis(rebuilt.reshape(moved.shape), -1, 1), float((s[:d] ** 2).sum() / (s ** 2).sum())


def _apply(model: onnx.ModelProto, node_name: str, value: np.ndarray) -> np.ndarray:
    """Run the single node ``node_name`` of ``model`` on ``value`` (its first input)."""
    node = next(n for n in model.graph.node if n.name == node_name)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name in node.input}
    single = helper.make_node(node.op_type, ["x", *node.input[1:]], list(node.output), name=node.name)
    single.attribute.extend(node.attribute)
    return run_model(_model([single], list(value.shape), list(node.output), inits), {"x": value})[node.output[0]]


@pytest.mark.parametrize("opset", [11, 21])
def test_full_width_is_exact_on_every_output(opset):
    rng = np.random.default_rng(opset)
    model = _conv_cut_model(rng, opset)
    rewrite = CutBottleneck(Activations(model, _samples((2, C, 7, 7), 3, rng)), "r", channels=C, scope={"stem"})
    result = rewrite(model)
    assert result.modified
    onnx.checker.check_model(result.model, full_check=True)
    variant = rewrite.variant
    assert variant.detail["explained_variance"] == pytest.approx(1.0, abs=1e-9)
    test = _samples((2, C, 7, 7), 2, rng)
    ref, got = _outputs(model, test), _outputs(result.model, test)
    assert ref.keys() == got.keys()
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_golden_structure_conv_cut():
    rng = np.random.default_rng(1)
    model = _conv_cut_model(rng)
    assert _ops(model) == [("Conv", "stem", "x"), ("Conv", "pad3", "r"), ("Conv", "one", "r"),
                           ("Conv", "valid3", "r"), ("Sigmoid", "sig", "r")]
    rewrite = CutBottleneck(Activations(model, _samples((2, C, 7, 7), 2, rng)), "r", channels=3, scope={"stem"})
    result = rewrite(model).model
    assert _ops(result) == [("Conv", "stem", "x"), ("Conv", "r/bottleneck", "r"),
                            ("Conv", "r/restored", "r/bottleneck"), ("Conv", "pad3", "r/restored"),
                            ("Conv", "one", "r/bottleneck"), ("Conv", "valid3", "r/bottleneck"),
                            ("Sigmoid", "sig", "r/restored")]
    assert _shapes(result, "r/bottleneck") == [(3, C, 1, 1), (3,)]
    assert _shapes(result, "r/restored") == [(C, 3, 1, 1), (C,)]
    assert _shapes(result, "pad3") == [(5, C, 3, 3), (5,)]  # padded: reads the restored tensor
    assert _shapes(result, "one") == [(6, 3, 1, 1), (6,)]
    assert _shapes(result, "valid3") == [(4, 3, 3, 3), (4,)]
    assert [o.name for o in result.graph.output] == ["y1", "y2", "y3", "y4", "r"]
    assert {"w2", "w3", "b3"}.isdisjoint(t.name for t in result.graph.initializer)
    inferred = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
                for v in onnx.shape_inference.infer_shapes(result).graph.value_info}
    assert inferred["r/bottleneck"] == [2, 3, 7, 7]
    variant = rewrite.variant
    assert variant.renamed == {"r": "r/bottleneck"} and variant.level == pytest.approx(3 / C)
    assert variant.detail["folded"] == ["one", "valid3"] and variant.detail["restored"] == ["pad3", "sig"]
    assert (variant.detail["cut"], variant.detail["channels_in"], variant.detail["channels_out"]) == ("r", C, 3)
    assert variant.detail["edge_nodes"] == ["r/bottleneck"] and variant.detail["cloud_nodes"] == ["r/restored"]


def test_below_full_width_every_consumer_sees_the_pca_reconstruction():
    rng = np.random.default_rng(2)
    model = _conv_cut_model(rng)
    samples = _samples((2, C, 7, 7), 3, rng)
    acts = Activations(model, samples)
    rewrite = CutBottleneck(acts, "r", level=0.5, scope={"stem"})
    result = rewrite(model).model
    assert rewrite.variant.detail["channels_out"] == 4
    cut = acts.get(["r"])["r"]
    rebuilt, explained = _pca_reconstruction(cut, 4)
    assert rewrite.variant.detail["explained_variance"] == pytest.approx(explained, rel=1e-6)
    assert 0.8 < explained < 1.0  # structured: most, not all, of the variance in 4 channels
    restored = Activations(result, samples).get(["r/restored"])["r/restored"]
    np.testing.assert_allclose(restored, rebuilt, rtol=1e-4, atol=1e-4)
    got = _outputs(result, samples)
    for name, out in (("pad3", "y1"), ("one", "y2"), ("valid3", "y3"), ("sig", "y4")):
        want = _apply(model, name, rebuilt.astype(np.float32))
        np.testing.assert_allclose(got[out], want, rtol=1e-4, atol=1e-4, err_msg=name)
    np.testing.assert_allclose(got["r"], cut, rtol=1e-6, atol=1e-6)  # the edge's own output is untouched


@pytest.mark.parametrize("opset", [11, 21])
def test_rank2_cut_full_width_is_exact(opset):
    rng = np.random.default_rng(3 + opset)
    model = _dense_cut_model(rng, opset=opset)
    # no scope: every reader of the cut is on the cloud
    rewrite = CutBottleneck(Activations(model, _samples((4, 10), 4, rng)), "r", channels=12)
    result = rewrite(model)
    onnx.checker.check_model(result.model, full_check=True)
    assert _ops(result.model) == [("Gemm", "stem", "x"), ("Gemm", "r/bottleneck", "r"), ("Gemm", "fc", "r/bottleneck"),
                                  ("Gemm", "mm", "r/bottleneck"), ("Gemm", "r/restored", "r/bottleneck"),
                                  ("Relu", "act", "r/restored")]
    assert _shapes(result.model, "r/bottleneck") == [(12, 12), (12,)]
    assert _shapes(result.model, "fc") == [(12, 5), (1, 5)] and _shapes(result.model, "mm") == [(12, 4), (4,)]
    test = _samples((4, 10), 2, rng)
    ref, got = _outputs(model, test), _outputs(result.model, test)
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_output_fit_beats_pca_on_the_consumers_outputs():
    rng = np.random.default_rng(4)
    model = _dense_cut_model(rng, relu=False)
    samples = _samples((4, 10), 10, rng)
    acts = Activations(model, samples)
    ref = _outputs(model, samples)

    def error(fit, d):
        rewrite = CutBottleneck(acts, "r", channels=d, scope={"stem"}, fit=fit)
        got = _outputs(rewrite(model).model, samples)
        return np.sqrt(sum(np.sum((got[k] - ref[k]) ** 2) for k in ref)), rewrite.variant

    for d in (1, 2, 4):
        ours, _ = error("output", d)
        pca, _ = error("pca", d)
        assert ours <= pca * (1 + 1e-4), d
    assert ours < 0.9 * pca
    exact, variant = error("output", 12)
    assert variant.detail["channels_out"] == 9  # the consumers' 5 + 4 outputs need no more
    assert exact <= 1e-4 * np.sqrt(sum(np.sum(v ** 2) for v in ref.values()))


def test_edge_flops_grow_by_the_projection_and_edge_consumers_keep_the_cut():
    rng = np.random.default_rng(5)
    model = _conv_cut_model(rng)
    rewrite = CutBottleneck(Activations(model, _samples((2, C, 7, 7), 2, rng)), "r", channels=2,
                            scope={"stem", "one"})
    result = rewrite(model).model
    before, after = import_model(model), import_model(result)
    variant = rewrite.variant
    assert variant.flops_before == pytest.approx(before.node("stem").flops + before.node("one").flops)
    assert variant.flops_after - variant.flops_before == pytest.approx(after.node("r/bottleneck").flops)
    assert after.node("r/bottleneck").flops > 0
    assert list(after.node("one").proto.input) == ["r", "w2"]  # on the edge: unchanged
    assert "one" not in variant.detail["folded"] + variant.detail["restored"]


def test_too_few_calibration_rows_fail_with_the_reason():
    rng = np.random.default_rng(6)
    model = _dense_cut_model(rng)
    rewrite = CutBottleneck(Activations(model, _samples((4, 10), 2, rng)), "r", channels=4, scope={"stem"})
    result = rewrite(model)
    assert not result.modified and result.model is model and rewrite.variant is None
    assert result.reason == ("8 calibration rows (samples x positions) for the 12 channels of 'r'; "
                             "the fit needs at least 12")
    with pytest.raises(SplitcError, match="calibration rows"):
        rewrite.apply(model)


def test_does_not_apply_with_the_reason():
    rng = np.random.default_rng(7)
    model = _dense_cut_model(rng)
    acts = Activations(model, _samples((4, 10), 4, rng))
    cases = [
        (CutBottleneck(acts, "nope", channels=2), "no node computes 'nope'"),
        (CutBottleneck(acts, "r", channels=2, scope={"stem", "fc", "mm", "act"}),
         "nothing outside the scope reads 'r'"),
        (CutBottleneck(acts, "r", channels=13, scope={"stem"}), "13 channels asked of the 12 channels of 'r'"),
        (CutBottleneck(acts, "r", channels=2, scope={"stem"}, fit="output"),
         "fit 'output' needs Gemm, MatMul or 1x1 Conv consumers with constant weights, not ['act']"),
    ]
    for rewrite, reason in cases:
        result = rewrite(model)
        assert not result.modified and result.reason == reason

    nodes = [helper.make_node("Cast", ["x"], ["i"], name="to_int", to=TensorProto.INT32),
             helper.make_node("Cast", ["i"], ["y"], name="to_float", to=TensorProto.FLOAT)]
    ints = _model(nodes, [4, 10], ["y"], {})
    result = CutBottleneck(Activations(ints, _samples((4, 10), 4, rng)), "i", channels=2)(ints)
    assert result.reason == "'i' is int32 of rank 2; a bottleneck needs a float (N, C, ...) tensor"


def test_bad_arguments_are_user_errors():
    acts = Activations(_dense_cut_model(np.random.default_rng(8)), [])
    with pytest.raises(SplitcError, match="unknown bottleneck fit 'svd'"):
        CutBottleneck(acts, "r", channels=2, fit="svd")
    with pytest.raises(SplitcError, match="at least one channel"):
        CutBottleneck(acts, "r", channels=0)
    with pytest.raises(SplitcError, match="fraction of the channels"):
        CutBottleneck(acts, "r", level=0.0)
