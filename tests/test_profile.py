"""Measured profiles: fused-kernel mapping, round trip through compile, segment-exact predictions."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import splitc
from splitc.testing import zoo
from splitc.frontend import import_model
from splitc.passes.base import PassManager
from splitc.cost.resolve import cost_model_for
from splitc.passes.dce import DeadCodeElimination
from splitc.partition.solve import forced_partition
from splitc.profiling.command import write_profile
from splitc.profiling.fusion import fused_groups, share_by_flops
from splitc.profiling.kernels import profile_kernels
from splitc.profiling.measure import profile_model
from splitc.cost.schema import SCHEMA
from splitc.profiling.timing import random_feeds
from tests.conftest import LIGHT_DIR

FAST = dict(runs=5, warmup=1, threads=1, min_seconds=0.0)


@pytest.fixture(scope="module")
def profiled(tmp_path_factory) -> tuple[Path, Path, dict]:
    """resnet_blocks saved to a file, and its profile measured here."""
    folder = tmp_path_factory.mktemp("profile")
    model = folder / "resnet_blocks.onnx"
    onnx.save(zoo.build("resnet_blocks"), model)
    document = profile_model(model, **FAST)
    path = folder / "device.json"
    write_profile(document, path)
    return model, path, document


def _graph(model):
    return PassManager([DeadCodeElimination()])(import_model(model)).graph


FUSION_MODELS = [*zoo.MODELS, "light_squeezenet", "light_shufflenet"]


@pytest.mark.parametrize("name", FUSION_MODELS)
def test_every_node_and_kernel_is_in_exactly_one_fused_group(name):
    model = str(LIGHT_DIR / f"{name}.onnx") if name.startswith("light_") else zoo.build(name)
    graph = _graph(model)
    kernels = profile_kernels(graph.model, random_feeds(graph.inputs), runs=2, warmup=0, threads=1)
    groups = fused_groups(graph, kernels.optimized)
    nodes = [n for g in groups for n in g.nodes]
    assert sorted(nodes) == sorted(n.name for n in graph.data_nodes)
    assert len(nodes) == len(set(nodes))
    ran = [k for g in groups for k in g.kernels]
    assert sorted(ran) == sorted(n.name for n in kernels.optimized.graph.node)
    assert set(kernels.times) <= set(ran)
    shares = share_by_flops(graph, groups, kernels.times, kernels.runs)
    for group in groups:  # a group's time is shared out in full
        total = sum((kernels.times[k] for k in group.kernels if k in kernels.times), np.zeros(kernels.runs))
        np.testing.assert_allclose(sum((shares[n] for n in group.nodes), np.zeros(kernels.runs)), total, atol=1e-12)


def test_conv_bn_relu_is_one_fused_group_shared_by_flops():
    graph = _graph(zoo.build("opset7_cnn"))
    kernels = profile_kernels(graph.model, random_feeds(graph.inputs), runs=3, warmup=1, threads=1)
    groups = fused_groups(graph, kernels.optimized)
    group = next(g for g in groups if "stage1/conv" in g.nodes)
    assert {"stage1/conv", "stage1/bn", "stage1/relu"} <= set(group.nodes)
    shares = share_by_flops(graph, groups, kernels.times, kernels.runs)
    conv, relu = graph.node("stage1/conv"), graph.node("stage1/relu")
    ratio = np.median(shares["stage1/relu"]) / np.median(shares["stage1/conv"])
    assert ratio == pytest.approx(relu.flops / conv.flops)


def test_profile_document(profiled):
    model, path, document = profiled
    assert document["schema"] == SCHEMA
    assert document["model"]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    graph = _graph(model)
    assert document["model"]["nodes"] == [n.name for n in graph.data_nodes]
    assert set(document["nodes"]) == set(document["model"]["nodes"])
    for entry in document["nodes"].values():
        assert 0 <= entry["p10_ms"] <= entry["median_ms"] <= entry["p90_ms"]
    machine = document["machine"]
    assert machine["cores"] >= 1 and machine["matmul_gflops"] > 0 and machine["copy_gbps"] > 0
    assert machine["onnxruntime"] and "CPUExecutionProvider" in machine["providers_available"]
    cuts = document["segments"]["cut_vertices"]
    prefix, suffix = document["segments"]["prefix"], document["segments"]["suffix"]
    assert len(cuts) >= 8 and cuts[-1] == "logits"  # the final output: no reader, no split there
    assert set(prefix) == set(cuts[:-1]) | {"input"}  # the input's prefix: a session computing nothing
    assert set(suffix) == set(cuts)  # the final output's suffix: likewise
    assert prefix["input"]["median_ms"] < prefix["block1/add"]["median_ms"]
    scaled = sum(e["median_ms"] for e in document["groups"])  # the whole model less the cost of a call
    call = prefix["input"]["median_ms"]
    assert scaled == pytest.approx(document["whole_model"]["median_ms"] - call, rel=1e-9)
    assert json.loads(path.read_text()) == document


def test_compile_with_the_profile_uses_its_numbers(profiled):
    model, path, document = profiled
    split = splitc.compile(model, target=str(path), cloud=path, bandwidth="100Mbps", rtt="1ms")
    plan = split.plan
    cost_model = plan["edge"]["cost_model"]
    assert cost_model["kind"] == "profile" and cost_model["model_match"] == "sha256"
    assert cost_model["profile"]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert cost_model["fallback_nodes"] == [] and plan["targets"]["edge"] == "device"
    for name, entry in plan["costs"]["nodes"].items():
        assert entry["edge_ms"] == document["nodes"][name]["median_ms"]
        assert entry["cloud_ms"] == document["nodes"][name]["median_ms"]
    assert plan["baselines"]["edge_only_ms"] == pytest.approx(document["whole_model"]["median_ms"])


def test_prediction_at_cut_vertices_is_the_measured_segment_time(profiled):
    model, path, document = profiled
    analysis = splitc.analyse(model, target=path, cloud=path, bandwidth="10Mbps", rtt="0ms")
    segments = document["segments"]
    for cut in segments["cut_vertices"][:-1]:
        part = forced_partition(analysis.problem, [cut])
        assert part.edge_ms == pytest.approx(segments["prefix"][cut]["median_ms"], rel=1e-12), cut
        assert part.cloud_ms == pytest.approx(segments["suffix"][cut]["median_ms"], rel=1e-12), cut
    whole = document["whole_model"]["median_ms"]
    edge_only, cloud_only = analysis.result.edge_only, analysis.result.cloud_only
    assert (edge_only.edge_ms, edge_only.cloud_ms) == (pytest.approx(whole, rel=1e-12), 0.0)
    assert cloud_only.edge_ms == pytest.approx(segments["prefix"]["input"]["median_ms"], rel=1e-12)
    assert cloud_only.cloud_ms == pytest.approx(whole, rel=1e-12)
    # inside a segment: the nearest measured prefix and suffix, plus per-node times for the nodes in between
    part = forced_partition(analysis.problem, ["block2/a/relu", "block2/proj/bn"])
    node_ms = lambda names: sum(document["nodes"][n]["median_ms"] for n in names)  # noqa: E731
    edge_side = ["block2/a/conv", "block2/a/bn", "block2/a/relu", "block2/proj/conv", "block2/proj/bn"]
    cloud_side = ["block2/b/conv", "block2/b/bn", "block2/add"]
    prefix, suffix = segments["prefix"]["block1/relu"]["median_ms"], segments["suffix"]["block2/add"]["median_ms"]
    assert part.edge_ms == pytest.approx(prefix + node_ms(edge_side), rel=1e-12)
    assert part.cloud_ms == pytest.approx(suffix + node_ms(cloud_side), rel=1e-12)


def test_missing_nodes_fall_back_to_the_host_roofline(profiled, tmp_path):
    model, _, document = profiled
    partial = json.loads(json.dumps(document))
    for name in ("block2/a/conv", "head/fc"):
        del partial["nodes"][name]
    path = tmp_path / "partial.json"
    path.write_text(json.dumps(partial))
    plan = splitc.compile(model, target=path, cloud="t4").plan
    assert plan["edge"]["cost_model"]["fallback_nodes"] == ["block2/a/conv", "head/fc"]
    assert plan["edge"]["cost_model"]["fallback"]["target"]["name"] == "host"
    host = cost_model_for("host")
    graph = _graph(model)
    assert plan["costs"]["nodes"]["head/fc"]["edge_ms"] == pytest.approx(host.node_ms(graph.node("head/fc")))


def test_same_nodes_but_another_file_is_accepted(profiled, tmp_path):
    model, path, _ = profiled
    proto = onnx.load(model)
    proto.doc_string = "re-exported"  # another sha256, the same network
    other = tmp_path / "other.onnx"
    onnx.save(proto, other)
    plan = splitc.compile(other, target=path, cloud="t4").plan
    assert plan["edge"]["cost_model"]["model_match"] == "node names"


def test_host_target_is_calibrated_and_other_targets_scale_it():
    graph = _graph(zoo.build("chain_cnn"))
    host, tx2 = cost_model_for("host"), cost_model_for("jetson-tx2")
    described = host.describe()
    assert described["kind"] == "roofline" and described["calibration"]["op_types"] >= 5
    conv = graph.node("stage2/conv")
    table = host.table["op_types"]["Conv"]
    roofline = max(conv.flops / host.target.peak_flops, conv.memory_bytes / host.target.mem_bw)
    assert host.node_ms(conv) == pytest.approx(roofline / table["efficiency"] * 1e3 + table["overhead_us"] * 1e-3)
    t = tx2.target
    expected_eff = t.efficiency * table["efficiency"] / host.table["efficiency"]
    roofline = max(conv.flops / t.peak_flops, conv.memory_bytes / t.mem_bw)
    overhead = t.overhead_us * table["launch_fraction"]
    assert tx2.node_ms(conv) == pytest.approx(roofline / expected_eff * 1e3 + overhead * 1e-3)
