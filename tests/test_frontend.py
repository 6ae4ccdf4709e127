"""Frontend: loading, external data, Constant weights, opsets, shapes, and bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from splitc.testing import zoo
from splitc.errors import ModelError, ShapeError
from splitc.frontend import import_model, subgraph_captures
from splitc.ir import verify
from tests.conftest import LIGHT_MODELS, light_ids


@pytest.mark.parametrize("path", LIGHT_MODELS, ids=light_ids())
def test_light_models_import_and_verify(path: Path) -> None:
    graph = import_model(path)
    verify(graph)
    assert graph.data_nodes, "every real model has data nodes"
    # the light models compute their weights with ConstantOfShape: those nodes are constants
    assert all(n.constant for n in graph.nodes if n.op_type == "ConstantOfShape")
    for node in graph.data_nodes:
        for value in node.outputs:
            if value.consumers or value.is_graph_output:
                assert value.shape is not None and value.nbytes > 0


def test_resnet50_flops_match_published_figure() -> None:
    graph = import_model(next(p for p in LIGHT_MODELS if "resnet50" in p.name))
    gflops = sum(n.flops for n in graph.data_nodes) / 1e9
    # ResNet-50 is 4.1 GMACs at 224x224, i.e. about 8.2 GFLOPs
    assert 7.8 < gflops < 8.6


def test_conv_flops_exact() -> None:
    model = onnx.parser.parse_model(
        """<ir_version: 8, opset_import: ["" : 13]>
        g (float[1,3,8,8] x) => (float[1,4,8,8] y) <float[4,3,3,3] w = {0.0}, float[4] b = {0.0}> {
            y = Conv <pads = [1,1,1,1]> (x, w, b)
        }"""
    )
    model.graph.initializer[0].CopyFrom(helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], [0.0] * 108))
    model.graph.initializer[1].CopyFrom(helper.make_tensor("b", TensorProto.FLOAT, [4], [0.0] * 4))
    graph = import_model(model)
    (node,) = graph.data_nodes
    assert node.flops == 4 * 8 * 8 * (2 * 27 + 1)
    assert graph.values["y"].nbytes == 4 * 8 * 8 * 4


def test_constant_node_weights_are_constants() -> None:
    graph = import_model(zoo.build("constant_weights"))
    verify(graph)
    constants = [n for n in graph.nodes if n.op_type == "Constant"]
    assert constants and all(n.constant for n in constants)
    assert all(not n.constant for n in graph.nodes if n.op_type == "Conv")


def test_control_flow_captures_are_implicit_inputs() -> None:
    model = zoo.build("control_flow")
    graph = import_model(model)
    (node,) = [n for n in graph.nodes if n.op_type == "If"]
    captured = subgraph_captures(node.proto)
    assert captured, "the If reads an outer-scope tensor"
    assert [v.name for v in node.implicit_inputs] == captured
    for value in node.implicit_inputs:
        assert node in value.consumers


def test_opset7_model_imports() -> None:
    graph = import_model(zoo.build("opset7_cnn"))
    verify(graph)
    assert graph.model.opset_import[0].version == 7


def test_opset_older_than_7_is_rejected(tmp_path: Path) -> None:
    model = zoo.build("opset7_cnn")
    model.opset_import[0].version = 6
    path = tmp_path / "old.onnx"
    onnx.save(model, path)
    with pytest.raises(ModelError, match="opset 6 is older than 7"):
        import_model(path)


def test_external_data_round_trip(tmp_path: Path) -> None:
    model = zoo.build("resnet_blocks")
    originals = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    assert path.stat().st_size < 20_000, "the weights live in the .data file"
    graph = import_model(path)
    weights = {t.name: onnx.numpy_helper.to_array(t) for t in graph.model.graph.initializer}
    assert weights.keys() == originals.keys()
    for name in weights:
        np.testing.assert_array_equal(weights[name], originals[name])


def test_missing_external_data(tmp_path: Path) -> None:
    model = zoo.build("resnet_blocks")
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    (tmp_path / "ext.onnx.data").unlink()
    with pytest.raises(ModelError, match="missing external data file 'ext.onnx.data'"):
        import_model(path)


def test_truncated_external_data(tmp_path: Path) -> None:
    model = zoo.build("resnet_blocks")
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="ext.onnx.data", size_threshold=0)
    data = tmp_path / "ext.onnx.data"
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(ModelError, match="truncated"):
        import_model(path)


def test_not_onnx_and_truncated_files(tmp_path: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    with pytest.raises(ModelError, match="notes.onnx"):
        import_model(text)
    good = tmp_path / "good.onnx"
    onnx.save(zoo.build("chain_cnn"), good)
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ModelError, match="cut.onnx"):
        import_model(cut)
    with pytest.raises(ModelError, match="no such file"):
        import_model(tmp_path / "absent.onnx")


def _dynamic_model(dims: list) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], name="relu")], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_dynamic_batch_defaults_to_one() -> None:
    graph = import_model(_dynamic_model(["N", 3, 4]))
    assert graph.values["y"].shape == (1, 3, 4)


def test_input_shape_override() -> None:
    graph = import_model(_dynamic_model(["N", "C", 4]), {"x": (2, 5, 4)})
    assert graph.values["y"].shape == (2, 5, 4)


def test_unresolved_dynamic_dimension_names_it() -> None:
    with pytest.raises(ShapeError, match=r"input 'x' has dynamic dimension 1 \(C\)"):
        import_model(_dynamic_model(["N", "C", 4]))


def test_input_shape_for_unknown_input() -> None:
    with pytest.raises(ShapeError, match="'z', which is not a model input"):
        import_model(_dynamic_model([1, 3, 4]), {"z": (1, 3, 4)})


def test_op_without_shape_inference_blocks_costing() -> None:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    nodes = [helper.make_node("Mystery", ["x"], ["m"], name="mystery", domain="com.example"),
             helper.make_node("Relu", ["m"], ["y"], name="relu")]
    graph = helper.make_graph(nodes, "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.example", 1)])
    with pytest.raises(ShapeError, match=r"'m' \(output of node 'mystery', op com.example.Mystery\)"):
        import_model(model)


def test_models_over_the_protobuf_limit_are_inferred_on_a_skeleton(monkeypatch) -> None:
    """Shape inference of a > 2 GB model runs on a copy whose big weights are typed inputs."""
    from splitc.frontend import shapes

    model = zoo.build("resnet_blocks")
    expected = import_model(model)
    monkeypatch.setattr(shapes, "_TWO_GB", 10_000)
    monkeypatch.setattr(shapes, "_BIG_WEIGHT", 1_000)
    skeleton = shapes.skeleton(model)
    assert len(skeleton.graph.initializer) < len(model.graph.initializer)
    graph = import_model(model)
    assert {n: v.shape for n, v in graph.values.items()} == {n: v.shape for n, v in expected.values.items()}
    assert len(graph.model.graph.initializer) == len(model.graph.initializer)
