"""The pre-import op check of the TVM backend: every node TVM 0.27's ONNX importer cannot take."""

from __future__ import annotations

import onnx
import pytest
from onnx import TensorProto, helper

pytest.importorskip("tvm.relax.frontend.onnx", reason="apache-tvm is not installed (pip install 'splitc[tvm]')")

from splitc.testing import zoo  # noqa: E402
from splitc.backends.tvm.ops import unsupported_nodes  # noqa: E402

FLOAT = TensorProto.FLOAT


def value(name: str, shape=None, dtype=FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def graph_of(nodes: list[onnx.NodeProto], opset: int = 13, domains=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", [value("x", [1, 2, 4, 4]), value("c", [], TensorProto.BOOL)], [value("y")])
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, 1) for d in domains]
    return helper.make_model(graph, opset_imports=opsets)


def test_every_offending_node_is_listed_in_order():
    """Graph order; a node's subgraphs in attribute order (ONNX sorts them: else_branch before then_branch)."""
    loop_body = helper.make_graph([helper.make_node("Identity", ["cond"], ["cond_out"], name="body/id")], "body",
                                  [value("i", [], TensorProto.INT64), value("cond", [], TensorProto.BOOL)],
                                  [value("cond_out", [], TensorProto.BOOL)])
    then_branch = helper.make_graph(
        [helper.make_node("Loop", ["", "c"], [], name="then/loop", body=loop_body),
         helper.make_node("Relu", ["x"], ["t"], name="then/relu")], "then", [], [value("t")])
    else_branch = helper.make_graph([helper.make_node("Scan", ["x"], ["e"], name="else/scan", num_scan_inputs=1,
                                                      body=loop_body)], "else", [], [value("e")])
    nodes = [
        helper.make_node("QLinearConv", ["x"] * 8, ["q"], name="qconv"),
        helper.make_node("ConvInteger", ["x", "x"], ["ci"], name="convint"),
        helper.make_node("Relu", ["x"], ["r"], name="ok/relu"),
        helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_branch, else_branch=else_branch),
        helper.make_node("Upsample", ["x", "s"], ["u"], name="up"),
        helper.make_node("Attention", ["x", "x", "x"], ["a"], name="attn"),
        helper.make_node("GRU", ["x", "w", "r"], ["g"], name="gru"),
        helper.make_node("MyOp", ["x"], ["m"], name="custom", domain="my.ops"),
        helper.make_node("Attention", ["x", "w"], ["ms"], name="ms/attn", domain="com.microsoft"),
    ]
    found = unsupported_nodes(graph_of(nodes, opset=23, domains=["my.ops", "com.microsoft"]))
    assert [(op, name) for op, name, _ in found] == [
        ("QLinearConv", "qconv"), ("ConvInteger", "convint"), ("Scan", "else/scan"), ("Loop", "then/loop"),
        ("Upsample", "up"), ("Attention", "attn"), ("GRU", "gru"), ("MyOp", "custom")]
    reasons = dict(((op, name), why) for op, name, why in found)
    assert "custom domain" in reasons[("MyOp", "custom")] and "opset-23" in reasons[("Attention", "attn")]


def test_zoo_models_pass_including_if():
    """If is translated by 0.27's importer (the control_flow model builds and matches onnxruntime)."""
    for name in zoo.MODELS:
        assert unsupported_nodes(zoo.build(name)) == [], name


def test_unnamed_nodes_get_their_position():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("LSTM", ["r", "w", "w"], ["y"])]
    assert [name for _, name, _ in unsupported_nodes(graph_of(nodes))] == ["#1"]
