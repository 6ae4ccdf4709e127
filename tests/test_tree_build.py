"""The model tree built from a real model: artifacts, tree.json, the tree client over a served link, fallback."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from splitc.calibration import calibrate
from splitc.cli import main
from splitc.errors import SplitcError
from splitc.runtime import CloudError, PlanError
from splitc.runtime.netem import NetemThread
from splitc.runtime.server import ServerThread
from splitc.runtime.tree_client import TreeClient
from splitc.runtime.tree_manifest import Decision
from splitc.targets import Target
from splitc.tree import evaluate, solve
from splitc.tree.build import TreeOptions, build_tree
from splitc.tree.emit import read_tree
from splitc.tree.traces import Trace, synthetic_trace

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"
# An edge device slow enough (about 50 ms for the digits CNN, twice as fast in float16) that offloading competes.
SLOW = Target("slow-edge", "edge", "a slow test device", 1.2e8, 1e9, 0.2, 50.0, "test", fp16_flops=2.4e8)
RATES_MBPS = [0.1, 2.0]
MAX_DROP = 0.05


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    data = np.load(DIGITS / "calib.npz")
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, image=data["image"][:150], labels=data["labels"][:150])
    return path


@pytest.fixture(scope="module")
def built(tmp_path_factory, calib):
    trace = Trace(synthetic_trace(RATES_MBPS, 1.0), "synthetic")
    # a 5 ms round trip: at 2 Mbps the first packet waits 3 ms on average, and decisions measured at the end of
    # the fast second send in the slow one, so with 20 ms the float16 edge (24 ms) would win in every class
    tree = build_tree(DIGITS / "digits_cnn.onnx", [trace],
                      TreeOptions(calib=calib, target=SLOW, rtt="5ms", max_drop=MAX_DROP, forks=3, classes=2))
    out = tmp_path_factory.mktemp("tree") / "out"
    tree.save(out)
    return tree, out


@pytest.fixture(scope="module")
def heldout() -> np.ndarray:
    return np.load(DIGITS / "test.npz")["image"][:12]


def test_tree_shape_and_artifacts(built):
    _, out = built
    data = json.loads((out / "tree.json").read_text())
    assert len(data["forks"]) == len(data["blocks"]) == 3
    assert data["forks"][0]["tensors"] == ["image"]
    assert [v["name"] for v in data["blocks"][0]["variants"]] == ["base", "fp16"]  # the target prices float16
    for block in data["blocks"]:
        for variant in block["variants"]:
            assert (out / variant["file"]).is_file()
    offloads = {a["label"] for n in data["policy"]["nodes"] for a in n["actions"] if "offload" in a}
    runs = [a for n in data["policy"]["nodes"] for a in n["actions"] if "run" in a]
    assert offloads and runs, "the slow edge and the two rates make the policy both offload and run blocks"
    index = json.loads((out / "plans.json").read_text())
    served = {p["id"] for p in index["plans"]}
    assert served == {pid for f in data["forks"] for pid in f["entry_points"].values()}
    for plan_id in served:
        assert (out / "plans" / plan_id / "cloud.onnx").is_file()
    sizes = [p.stat().st_size for p in out.rglob("*.onnx") if p.parent.name == "blocks"]
    assert len(sizes) == 6  # each block variant once, however many branches run it


def test_tree_json_round_trips(built):
    tree, out = built
    read = read_tree(out)
    assert read.policy.nodes == tree.policy.nodes
    np.testing.assert_array_equal(read.chain.matrix, tree.chain.matrix)
    assert read.spec.num_blocks == tree.spec.num_blocks
    for fork in range(tree.spec.num_blocks):
        for path in tree.spec.paths(fork):
            assert read.spec.options(fork, path) == tree.spec.options(fork, path)
    # the spec written is the one solved: the same policy and values come back from it
    again = solve(read.spec, read.chain, MAX_DROP)
    assert again.nodes == tree.policy.nodes
    np.testing.assert_allclose(evaluate(read.policy, read.spec, read.chain), tree.policy.expected_ms, rtol=1e-12)


def test_exact_options_and_bounds(built):
    tree, _ = built
    base_raw = [o for o in tree.tables.options[(1, (0,))] if o.bits == 32]
    assert not base_raw or base_raw[0].bound in (0.0, None)  # raw float32 after the base block: exact
    assert tree.tables.edge[(0, 0, 0)] == (0.0, 0.0)
    for leaf in tree.policy.leaves():  # every branch the policy can take meets the bound
        bound = (tree.spec.edge_drop(leaf.path) if leaf.option is None
                 else tree.spec.options(leaf.fork, leaf.path)[leaf.option].drop)
        assert bound <= MAX_DROP


def test_measured_drop_is_the_artifacts_drop(built, calib):
    """A composition run from the written files scores exactly the drop tree.json records for it."""
    tree, out = built
    data = np.load(calib)
    leaf = next(leaf for leaf in tree.policy.leaves() if leaf.option is not None)
    path, record = next((p, o) for p in ((1,) * leaf.fork, (0,) * leaf.fork)  # float16 blocks first
                        for o in tree.tables.options[(leaf.fork, p)] if o.label == leaf.label and o.drop is not None)
    with TreeClient(out, fallback="local") as client:
        outputs = [client.compose({"image": x[None]}, path, leaf.fork, leaf.label)["logits"] for x in data["image"]]
    import onnxruntime as ort

    model = ort.InferenceSession(str(DIGITS / "digits_cnn.onnx"), providers=["CPUExecutionProvider"])
    reference = [model.run(None, {"image": x[None]})[0] for x in data["image"]]
    quality = calibrate.per_sample("top1", outputs, reference, data["labels"])
    float_quality = calibrate.per_sample("top1", reference, reference, data["labels"])
    assert record.drop == pytest.approx(float(float_quality.mean() - quality.mean()), abs=1e-12)


def test_missing_artifacts_are_refused(built, tmp_path):
    _, out = built
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    (copy / "blocks" / "b1_fp16.onnx").unlink()
    with pytest.raises(PlanError, match="b1_fp16.onnx: missing"):
        TreeClient(copy)
    shutil.copytree(out, tmp_path / "copy2")
    plan_id = next(p.name for p in (tmp_path / "copy2" / "plans").iterdir())
    (tmp_path / "copy2" / "plans" / plan_id / "edge.onnx").unlink()
    with pytest.raises(PlanError, match=f"plans/{plan_id}/edge.onnx: missing"):
        TreeClient(tmp_path / "copy2")


def test_client_over_trace_link_matches_in_process_composition(built, heldout):
    """Over a trace-driven link, every answer equals the in-process composition of the branch it took."""
    tree, out = built
    trace = synthetic_trace(RATES_MBPS, 0.5)
    fastest = float(tree.chain.bandwidth[-1])
    taken = {"probed": [], "fast": []}
    with ServerThread(out, threads=1) as server, NetemThread(("127.0.0.1", server.port), trace=trace) as proxy:
        url = f"http://127.0.0.1:{proxy.port}"
        with TreeClient(out, url, probe_interval_s=0.0) as probed, \
                TreeClient(out, url, bandwidth=lambda: fastest) as fast:
            for x in heldout:
                for name, client in (("probed", probed), ("fast", fast)):
                    result = client.infer({"image": x[None]})
                    assert not result.fallback
                    expected = client.compose({"image": x[None]}, result.path, result.fork, result.label)
                    np.testing.assert_array_equal(result.outputs["logits"], expected["logits"])
                    taken[name].append((result.path, result.fork, result.label))
                    if result.fork is not None:
                        assert result.bytes_up > 0 and result.plan_id == f"f{result.fork}-{result.label}"
    assert all(fork is not None for _, fork, _ in taken["fast"]), "the fastest class offloads in this tree"


def test_fallback_local_when_the_server_lacks_the_entry_point(built, heldout, tmp_path):
    _, out = built
    served = tmp_path / "served"
    shutil.copytree(out, served)
    index = json.loads((served / "plans.json").read_text())
    missing = index["plans"][0]["id"]  # served under another id: the server lacks this entry point
    (served / "plans" / missing).rename(served / "plans" / "renamed")
    index["plans"][0] = {**index["plans"][0], "id": "renamed", "dir": "plans/renamed"}
    (served / "plans.json").write_text(json.dumps(index))
    fork, label = index["plans"][0]["fork"], missing.split("-")[1]
    x = {"image": heldout[0][None]}
    with ServerThread(served, threads=1) as server:
        with TreeClient(out, server.url, fallback="local") as client:
            _force_branch(client, fork, label)
            result = client.infer(x)
            assert result.fallback and missing in result.error and result.plan_id == missing
            np.testing.assert_array_equal(result.outputs["logits"],
                                          client.compose(x, result.path, fork, label)["logits"])
        with TreeClient(out, server.url) as strict:
            _force_branch(strict, fork, label)
            with pytest.raises(CloudError, match=missing) as refused:
                strict.infer(x)
            assert refused.value.status == 404


def _force_branch(client: TreeClient, fork: int, label: str) -> None:
    """Every class runs the base blocks up to ``fork`` and offloads there with ``label``."""
    classes = len(client.tree.edges) + 1
    nodes = {(f, (0,) * f): (Decision("run", 0),) * classes for f in range(fork)}
    nodes[(fork, (0,) * fork)] = (Decision("offload", 0, label),) * classes
    client.tree.nodes = nodes


def test_cli_builds_a_tree_and_rejects_a_bad_trace(tmp_path, calib, capsys):
    bad = tmp_path / "bad.up"
    bad.write_text("1\n5\nabc\n")
    assert main(["tree", str(DIGITS / "digits_cnn.onnx"), "--trace", str(bad), "--calib", str(calib),
                 "-o", str(tmp_path / "o")]) == 2
    assert "bad.up:3" in capsys.readouterr().err
    good = tmp_path / "link.up"
    good.write_text("\n".join(map(str, synthetic_trace(RATES_MBPS, 1.0))) + "\n")
    assert main(["tree", str(DIGITS / "digits_cnn.onnx"), "--trace", str(good), "--calib", str(calib),
                 "--forks", "2", "--no-fp16", "--max-drop", "5%", "--candidates", "3", "--class-rule", "quantile",
                 "-o", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    assert "Policy" in printed and "fixed plan" in printed and "bytes on disk" in printed
    written = json.loads((tmp_path / "o" / "tree.json").read_text())
    assert written["format"] == "splitc-model-tree-output"
    assert written["chain"]["class_rule"] == "quantile"


def test_fork_candidates_are_capped(built):
    from splitc.tree.forks import candidates, cap_candidates

    tree, _ = built
    eligible = candidates(tree.analysis)
    assert tree.candidates == min(len(eligible), tree.options.max_candidates)
    for cap in (1, 2, 3):
        kept = cap_candidates(tree.analysis, eligible, cap)
        assert len(kept) == min(cap, len(eligible))
        assert kept[0] is eligible[0]  # the model inputs, fork 0
        assert [eligible.index(c) for c in kept] == sorted(eligible.index(c) for c in kept)
    assert cap_candidates(tree.analysis, eligible, None) == eligible
    with pytest.raises(SplitcError, match="--candidates"):
        TreeOptions(calib="x", max_candidates=-1).check()
