"""ONNX backend and plan manifest: structure of the halves and the numbers in plan.json."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import splitc
from splitc.testing import zoo
from splitc.backends import onnx_backend
from splitc.errors import CutError, SplitcError
from splitc.runtime import Pipeline
from tests.conftest import random_feeds, run_model


@pytest.fixture(scope="module")
def resnet() -> onnx.ModelProto:
    return zoo.build("resnet_blocks")


def _used_names(model: onnx.ModelProto) -> set[str]:
    return {t for n in model.graph.node for t in n.input}


def test_halves_carry_only_their_weights(resnet) -> None:
    split = splitc.analyse(resnet).split(["block2/relu"])
    for half in (split.edge_model, split.cloud_model):
        onnx.checker.check_model(half, full_check=True)
        inits = {t.name for t in half.graph.initializer}
        assert inits and inits <= _used_names(half)
    edge_inits = {t.name for t in split.edge_model.graph.initializer}
    cloud_inits = {t.name for t in split.cloud_model.graph.initializer}
    assert edge_inits.isdisjoint(cloud_inits)
    assert edge_inits | cloud_inits == {t.name for t in resnet.graph.initializer}


def test_halves_keep_names_and_interfaces(resnet) -> None:
    split = splitc.analyse(resnet).split(["block2/relu"])
    original = {n.name for n in resnet.graph.node}
    edge_nodes = [n.name for n in split.edge_model.graph.node]
    cloud_nodes = [n.name for n in split.cloud_model.graph.node]
    assert set(edge_nodes) | set(cloud_nodes) == original
    assert not set(edge_nodes) & set(cloud_nodes)
    assert "block2/relu" in edge_nodes and "head/fc" in cloud_nodes
    assert [i.name for i in split.edge_model.graph.input] == ["input"]
    assert [o.name for o in split.edge_model.graph.output] == ["block2/relu"]
    assert [i.name for i in split.cloud_model.graph.input] == ["block2/relu"]
    assert [o.name for o in split.cloud_model.graph.output] == ["logits"]
    dims = [d.dim_value for d in split.cloud_model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 32, 16, 16]


def test_constant_node_weights_go_to_both_halves_as_needed() -> None:
    model = zoo.build("constant_weights")
    analysis = splitc.analyse(model)
    cut = [t for t in analysis.result.cut_vertices if analysis.graph.values[t].consumers][1]
    split = analysis.split([cut])
    for half in (split.edge_model, split.cloud_model):
        constants = [n for n in half.graph.node if n.op_type == "Constant"]
        produced = {o for n in constants for o in n.output}
        assert produced <= _used_names(half), "a half carries only the constants it uses"
        assert constants


def test_edge_only_and_cloud_only(resnet, tmp_out: Path) -> None:
    analysis = splitc.analyse(resnet)
    edge_only = analysis.split([])
    assert edge_only.cloud_model is None and edge_only.partition.kind == "edge-only"
    edge_only.save(tmp_out)
    assert sorted(p.name for p in tmp_out.iterdir()) == [".splitc-output.json", "edge.onnx", "plan.json"]
    cloud_only = analysis.split(["input"])
    assert cloud_only.partition.kind == "cloud-only"
    assert len(cloud_only.edge_model.graph.node) == 0
    assert [o.name for o in cloud_only.edge_model.graph.output] == ["input"]
    feeds = random_feeds(resnet)
    expected = run_model(resnet, feeds)["logits"]
    for split in (edge_only, cloud_only):
        split.save(tmp_out)
        np.testing.assert_allclose(Pipeline(tmp_out).run(feeds)["logits"], expected, rtol=1e-5, atol=1e-6)


def test_plan_manifest_reproduces_the_optimum(resnet, tmp_out: Path) -> None:
    split = splitc.compile(resnet, target="raspberry-pi-4", bandwidth="100Mbps", rtt="5ms", bits=32)
    split.save(tmp_out)
    plan = json.loads((tmp_out / "plan.json").read_text())
    assert plan["schema"] == "splitc.plan/1"
    assert plan["model"]["sha256"] and len(plan["model"]["sha256"]) == 64
    assert plan["targets"] == {"edge": "raspberry-pi-4", "cloud": "t4"}
    # recompute the chosen plan's latency from the per-node and per-tensor costs alone
    nodes, tensors = plan["costs"]["nodes"], plan["costs"]["tensors"]
    cloud = {name for name, v in nodes.items() if v["side"] == "cloud"}
    assert len(cloud) == (plan["cloud"] or {}).get("nodes", 0)
    edge_ms = sum(v["edge_ms"] for k, v in nodes.items() if k not in cloud)
    cloud_ms = sum(v["cloud_ms"] for k, v in nodes.items() if k in cloud)
    up = [t for t, v in tensors.items() if (v["producer"] not in cloud) and any(c in cloud for c in v["consumers"])]
    down = [t for t, v in tensors.items() if v["graph_output"] and v["producer"] in cloud]
    sent = sum(tensors[t]["bytes"] for t in up + down)
    rtt = plan["link"]["rtt_ms"] if up or down else 0.0
    transfer = rtt + sent / plan["link"]["bandwidth_Bps"] * 1e3
    assert sorted(up) == sorted(c["tensor"] for c in plan["cut"])
    assert edge_ms + transfer + cloud_ms == pytest.approx(plan["predicted"]["total_ms"], rel=1e-9)
    assert plan["predicted"]["total_ms"] <= min(plan["baselines"]["edge_only_ms"], plan["baselines"]["cloud_only_ms"])
    assert all(c["bits"] == 32 and c["codec"] == "none" for c in plan["cut"])


def test_forced_cut_errors(resnet) -> None:
    analysis = splitc.analyse(resnet)
    with pytest.raises(CutError, match="'nope', which is not a tensor"):
        analysis.split(["nope"])
    with pytest.raises(CutError, match="add it to the cut"):
        analysis.split(["block3/a/relu"])  # inside a residual block: the skip also crosses
    with pytest.raises(CutError, match="every node that reads it must stay on the edge"):
        analysis.split(["stem/relu", "block1/relu"])


def test_large_halves_use_external_data(resnet, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(onnx_backend, "_TWO_GB", 10_000)
    split = splitc.analyse(resnet).split(["block2/relu"])
    path = tmp_path / "edge.onnx"
    onnx_backend.save_half(split.edge_model, path)
    assert (tmp_path / "edge.onnx.data").stat().st_size > 10_000
    feeds = random_feeds(resnet)
    direct = run_model(split.edge_model, feeds)["block2/relu"]
    np.testing.assert_array_equal(run_model(path, feeds)["block2/relu"], direct)


def test_output_directory_is_replaced_atomically(resnet, tmp_out: Path) -> None:
    analysis = splitc.analyse(resnet)
    analysis.split(["block2/relu"]).save(tmp_out)
    analysis.split([]).save(tmp_out)
    assert not (tmp_out / "cloud.onnx").exists()
    leftovers = [p.name for p in tmp_out.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_refuses_to_replace_a_foreign_directory(resnet, tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SplitcError, match="not a splitc output"):
        splitc.analyse(resnet).split([]).save(tmp_path)
    assert (tmp_path / "keep.txt").read_text() == "mine"
