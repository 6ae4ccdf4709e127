"""Real-model conformance: what exporters emit compiles, and every cut computes what the model computes.

The models under ``tests/models/`` are real architectures written in torch and
exported with torch 2.13 (``tests/models/make_models.py``), with dynamic axes
as users export them, so their graphs carry ``Shape → Gather → Concat →
Reshape``, ``Range``/meshgrid anchors, ``Resize`` to computed sizes,
bidirectional ``LSTM``/``GRU``, ``Erf``-GELU attention, int64 token inputs,
``TopK``/``NonZero``, NHWC ``Transpose`` sandwiches, opsets 11 to 21.

For every model, at every cut vertex and at the optimum:
* the stitched halves equal the original under onnxruntime (rtol 1e-5; integer outputs exactly);
* the optimum equals the networkx whole-graph oracle;
and for one cut per model, the HTTP runtime returns what the in-process pipeline does.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import splitc
from splitc.errors import ShapeError
from splitc.testing.baselines import whole_graph_networkx
from splitc.partition.pricing import evaluate
from splitc.runtime import EdgeClient, Pipeline
from splitc.runtime.server import ServerThread

MODELS = Path(__file__).resolve().parent / "models"
SHAPES = {
    "yolo_head": {"images": (1, 3, 64, 64)},
    "yolo_head_opset11": {"images": (1, 3, 64, 64)},
    "yolo_head_opset13": {"images": (1, 3, 64, 64)},
    "yolo_head_opset21": {"images": (1, 3, 64, 64)},
    "dbnet_fpn": {"image": (1, 3, 64, 96)},
    "dbnet_fpn_fp16": {"image": (1, 3, 64, 96)},
    "crnn_ctc": {"line": (1, 1, 16, 48)},
    "crnn_ctc_opset11": {"line": (1, 1, 16, 48)},
    "crnn_ctc_opset13": {"line": (1, 1, 16, 48)},
    "encoder_dynamic_seq": {"frames": (1, 10, 16)},
    "token_ids": {"ids": (1, 12)},
    "topk_nonzero": {"image": (1, 3, 32, 32)},
    "nhwc_tf2onnx": {"input_1": (1, 32, 32, 3)},
}
RTOL, ATOL = 1e-5, 1e-5
FP16_TOL = 4e-3  # two float16 ulps (2^-10 each) of relative rounding, doubled


def _feeds(name: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    feeds = {}
    for input_name, shape in SHAPES[name].items():
        if name == "token_ids":
            ids = rng.integers(1, 50, shape)
            ids[..., -3:] = 0  # padding, so the mask matters
            feeds[input_name] = ids.astype(np.int64)
        else:
            dtype = np.float16 if name.endswith("_fp16") else np.float32
            feeds[input_name] = rng.standard_normal(shape).astype(dtype)
    return feeds


def _run(model, feeds):
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, {i.name: feeds[i.name] for i in sess.get_inputs()})))


def _stitched(split, feeds):
    at_edge = _run(split.edge_model, feeds)
    result = dict(at_edge)
    if split.cloud_model is not None:
        result.update(_run(split.cloud_model, {**feeds, **at_edge}))
    return result


def _assert_same(got: dict, want: dict, label: str) -> None:
    for name, value in want.items():
        assert name in got, f"{label}: output {name!r} missing"
        if value.dtype == np.float16:  # float16 kernels fuse and round differently across a cut
            np.testing.assert_allclose(got[name].astype(np.float32), value.astype(np.float32), rtol=FP16_TOL,
                                       atol=FP16_TOL * float(np.abs(value).max()), err_msg=f"{label}: {name}")
        elif np.issubdtype(value.dtype, np.floating):
            np.testing.assert_allclose(got[name], value, rtol=RTOL, atol=ATOL, err_msg=f"{label}: {name}")
        else:
            np.testing.assert_array_equal(got[name], value, err_msg=f"{label}: {name}")
        assert got[name].dtype == value.dtype, label


@pytest.fixture(scope="module")
def analyses():
    found = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, shapes in SHAPES.items():
            found[name] = splitc.analyse(MODELS / f"{name}.onnx", target="raspberry-pi-4", cloud="t4",
                                         bandwidth="20Mbps", input_shapes=shapes)
    return found


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_every_cut_vertex_and_the_optimum_equal_the_model(name, analyses):
    analysis = analyses[name]
    feeds = _feeds(name)
    want = _run(MODELS / f"{name}.onnx", feeds)
    pinned = analysis.graph.data_dependent
    cuts = [[t] for t in analysis.result.cut_vertices if analysis.graph.values[t].consumers and t not in pinned]
    assert cuts, f"{name}: no cut vertex"
    for cut in [None, [], *cuts]:
        split = analysis.split(cut)
        _assert_same(_stitched(split, feeds), want, f"{name} cut {cut}")


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_the_optimum_equals_the_networkx_oracle(name, analyses):
    analysis = analyses[name]
    oracle_ms = evaluate(analysis.problem, whole_graph_networkx(analysis.problem)).total_ms
    assert analysis.result.best.total_ms == pytest.approx(oracle_ms, rel=1e-9, abs=1e-9)


def test_methods_are_recorded(analyses):
    """Exporter patterns onnx cannot resolve are resolved by the later methods, and the report says so."""
    counts = {name: a.graph.shape_report.counts() for name, a in analyses.items()}
    assert counts["yolo_head"].get("symbolic", 0) > 0, counts["yolo_head"]
    assert counts["topk_nonzero"].get("execution", 0) > 0, counts["topk_nonzero"]
    dd = analyses["topk_nonzero"].graph.data_dependent
    assert any("NonZero" in why for why in dd.values()), dd
    plan = analyses["yolo_head"].split().plan
    assert plan["model"]["shapes"]["methods"]["symbolic"] == counts["yolo_head"]["symbolic"]


def test_data_dependent_tensors_never_cross(analyses):
    analysis = analyses["topk_nonzero"]
    dd = set(analysis.graph.data_dependent)
    from splitc.joint import candidate_cuts

    for cut in candidate_cuts(analysis):
        assert not dd & set(cut), cut
    for part in analysis.result.candidates():
        assert not dd & set(part.cut_values)
    with pytest.raises(splitc.errors.CutError, match="depends on the input values"):
        analysis.split([sorted(dd)[0]])


def test_an_integer_input_cut_is_sent_exactly(analyses, tmp_path):
    """Cloud-only on a token model: the int64 ids cross as a plain array, never quantized."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = splitc.compile(MODELS / "token_ids.onnx", input_shapes=SHAPES["token_ids"], cut=["ids"], bits=4)
    entry = split.plan["cut"][0]
    assert entry["dtype"] == "int64" and entry["codec"] == {"name": "array"} and entry["bits"] == 32
    out = split.save(tmp_path / "out")
    feeds = _feeds("token_ids")
    want = _run(MODELS / "token_ids.onnx", feeds)
    got = Pipeline(out).run(feeds)
    _assert_same(got, want, "pipeline")


