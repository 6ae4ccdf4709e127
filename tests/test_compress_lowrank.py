"""Data-aware low-rank factorisation: exactness at full rank, error against plain SVD, structure, levels."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from splitc.compress.base import Activations
from splitc.compress.lowrank import NOTHING_ELIGIBLE, LowRank, variants
from splitc.errors import SplitcError
from splitc.frontend import import_model
from tests.conftest import run_model


def _structured(shape: tuple[int, ...], rng: np.random.Generator, decay: float = 0.6) -> np.ndarray:
    """A matrix (rows = shape[0], columns = the rest) with geometrically decaying singular values."""
    rows, cols = shape[0], int(np.prod(shape[1:]))
    k = min(rows, cols)
    u = np.linalg.qr(rng.normal(size=(rows, k)))[0]
    v = np.linalg.qr(rng.normal(size=(cols, k)))[0]
    return ((u * decay ** np.arange(k)) @ v.T).reshape(shape).astype(np.float32)


def _model(nodes, inputs, outputs, inits, opset=13) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_empty_tensor_value_info(n) for n in outputs],
        [numpy_helper.from_array(np.asarray(a, np.float32), n) for n, a in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    return onnx.shape_inference.infer_shapes(model)


def _samples(shape, count, rng, scales=None) -> list[dict[str, np.ndarray]]:
    """Inputs ``x`` whose features (last axis, or axis 1 for images) have very different scales."""
    out = []
    for _ in range(count):
        x = rng.normal(size=shape)
        if scales is not None:
            axis = 1 if len(shape) == 4 else -1
            x = x * np.expand_dims(scales, tuple(i for i in range(len(shape)) if i != axis % len(shape)))
        out.append({"x": x.astype(np.float32)})
    return out


def _gemm_model(rng, n_in=24, n_out=20, opset=13):
    w = _structured((n_out, n_in), rng)  # (out, in): transB=1
    inits = {"w": w, "b": rng.normal(size=n_out)}
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1, alpha=1.5, beta=0.5)
    return _model([node], [("x", [4, n_in])], ["y"], inits, opset), w.T * 1.5


def _conv_model(rng, opset=13, c_in=6, c_out=10):
    w = _structured((c_out, c_in, 3, 3), rng, decay=0.7)
    inits = {"w": w, "b": rng.normal(size=c_out)}
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1], strides=[2, 1])
    return _model([node], [("x", [2, c_in, 9, 8])], ["y"], inits, opset), w


def _outputs(model, samples):
    runs = [run_model(model, feed) for feed in samples]
    return {k: np.concatenate([r[k] for r in runs]) for k in runs[0]}


def _assert_same_outputs(before, after, samples):
    ref, got = _outputs(before, samples), _outputs(after, samples)
    assert ref.keys() == got.keys()
    for name in ref:
        np.testing.assert_allclose(got[name], ref[name], rtol=1e-4, atol=1e-4, err_msg=name)


def _ops(model):
    return [(n.op_type, n.name) for n in model.graph.node]


def _init_shapes(model, node):
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    return [inits.get(i) for i in node.input[1:]]


@pytest.mark.parametrize("opset", [11, 13, 21])
def test_full_rank_is_exact_for_gemm_matmul_and_conv(opset):
    rng = np.random.default_rng(opset)
    w1 = _structured((5, 8, 3, 3), rng)
    w2 = _structured((5, 8), rng)
    inits = {"w1": w1, "b1": rng.normal(size=5), "w2": w2, "w3": _structured((6, 8), rng), "c3": rng.normal(size=6)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["h"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["h"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "w2"], ["m"], name="mm"),
             helper.make_node("Gemm", ["m", "w3", "c3"], ["y"], name="fc", transB=1)]
    model = _model(nodes, [("x", [3, 8, 6, 6])], ["y", "r"], inits, opset)
    samples = _samples((3, 8, 6, 6), 5, rng)
    rewrite = LowRank(Activations(model, samples), rank=10_000)
    result = rewrite(model)
    assert result.modified
    onnx.checker.check_model(result.model, full_check=True)
    layers = rewrite.variant.detail["layers"]
    assert {k: v["rank"] for k, v in layers.items()} == {"conv": 5, "mm": 5, "fc": 6}
    assert all(v["fit_error"] < 1e-6 for v in layers.values())
    _assert_same_outputs(model, result.model, _samples((3, 8, 6, 6), 2, rng))


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_torch_model_full_rank_is_exact_and_levels_shrink_flops(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 12, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(12, 16, 3, stride=2), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(16 * 3 * 3, 10)).eval()
    path = tmp_path / "net.onnx"
    torch.onnx.export(net, (torch.zeros(2, 3, 8, 8),), str(path), dynamo=False, opset_version=13,
                      input_names=["x"], output_names=["y"])
    model = onnx.load(str(path))
    rng = np.random.default_rng(1)
    acts = Activations(model, _samples((2, 3, 8, 8), 6, rng))
    exact = LowRank(acts, rank=10_000)(model)
    assert sorted(n.op_type for n in exact.model.graph.node) == ["Conv"] * 4 + ["Flatten"] + ["Gemm"] * 2 + ["Relu"] * 2
    _assert_same_outputs(model, exact.model, _samples((2, 3, 8, 8), 2, rng))
    found = variants(model, acts, levels=(0.25, 0.5, 0.75))
    assert [v.level for v in found] == [0.25, 0.5, 0.75]
    after = [v.flops_after for v in found]
    assert after == sorted(after) and after[-1] < found[0].flops_before
    errors = [max(layer["fit_error"] for layer in v.detail["layers"].values()) for v in found]
    assert errors == sorted(errors, reverse=True)


def test_gemm_whitened_fit_beats_plain_svd_on_calibration_data():
    rng = np.random.default_rng(2)
    model, w = _gemm_model(rng)
    scales = 3.0 * 0.7 ** np.arange(24)
    samples = _samples((4, 24), 40, rng, scales[rng.permutation(24)])
    acts = Activations(model, samples)
    x = np.concatenate([s["x"] for s in samples]).astype(np.float64)
    y = _outputs(model, samples)["y"].astype(np.float64)
    bias = y - x @ w  # the (scaled) bias, broadcast
    u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    ratios = []
    for rank in (1, 3, 6, 10):
        ours = _outputs(LowRank(acts, rank=rank)(model).model, samples)["y"]
        plain = x @ ((u[:, :rank] * s[:rank]) @ vt[:rank]) + bias
        err_ours, err_plain = np.linalg.norm(ours - y), np.linalg.norm(plain - y)
        assert err_ours <= err_plain * (1 + 1e-4), rank
        ratios.append(err_ours / err_plain)
    assert min(ratios) < 0.5  # the input's anisotropy matters
    full = LowRank(acts, rank=20)(model).model  # transB, alpha and beta at full rank: exact
    _assert_same_outputs(model, full, _samples((4, 24), 2, rng))


def test_conv_response_fit_beats_plain_svd_on_calibration_data():
    rng = np.random.default_rng(3)
    model, w = _conv_model(rng)
    samples = _samples((2, 6, 9, 8), 6, rng, np.array([4.0, 0.2, 1.0, 0.1, 2.0, 0.05]))
    acts = Activations(model, samples)
    y = _outputs(model, samples)["y"]
    mat = w.reshape(w.shape[0], -1).astype(np.float64)
    u, s, vt = np.linalg.svd(mat, full_matrices=False)
    ratios = []
    for rank in (1, 2, 4, 7):
        rewrite = LowRank(acts, rank=rank)
        ours = _outputs(rewrite(model).model, samples)["y"]
        truncated = ((u[:, :rank] * s[:rank]) @ vt[:rank]).reshape(w.shape)
        plain_model = _conv_model(np.random.default_rng(3))[0]
        plain_model.graph.initializer[0].CopyFrom(numpy_helper.from_array(truncated.astype(np.float32), "w"))
        plain = _outputs(plain_model, samples)["y"]
        err_ours, err_plain = np.linalg.norm(ours - y), np.linalg.norm(plain - y)
        assert err_ours <= err_plain * (1 + 1e-4), rank
        responses = np.linalg.norm(y - _bias_part(model, y))
        assert rewrite.variant.detail["layers"]["conv"]["fit_error"] == pytest.approx(err_ours / responses, rel=1e-3)
        ratios.append(err_ours / err_plain)
    assert min(ratios) < 0.9  # the channel scales matter


def _bias_part(model, y):
    """The Conv bias broadcast over ``y`` (the fit error is relative to the pre-bias responses)."""
    bias = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}["b"]
    return np.broadcast_to(bias.reshape(1, -1, 1, 1), y.shape)


def test_golden_structure_conv_and_gemm():
    rng = np.random.default_rng(4)
    conv, _ = _conv_model(rng)
    result = LowRank(Activations(conv, _samples((2, 6, 9, 8), 3, rng)), rank=4)(conv).model
    assert _ops(result) == [("Conv", "conv/lowrank"), ("Conv", "conv")]
    first, second = result.graph.node
    assert _init_shapes(result, first) == [(4, 6, 3, 3)]
    assert _init_shapes(result, second) == [(10, 4, 1, 1), (10,)]
    assert list(second.input)[2] == "b"
    attrs = {a.name: helper.get_attribute_value(a) for a in first.attribute}
    assert attrs == {"pads": [1, 1, 1, 1], "strides": [2, 1]}
    assert {a.name: helper.get_attribute_value(a) for a in second.attribute} == {"kernel_shape": [1, 1]}
    assert sorted(t.name for t in result.graph.initializer) == ["b", "conv/lowrank/w1", "conv/lowrank/w2"]

    gemm, _ = _gemm_model(rng)
    result = LowRank(Activations(gemm, _samples((4, 24), 8, rng)), rank=5)(gemm).model
    assert _ops(result) == [("Gemm", "fc/lowrank"), ("Gemm", "fc")]
    first, second = result.graph.node
    assert _init_shapes(result, first) == [(24, 5)] and _init_shapes(result, second) == [(5, 20), (20,)]
    assert {a.name: helper.get_attribute_value(a) for a in second.attribute} == {"beta": 0.5}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in onnx.shape_inference.infer_shapes(result).graph.value_info}
    assert shapes["y/lowrank"] == [4, 5]


def test_level_picks_the_largest_rank_within_the_flops_budget():
    rng = np.random.default_rng(5)
    model, _ = _conv_model(rng, c_in=8, c_out=16)
    acts = Activations(model, _samples((2, 8, 9, 8), 3, rng))
    original = import_model(model).node("conv").flops
    for level in (0.3, 0.6):
        rewrite = LowRank(acts, level=level)
        rewritten = import_model(rewrite(model).model)
        rank = rewrite.variant.detail["layers"]["conv"]["rank"]
        factored = rewritten.node("conv/lowrank").flops + rewritten.node("conv").flops
        assert factored <= level * original
        assert rewrite.variant.flops_after == pytest.approx(factored)
        bigger = import_model(LowRank(acts, rank=rank + 1)(model).model)
        assert bigger.node("conv/lowrank").flops + bigger.node("conv").flops > level * original


def test_scope_limits_the_rewrite():
    rng = np.random.default_rng(6)
    inits = {"w1": _structured((16, 16), rng), "w2": _structured((16, 16), rng)}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm2")]
    model = _model(nodes, [("x", [2, 5, 16])], ["y"], inits)
    rewrite = LowRank(Activations(model, _samples((2, 5, 16), 3, rng)), scope={"mm2"}, level=0.5)
    result = rewrite(model)
    assert _ops(result.model) == [("MatMul", "mm1"), ("MatMul", "mm2/lowrank"), ("MatMul", "mm2")]
    assert list(rewrite.variant.detail["layers"]) == ["mm2"] and rewrite.variant.detail["layers"]["mm2"]["rank"] == 4
    assert rewrite.variant.flops_after < rewrite.variant.flops_before


def test_does_not_apply_with_the_reason():
    rng = np.random.default_rng(7)
    relu = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")], [("x", [2, 4])], ["y"], {})
    result = LowRank(Activations(relu, _samples((2, 4), 2, rng)))(relu)
    assert not result.modified and result.reason == NOTHING_ELIGIBLE and result.model is relu

    conv, _ = _conv_model(rng)
    result = LowRank(Activations(conv, _samples((2, 6, 9, 8), 2, rng)), scope={"other"})(conv)
    assert not result.modified and result.reason == NOTHING_ELIGIBLE

    dw = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="dw", group=4)], [("x", [1, 4, 5, 5])], ["y"],
                {"w": rng.normal(size=(4, 1, 3, 3))})
    result = LowRank(Activations(dw, _samples((1, 4, 5, 5), 2, rng)))(dw)
    assert not result.modified and result.reason == "dw: grouped Conv (group 4)"

    tiny = _model([helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [("x", [3, 2])], ["y"],
                  {"w": rng.normal(size=(2, 2))})
    rewrite = LowRank(Activations(tiny, _samples((3, 2), 2, rng)), level=0.9)
    result = rewrite(tiny)
    assert not result.modified and result.reason == "mm: no rank saves FLOPs" and rewrite.variant is None
    with pytest.raises(SplitcError, match="no rank saves FLOPs"):
        rewrite.apply(tiny)


def test_skipped_layers_are_reported_beside_the_factored_ones():
    rng = np.random.default_rng(8)
    inits = {"w1": _structured((32, 32), rng), "w2": rng.normal(size=(32, 2))}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="big"),
             helper.make_node("MatMul", ["h", "w2"], ["y"], name="narrow")]
    model = _model(nodes, [("x", [4, 32])], ["y"], inits)
    rewrite = LowRank(Activations(model, _samples((4, 32), 3, rng)), level=0.25)
    assert rewrite(model).modified
    assert list(rewrite.variant.detail["layers"]) == ["big"]
    assert rewrite.variant.detail["skipped"] == {"narrow": "no rank keeps the FLOPs within 0.25 of the layer's"}


def test_bad_arguments_are_user_errors():
    rng = np.random.default_rng(9)
    model, _ = _gemm_model(rng)
    acts = Activations(model, _samples((4, 24), 2, rng))
    with pytest.raises(SplitcError, match="rank of at least 1"):
        LowRank(acts, rank=0)
    with pytest.raises(SplitcError, match="fraction of FLOPs"):
        LowRank(acts, level=1.5)
