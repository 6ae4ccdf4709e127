"""Golden before/after tests of each pass: a small graph in ``onnx.parser`` text, one pass, the exact result.

Each pass also has a case where it does not apply, asserting the reason it gives.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnx.parser
import pytest
from onnx import TensorProto, helper

from splitc.frontend import import_model
from splitc.passes import precision, qdq
from splitc.passes.base import Pass, PassError, PassManager, PassRecord, PassResult
from splitc.passes.dce import DeadCodeElimination

EDGE = """<ir_version: 8, opset_import: ["" : 13]>
edge (float[1,2,4] x) => (float[1,2,4] t) {
    t = Relu(x)
}"""

CLOUD = """<ir_version: 8, opset_import: ["" : 13]>
cloud (float[1,2,4] t) => (float[1,2,4] y) {
    y = Sigmoid(t)
}"""

P = "t/quantize"
QUANTIZER_TAIL = [  # the quantizer after its ReduceMin/ReduceMax, reading ``x`` (the float32 tensor)
    ("Constant", f"{P}/levels", [], [f"{P}/levels"]),
    ("Constant", f"{P}/tiny", [], [f"{P}/tiny"]),
    ("Constant", f"{P}/half", [], [f"{P}/half"]),
    ("Sub", f"{P}/range", ["t.max", "t.min"], [f"{P}/range"]),
    ("Max", f"{P}/safe", [f"{P}/range", f"{P}/tiny"], [f"{P}/safe"]),
    ("Div", f"{P}/scale", [f"{P}/levels", f"{P}/safe"], [f"{P}/scale"]),
    ("Sub", f"{P}/shifted", ["{x}", "t.min"], [f"{P}/shifted"]),
    ("Mul", f"{P}/scaled", [f"{P}/shifted", f"{P}/scale"], [f"{P}/scaled"]),
    ("Add", f"{P}/biased", [f"{P}/scaled", f"{P}/half"], [f"{P}/biased"]),
    ("Floor", f"{P}/rounded", [f"{P}/biased"], [f"{P}/rounded"]),
    ("Cast", f"{P}/cast", [f"{P}/rounded"], ["t.q"]),
]


def _tail(x: str) -> list[tuple]:
    return [(op, name, [x if i == "{x}" else i for i in ins], outs) for op, name, ins, outs in QUANTIZER_TAIL]


def _nodes(model: onnx.ModelProto) -> list[tuple]:
    return [(n.op_type, n.name, list(n.input), list(n.output)) for n in model.graph.node]


def _io(values) -> list[tuple]:
    def dtype(v):
        return helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name

    return [(v.name, dtype(v), [d.dim_value for d in v.type.tensor_type.shape.dim]) for v in values]


def _attrs(model: onnx.ModelProto, name: str) -> dict:
    node = next(n for n in model.graph.node if n.name == name)
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def test_insert_quantize_golden() -> None:
    model = onnx.parser.parse_model(EDGE)
    result = qdq.InsertQuantize([qdq.Encoding("t", 4)])(model)
    assert result.modified and result.model is model  # in place
    assert _nodes(model) == [
        ("Relu", "", ["x"], ["t"]),
        ("ReduceMin", f"{P}/min", ["t"], ["t.min"]),
        ("ReduceMax", f"{P}/max", ["t"], ["t.max"]),
        *_tail("t"),
    ]
    assert _io(model.graph.input) == [("x", "float32", [1, 2, 4])]
    assert _io(model.graph.output) == [("t.q", "uint8", [1, 2, 4]), ("t.min", "float32", []),
                                       ("t.max", "float32", [])]
    assert _attrs(model, f"{P}/min") == {"keepdims": 0}
    assert _attrs(model, f"{P}/cast") == {"to": TensorProto.UINT8}
    assert onnx.numpy_helper.to_array(_attrs(model, f"{P}/levels")["value"]) == np.float32(15)


def test_insert_quantize_per_channel_float16_opset18_golden() -> None:
    """A float16 tensor is widened first; at opset 18 the reduction axes are a Constant input."""
    text = EDGE.replace('"" : 13', '"" : 18').replace("float[", "float16[")
    model = onnx.parser.parse_model(text)
    qdq.InsertQuantize([qdq.Encoding("t", 2, axis=1, dtype="float16")])(model)
    assert _nodes(model) == [
        ("Relu", "", ["x"], ["t"]),
        ("Cast", f"{P}/to_f32", ["t"], [f"{P}/f32"]),
        ("Constant", f"{P}/min/axes", [], ["t.min/axes"]),
        ("ReduceMin", f"{P}/min", [f"{P}/f32", "t.min/axes"], ["t.min"]),
        ("Constant", f"{P}/max/axes", [], ["t.max/axes"]),
        ("ReduceMax", f"{P}/max", [f"{P}/f32", "t.max/axes"], ["t.max"]),
        *_tail(f"{P}/f32"),
    ]
    assert _io(model.graph.output) == [("t.q", "uint8", [1, 2, 4]), ("t.min", "float32", [1, 2, 1]),
                                       ("t.max", "float32", [1, 2, 1])]
    assert onnx.numpy_helper.to_array(_attrs(model, f"{P}/min/axes")["value"]).tolist() == [0, 2]


def test_insert_quantize_keeps_a_model_output_and_casts_16_bits() -> None:
    model = onnx.parser.parse_model(EDGE)
    qdq.InsertQuantize([qdq.Encoding("t", 16)], keep={"t"})(model)
    assert _nodes(model) == [("Relu", "", ["x"], ["t"]), ("Cast", "t/to_f16", ["t"], ["t.f16"])]
    assert _io(model.graph.output) == [("t", "float32", [1, 2, 4]), ("t.f16", "float16", [1, 2, 4])]


def test_insert_quantize_not_applicable() -> None:
    model = onnx.parser.parse_model(EDGE)
    before = model.SerializeToString()
    result = qdq.InsertQuantize([qdq.Encoding("t", 32), qdq.Encoding("ids", 32, dtype="int64")])(model)
    assert not result.modified
    assert result.reason == "no cut tensor is quantized (bits 32 or exact arrays)"
    assert model.SerializeToString() == before


def test_insert_quantize_requires_the_cut_as_output() -> None:
    with pytest.raises(PassError, match="not outputs of the edge half: \\['u'\\]"):
        qdq.InsertQuantize([qdq.Encoding("u", 4)])(onnx.parser.parse_model(EDGE))


def test_insert_dequantize_golden() -> None:
    model = onnx.parser.parse_model(CLOUD)
    result = qdq.InsertDequantize([qdq.Encoding("t", 4, axis=1)])(model)
    assert result.modified and result.model is model
    d = "t/dequantize"
    assert _nodes(model) == [
        ("Constant", f"{d}/levels", [], [f"{d}/levels"]),
        ("Cast", f"{d}/cast", ["t.q"], [f"{d}/qf"]),
        ("Sub", f"{d}/range", ["t.max", "t.min"], [f"{d}/range"]),
        ("Div", f"{d}/step", [f"{d}/range", f"{d}/levels"], [f"{d}/step"]),
        ("Mul", f"{d}/scaled", [f"{d}/qf", f"{d}/step"], [f"{d}/scaled"]),
        ("Add", f"{d}/shift", [f"{d}/scaled", "t.min"], ["t"]),
        ("Sigmoid", "", ["t"], ["y"]),
    ]
    assert _io(model.graph.input) == [("t.q", "uint8", [1, 2, 4]), ("t.min", "float32", [1, 2, 1]),
                                      ("t.max", "float32", [1, 2, 1])]
    assert _io(model.graph.output) == [("y", "float32", [1, 2, 4])]
    assert _attrs(model, f"{d}/cast") == {"to": TensorProto.FLOAT}


def test_insert_dequantize_not_applicable() -> None:
    model = onnx.parser.parse_model(CLOUD)
    result = qdq.InsertDequantize([])(model)
    assert not result.modified
    assert result.reason == "no cut tensor is quantized (bits 32 or exact arrays)"
    assert _nodes(model) == [("Sigmoid", "", ["t"], ["y"])]


FP32_EDGE = """<ir_version: 8, opset_import: ["" : 13]>
edge (float[1,4] x) => (float[1,4] y) <float[4] b = {1.0, 2.0, 3.0, 4.0}> {
    h = Relu(x)
    y = Add(h, b)
}"""


def test_to_float16_edge_golden() -> None:
    model = onnx.parser.parse_model(FP32_EDGE)
    result = precision.ToFloat16Edge()(model)
    half = result.model
    assert result.modified and half is not model  # a new model; the argument is left as it was
    assert _nodes(half) == [
        ("Cast", "graph_input_cast0", ["x"], ["graph_input_cast_0"]),
        ("Relu", "", ["graph_input_cast_0"], ["h"]),
        ("Add", "", ["h", "b"], ["graph_output_cast_0"]),
        ("Cast", "graph_output_cast0", ["graph_output_cast_0"], ["y"]),
    ]
    assert _io(half.graph.input) == [("x", "float32", [1, 4])]
    assert _io(half.graph.output) == [("y", "float32", [1, 4])]
    assert [(t.name, t.data_type) for t in half.graph.initializer] == [("b", TensorProto.FLOAT16)]
    assert _attrs(half, "graph_input_cast0") == {"to": TensorProto.FLOAT16}
    assert _nodes(model)[0] == ("Relu", "", ["x"], ["h"])


def test_to_float16_edge_not_applicable() -> None:
    text = """<ir_version: 8, opset_import: ["" : 13]>
    edge (float[1,4] x) => (float[1,4] x) {
    }"""
    result = precision.ToFloat16Edge()(onnx.parser.parse_model(text))
    assert not result.modified and result.reason == "the edge half has no nodes"


DEAD = """<ir_version: 8, opset_import: ["" : 13]>
g (float[1,4] x) => (float[1,4] y) {
    y = Relu(x)
    z = Sigmoid(x)
    w = Neg(z)
}"""


def _ir_nodes(graph) -> list[tuple]:
    return [(n.op_type, n.name, [v.name for v in n.inputs], [v.name for v in n.outputs]) for n in graph.nodes]


def test_dead_code_elimination_golden() -> None:
    graph = import_model(onnx.parser.parse_model(DEAD))
    result = DeadCodeElimination()(graph)
    assert result.modified
    assert _ir_nodes(result.graph) == [("Relu", "Relu_0", ["x"], ["y"])]
    assert [(v.name, v.dtype.name, list(v.shape)) for v in result.graph.outputs] == [("y", "float32", [1, 4])]


def test_dead_code_elimination_not_applicable() -> None:
    graph = import_model(onnx.parser.parse_model(DEAD.replace("    z = Sigmoid(x)\n    w = Neg(z)\n", "")))
    result = DeadCodeElimination()(graph)
    assert not result.modified and result.reason == "every node reaches a graph output"


def test_pass_manager_records_each_pass() -> None:
    model = onnx.parser.parse_model(EDGE)
    passes = [qdq.InsertQuantize([qdq.Encoding("t", 32)]), qdq.InsertQuantize([qdq.Encoding("t", 8)])]
    result = PassManager(passes)(model)
    assert result.modified
    assert result.records == [PassRecord("insert-quantize", False, qdq.NOT_QUANTIZED),
                              PassRecord("insert-quantize", True)]
    assert [r.to_json() for r in result.records] == [
        {"name": "insert-quantize", "applied": False, "reason": qdq.NOT_QUANTIZED},
        {"name": "insert-quantize", "applied": True},
    ]


def test_pass_manager_names_the_passes_that_ran() -> None:
    graph = import_model(onnx.parser.parse_model(DEAD))

    class Broken(Pass):
        name = "broken"

        def run(self, model):
            raise ValueError("boom")

    with pytest.raises(PassError, match=r"pass 'broken' failed \(after: dead-code-elimination\): boom"):
        PassManager([DeadCodeElimination(), Broken()])(graph)


def test_a_pass_that_does_not_apply_must_say_why() -> None:
    class Silent(Pass):
        name = "silent"

        def run(self, model):
            return PassResult(model, False)

    with pytest.raises(PassError, match="gave no reason"):
        Silent()(None)


def test_exact_tensors_stay_where_they_are() -> None:
    """A tensor sent at 32 bits (here int64 ids) keeps its place among the outputs; only ``t`` is replaced."""
    text = """<ir_version: 8, opset_import: ["" : 13]>
    edge (float[1,2,4] x, int64[1,3] i) => (int64[1,3] ids, float[1,2,4] t) {
        ids = Identity(i)
        t = Relu(x)
    }"""
    model = onnx.parser.parse_model(text)
    qdq.InsertQuantize([qdq.Encoding("ids", 32, dtype="int64"), qdq.Encoding("t", 8)])(model)
    assert [v[0] for v in _io(model.graph.output)] == ["ids", "t.q", "t.min", "t.max"]


def test_the_plan_records_the_passes() -> None:
    import warnings

    import splitc
    from splitc.testing import zoo

    analysis = splitc.analyse(zoo.build("resnet_blocks"))
    raw = analysis.split(["block2/relu"])
    assert raw.plan["edge"]["passes"] == [{"name": "insert-quantize", "applied": False,
                                           "reason": qdq.NOT_QUANTIZED}]
    assert raw.plan["cloud"]["passes"] == [{"name": "insert-dequantize", "applied": False,
                                            "reason": qdq.NOT_QUANTIZED}]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no --calib: the accuracy is not checked
        split = splitc.compile(zoo.build("resnet_blocks"), bits=8, cut=["block2/relu"])
    assert split.plan["edge"]["passes"] == [{"name": "insert-quantize", "applied": True}]
    assert split.plan["cloud"]["passes"] == [{"name": "insert-dequantize", "applied": True}]


def test_verbose_compile_lists_the_passes_and_why_one_did_not_apply(tmp_path) -> None:
    """`--verbose` prints each half's passes; a raw float32 cut shows the quantizer's reason."""
    import os
    import subprocess
    import sys

    from tests.stitching import DIGITS, DIGITS_MID

    env = {**os.environ, "COLUMNS": "120"}
    result = subprocess.run([sys.executable, "-m", "splitc.cli", str(DIGITS), "--cut", DIGITS_MID, "--bits", "32",
                             "--verbose", "-o", str(tmp_path / "out")], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert "edge pass insert-quantize: not applied: no cut tensor is quantized" in result.stdout
    assert "cloud pass insert-dequantize: not applied" in result.stdout