def test_integer_outputs_come_back_exactly(analyses, tmp_path):
    """TopK indices (int64) computed on the cloud come back over HTTP unchanged."""
    analysis = analyses["topk_nonzero"]
    cut = [v.name for v in analysis.graph.inputs]
    out = analysis.split(cut).save(tmp_path / "out")
    feeds = _feeds("topk_nonzero")
    want = _run(MODELS / "topk_nonzero.onnx", feeds)
    with ServerThread(out) as running, EdgeClient(out, running.url, retries=0, timeout=30) as client:
        got = client.run(feeds)
    _assert_same(got, want, "http")


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_http_runtime_equals_the_pipeline(name, analyses, tmp_path):
    analysis = analyses[name]
    mids = [t for t in analysis.result.cut_vertices if analysis.graph.values[t].consumers
            and t not in analysis.graph.data_dependent]
    cut = [mids[len(mids) // 2]]
    out = analysis.split(cut).save(tmp_path / "out")
    feeds = _feeds(name, seed=1)
    local = Pipeline(out).run(feeds)
    with ServerThread(out) as running, EdgeClient(out, running.url, retries=0, timeout=30) as client:
        remote = client.run(feeds)
    for key, value in local.items():
        np.testing.assert_array_equal(remote[key], value)


def test_mixed_float_and_integer_cut_over_http(tmp_path):
    """A cut of a float tensor and an int64 tensor, quantized float + exact ints, through the codec and HTTP."""
    emb = numpy_helper.from_array(np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32), "emb")
    axes = numpy_helper.from_array(np.array([2], np.int64), "axes")
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"], name="embed"),
        helper.make_node("Relu", ["e"], ["h"], name="act"),
        helper.make_node("Cast", ["ids"], ["idsf"], to=TensorProto.FLOAT, name="mask_cast"),
        helper.make_node("Unsqueeze", ["idsf", "axes"], ["mask"], name="mask"),
        helper.make_node("Mul", ["h", "mask"], ["y"], name="apply"),
        helper.make_node("ArgMax", ["y"], ["best"], axis=2, keepdims=0, name="argmax"),
    ]
    graph = helper.make_graph(nodes, "mixed", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 8]),
                               helper.make_tensor_value_info("best", TensorProto.INT64, [1, 6])],
                              initializer=[emb, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = splitc.compile(model, cut=["h", "ids"], bits=8, codec="huffman")
    kinds = {c["tensor"]: (c["bits"], c["codec"]["name"]) for c in split.plan["cut"]}
    assert kinds == {"h": (8, "huffman"), "ids": (32, "array")}
    out = split.save(tmp_path / "out")
    feeds = {"ids": np.array([[3, 0, 7, 19, 1, 0]], np.int64)}
    want = _run(model, feeds)
    local = Pipeline(out).run(feeds)
    np.testing.assert_allclose(local["y"], want["y"], atol=float(np.abs(want["y"]).max()) / 255 + 1e-6)
    with ServerThread(out) as running, EdgeClient(out, running.url, retries=0, timeout=30) as client:
        remote = client.run(feeds)
    np.testing.assert_array_equal(remote["y"], local["y"])
    np.testing.assert_array_equal(remote["best"], local["best"])
    assert remote["best"].dtype == np.int64


def test_integer_input_never_offered_quantized():
    """A token model's cloud-only candidate is sent exactly: no bit width applies to int64 ids."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = splitc.compile(MODELS / "token_ids.onnx", input_shapes=SHAPES["token_ids"], bandwidth="1Gbps",
                               target="raspberry-pi-4", cloud="h100", rtt="0ms")
    for option in split.plan["selection"]["runners_up"] + [split.plan["selection"]["chosen"]]:
        if option["cut"] == ["ids"]:
            assert option["bits"] == 32, option


# ------------------------------------------------------------------------ bad input


def _custom_op_model(resolvable: bool) -> onnx.ModelProto:
    """A custom-domain op only a custom runtime could execute; its output shape is declared or not."""
    nodes = [helper.make_node("Relu", ["x"], ["a"], name="pre"),
             helper.make_node("FancyNorm", ["a"], ["b"], domain="com.vendor", name="fancy"),
             helper.make_node("Relu", ["b"], ["y"], name="post")]
    infos = [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 4])] if resolvable else []
    graph = helper.make_graph(nodes, "custom", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], value_info=infos)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.vendor", 1)])


def test_an_unrunnable_model_still_compiles_when_onnx_resolves_every_shape():
    analysis = splitc.analyse(_custom_op_model(resolvable=True))
    assert analysis.graph.shape_report.tried == ["onnx"]


def test_an_unresolvable_shape_is_one_line_naming_tensor_node_op_and_methods(tmp_path):
    with pytest.raises(ShapeError) as caught:
        splitc.analyse(_custom_op_model(resolvable=False))
    message = str(caught.value)
    for part in ("'b'", "'fancy'", "com.vendor.FancyNorm", "onnx", "symbolic", "execution"):
        assert part in message, message
    path = tmp_path / "custom.onnx"
    onnx.save(_custom_op_model(resolvable=False), path)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "splitc.cli", str(path), "-o", str(out)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and "com.vendor.FancyNorm" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not out.exists()


def test_inspect_lists_the_resolution_methods():
    result = subprocess.run([sys.executable, "-m", "splitc.cli", "inspect", str(MODELS / "yolo_head.onnx"),
                             "--input-shape", "images=1x3x64x64", "--json"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["shapes"]["methods"]["symbolic"] > 0
    assert info["shapes"]["methods"]["onnx"] > 0


def test_a_model_over_2gb_with_external_data(tmp_path):
    """Two 1.07 GB embedding tables in external data (2.15 GB in all): shapes resolve, the halves equal the model."""
    rows, width = 262_272, 1024  # 1,074,266,112 bytes each; protobuf holds at most 2 GB in one message
    tables = [numpy_helper.from_array(np.full((rows, width), k + 1.0, np.float32), f"table{k}") for k in range(2)]
    proj = numpy_helper.from_array(np.full((width, 8), 0.01, np.float32), "proj")
    flat = numpy_helper.from_array(np.array([1, -1], np.int64), "flat")
    nodes = [helper.make_node("Gather", ["table0", "ids"], ["e0"], name="embed0"),
             helper.make_node("Gather", ["table1", "ids"], ["e1"], name="embed1"),
             helper.make_node("Add", ["e0", "e1"], ["e"], name="sum"),
             helper.make_node("MatMul", ["e", "proj"], ["p"], name="project"),
             helper.make_node("Reshape", ["p", "flat"], ["y0"], name="flatten"),
             helper.make_node("Relu", ["y0"], ["y"], name="act")]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", "k"])],
                              initializer=[*tables, proj, flat])
    del tables
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    del graph
    path = tmp_path / "big.onnx"
    onnx.save_model(model, path, save_as_external_data=True, location="big.data", size_threshold=1 << 20)
    del model
    try:
        _check_big(path, tmp_path, rows)
    finally:  # 6 GB of files: do not leave them to pytest's retained temporary directories
        shutil.rmtree(tmp_path, ignore_errors=True)


def _check_big(path: Path, tmp_path: Path, rows: int) -> None:
    analysis = splitc.analyse(path, input_shapes={"ids": (1, 4)})
    assert analysis.graph.values["y"].shape == (1, 32)
    out = analysis.split(["e"]).save(tmp_path / "out")
    assert (out / "edge.onnx.data").stat().st_size > 2**31
    del analysis
    feeds = {"ids": np.array([[0, 5, rows - 1, 7]], np.int64)}
    got = Pipeline(out).run(feeds)
    np.testing.assert_allclose(got["y"], np.full((1, 32), 3 * 1024 * 0.01, np.float32), rtol=1e-5)


def test_a_token_model_calibrates_with_integer_inputs(tmp_path):
    """With --calib, every candidate of a token model is measured; the ids cut is exact, never quantized."""
    rng = np.random.default_rng(3)
    ids = rng.integers(1, 50, (64, 12))
    ids[:, -3:] = 0
    np.savez(tmp_path / "calib.npz", ids=ids.astype(np.int64))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = splitc.compile(MODELS / "token_ids.onnx", input_shapes=SHAPES["token_ids"], bandwidth="1Gbps",
                               target="raspberry-pi-4", cloud="h100", rtt="0ms", calib=tmp_path / "calib.npz",
                               max_drop=0.2, metric="rel-l2")
    table = json.loads(split.files["calibration.json"])
    widths = {json.dumps(json.loads(k)[1]): v for k, v in table["entries"].items() if json.loads(k)[0] == ["ids"]}
    assert list(widths) == ["32"], widths  # the int64 ids: one exact width, whatever --bits allows
    assert widths["32"]["drop"] in (0.0, None)
    out = split.save(tmp_path / "out")
    feeds = _feeds("token_ids")
    got, want = Pipeline(out).run(feeds), _run(MODELS / "token_ids.onnx", feeds)
    if all(c["bits"] == 32 for c in split.plan["cut"]):
        _assert_same(got, want, "calibrated")
    else:  # a quantized float cut: within the relative-L2 bound it was chosen under
        for name, value in want.items():
            assert np.linalg.norm(got[name] - value) <= 0.2 * np.linalg.norm(value) + 1e-6, name


@pytest.mark.parametrize("name", ["yolo_head", "token_ids", "topk_nonzero", "crnn_ctc_opset11"])
def test_cli_compiles_with_input_shape(name, tmp_path):
    shapes = ",".join(f"{k}={'x'.join(map(str, v))}" for k, v in SHAPES[name].items())
    result = subprocess.run([sys.executable, "-m", "splitc.cli", str(MODELS / f"{name}.onnx"), "--input-shape",
                             shapes, "--target", "raspberry-pi-4", "--bw", "20Mbps", "-o", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    plan = json.loads((tmp_path / "out" / "plan.json").read_text())
    assert plan["model"]["shapes"]["methods"]["onnx"] > 0


def test_every_dynamic_dimension_is_named():
    result = subprocess.run([sys.executable, "-m", "splitc.cli", "inspect", str(MODELS / "yolo_head.onnx")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "dynamic dimensions 2 (height), 3 (width)" in result.stderr
    assert "--input-shape images=1x3xHEIGHTxWIDTH" in result.stderr


def test_a_float16_model_quantizes_through_float32_and_calibrates(analyses, tmp_path):
    """float16 cut tensors: quantized via a Cast to float32 on each side, or sent exactly as float16."""
    analysis = analyses["dbnet_fpn_fp16"]
    mid = [t for t in analysis.result.cut_vertices if analysis.graph.values[t].consumers][2]
    assert analysis.graph.values[mid].dtype == np.float16
    rng = np.random.default_rng(5)
    np.savez(tmp_path / "calib.npz", image=rng.standard_normal((16, 3, 64, 96)).astype(np.float16))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = splitc.compile(MODELS / "dbnet_fpn_fp16.onnx", input_shapes=SHAPES["dbnet_fpn_fp16"], cut=[mid],
                               calib=tmp_path / "calib.npz", metric="rel-l2", max_drop=0.05)
    entry = split.plan["cut"][0]
    assert entry["dtype"] == "float16"
    out = split.save(tmp_path / "out")
    pipeline = Pipeline(out)
    errors = []
    for seed in range(8):  # fresh draws of the calibration distribution
        feeds = _feeds("dbnet_fpn_fp16", seed=10 + seed)
        want = _run(MODELS / "dbnet_fpn_fp16.onnx", feeds)
        local = pipeline.run(feeds)
        for name, value in want.items():
            assert local[name].dtype == np.float16
            reference = value.astype(np.float32)
            errors.append(np.linalg.norm(local[name].astype(np.float32) - reference) / np.linalg.norm(reference))
    # the bound is certified on the calibration set (95% one-sided); held-out draws: the mean, with slack
    assert np.mean(errors) <= 1.5 * 0.05, (entry["bits"], errors)
    with ServerThread(out) as running, EdgeClient(out, running.url, retries=0, timeout=30) as client:
        remote = client.run(feeds)
    for name in want:
        np.testing.assert_array_equal(remote[name], local[name])
