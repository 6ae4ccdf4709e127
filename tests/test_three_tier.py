"""Three tiers: the three halves, their composition, the relaying edge server over emulated links, faults, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest

from splitc.cli import main
from splitc.partition.tiers import evaluate_tiers, solve_tiers
from splitc.passes.qdq import encoding_for
from splitc.runtime import CloudError, EdgeClient, Pipeline, PlanError
from splitc.runtime.netem import NetemThread
from splitc.runtime.relay import TierPipeline
from splitc.runtime.server import ServerThread
from splitc.testing import zoo
from splitc.tiered import compile_tiers
from splitc.wire import request
from tests.conftest import run_model

# two_in_two_out: the device runs stage 1, the edge the aux head and stage 2, the cloud the meta branch and
# the fused head; ``meta`` (a model input) is only read on the cloud, so the edge relays it.
CUTS = (["stage1/pool", "meta"], ["trunk/flatten", "meta"])
SEEDS = (1, 2, 3)


@pytest.fixture(scope="module")
def model() -> onnx.ModelProto:
    return zoo.build("two_in_two_out")


@pytest.fixture(scope="module")
def calib(tmp_path_factory, model) -> Path:
    rng = np.random.default_rng(7)
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, image=rng.standard_normal((48, 3, 32, 32)).astype(np.float32),
             meta=rng.standard_normal((48, 8)).astype(np.float32))
    return path


@pytest.fixture(scope="module")
def raw(tmp_path_factory, model):
    split = compile_tiers(model, cuts=CUTS, bits=32)
    return split, split.save(tmp_path_factory.mktemp("raw") / "out")


@pytest.fixture(scope="module")
def quant(tmp_path_factory, model, calib):
    """4 bits on the device-edge link, 6 on the edge-cloud link, with codebooks trained on ``calib``."""
    split = compile_tiers(model, cuts=CUTS, bits=(4, 6), calib=calib, max_drop=0.5, metric="rel-l2")
    return split, split.save(tmp_path_factory.mktemp("quant") / "out")


def _feeds(model, seed: int) -> dict[str, np.ndarray]:
    return zoo.random_inputs(model, seed)


def _equal(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for name, value in a.items():
        assert value.dtype == b[name].dtype and np.array_equal(value, b[name]), name


def _names(model: onnx.ModelProto, field: str) -> list[str]:
    inits = {t.name for t in model.graph.initializer}
    return [v.name for v in getattr(model.graph, field) if v.name not in inits]


def _wires(split, tensors: list[str]) -> list[str]:
    return [w for t in tensors for w in split.encodings[t].wire_names()]


# ----------------------------------------------------------------------------- in process


def test_composition_is_the_pipelines_answer_bit_for_bit(quant, model) -> None:
    """device -> codec -> edge -> codec -> cloud equals both two-tier views: the device's (device half + the
    composed rest) and the cloud's (the composed front + cloud half)."""
    split, out = quant
    assert split.bits == (4, 6)
    three, device, cloud = TierPipeline(out), Pipeline(out / "device"), Pipeline(out / "cloud")
    for seed in SEEDS:
        feeds = _feeds(model, seed)
        got = three.run(feeds)
        _equal(got, device.run(feeds))
        _equal(got, cloud.run(feeds))
        reference = run_model(model, feeds)
        assert not np.array_equal(got["logits"], reference["logits"])  # the links really quantize


def test_raw_composition_matches_the_unsplit_model(raw, model) -> None:
    _, out = raw
    three = TierPipeline(out)
    for seed in SEEDS:
        feeds = _feeds(model, seed)
        got, want = three.run(feeds), run_model(model, feeds)
        for name in want:
            np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("which", ["raw", "quant"])
def test_halves_cross_exactly_what_the_solver_says(which, raw, quant, model) -> None:
    split, out = raw if which == "raw" else quant
    crossing = evaluate_tiers(split.problem, split.tier)
    names = split.problem.value_names
    link1, link2 = ([names[i] for i in up] for up in crossing.up_values)
    assert (link1, link2) == (split.parts.link1, split.parts.link2)
    assert sorted(link1) == sorted(CUTS[0]) and sorted(link2) == sorted(CUTS[1])
    made2 = [t for t in link2 if t not in link1]
    device, edge, cloud = (onnx.load(out / d / f) for d, f in
                           (("device", "device.onnx"), ("edge", "edge.onnx"), ("cloud", "cloud.onnx")))
    assert _names(device, "input") == ["image", "meta"]
    assert _names(device, "output") == _wires(split, link1)
    assert _names(edge, "input") == _wires(split, ["stage1/pool"])  # the link-1 tensor the edge reads
    assert sorted(_names(edge, "output")) == sorted(_wires(split, made2) + ["aux"])
    assert _names(cloud, "input") == _wires(split, link2)
    assert _names(cloud, "output") == ["logits"]
    relay = json.loads((out / "edge" / "relay.json").read_text())
    assert relay["upstream"]["cut"] == [{"tensor": "meta", "source": "relay"},
                                        {"tensor": "trunk/flatten", "source": "edge"}]
    tiers = json.loads((out / "tiers.json").read_text())
    assert [[c["tensor"] for c in link["cut"]] for link in tiers["links"]] == [link1, link2]
    assert [t["nodes"] for t in tiers["tiers"]] == [len(n) for n in split.parts.nodes]
    bits = split.bits
    for link, b, tensors in zip(tiers["links"], bits, (link1, made2)):
        assert all(c["bits"] == b for c in link["cut"] if c["tensor"] in tensors)
    assert (out / "edge" / "plan.json").read_bytes() == (out / "device" / "plan.json").read_bytes()
    assert (out / "edge" / "upstream" / "plan.json").read_bytes() == (out / "cloud" / "plan.json").read_bytes()


def test_widths_are_chosen_on_the_composed_model(tmp_path, calib) -> None:
    """With --calib every pair of widths is measured through all three parts; the chosen pair's bound holds,
    and its measured drop is the composed pipeline's on the calibration samples."""
    model = zoo.build("two_in_two_out")
    model.graph.output.pop(0)  # logits alone: its drop depends on both links
    split = compile_tiers(model, cuts=CUTS, calib=calib, max_drop=0.05, metric="rel-l2")
    acc = split.accuracy
    assert acc["checked"] and acc["drop_bound"] <= 0.05 and acc["bits"] == list(split.bits)
    pairs = {tuple(c["bits"]): c for c in split.calibration["candidates"]}
    assert set(pairs) == {(a, b) for a in (32, 8, 6, 4) for b in (32, 8, 6, 4)}
    assert pairs[(32, 32)]["exact"] and pairs[(32, 32)]["drop_bound"] == 0.0
    assert pairs[(32, 8)]["drop"] > 0 and pairs[(8, 32)]["drop"] > 0  # each link alone changes the output
    best = min((c for c in pairs.values() if c["feasible"]), key=lambda c: (c["total_ms"], c["bytes"]))
    assert best["bits"] == list(split.bits)
    out = split.save(tmp_path / "out")
    data = np.load(calib)
    three = TierPipeline(out)
    errors = []
    for image, meta in zip(data["image"], data["meta"]):
        feeds = {"image": image[None], "meta": meta[None]}
        got, want = three.run(feeds)["logits"], run_model(model, feeds)["logits"]
        errors.append(np.linalg.norm(got - want) / (np.linalg.norm(want) + 1e-12))
    assert np.mean(errors) == pytest.approx(acc["drop"], rel=1e-4, abs=1e-7)


@pytest.mark.parametrize("tiers, links, counts, layout", [
    (("raspberry-pi-4", "gtx-1080ti", "t4"), ((1e9, 0.0), (1e9, 0.0)), [2, 13, 0], ["device", "edge"]),
    (("tegra-k1", "jetson-nano", "a100"), ((1e7, 0.0), (1e9, 0.0)), [8, 0, 7], ["cloud", "device", "edge"]),
    (("raspberry-pi-4", "gtx-1080ti", "t4"), ((2.5e6, 5.0), (2.5e7, 30.0)), [15, 0, 0], ["device"]),
])
def test_optimum_with_an_empty_tier(tmp_path, model, tiers, links, counts, layout) -> None:
    """The solver's own assignment (no forced cuts): an unused tier is left out, and the parts still compose."""
    split = compile_tiers(model, tiers, links, bits=32)
    assert [len(n) for n in split.parts.nodes] == counts
    solved = solve_tiers(split.problem)
    assert np.array_equal(split.tier, solved.tier)
    link1, link2 = ([split.problem.value_names[i] for i in up] for up in solved.breakdown.up_values)
    out = split.save(tmp_path / "out")
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == layout
    device = onnx.load(out / "device" / "device.onnx")
    assert sorted(_names(device, "output")) == sorted(link1 + split.parts.outputs[0])
    if "cloud" in layout:
        assert _names(onnx.load(out / "cloud" / "cloud.onnx"), "input") == link2
    assert not (out / "edge" / "edge.onnx").exists()  # no edge nodes, or the edge is the last stage (rest.onnx)
    feeds = _feeds(model, 4)
    got, want = TierPipeline(out).run(feeds), run_model(model, feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- served


def test_loopback_over_two_emulated_links(quant, model) -> None:
    """Cloud server, relaying edge server, two netem links, the device client: the in-process answer, bit for bit."""
    _, out = quant
    three = TierPipeline(out)
    with ServerThread(out / "cloud", threads=2) as cloud, \
            NetemThread(("127.0.0.1", cloud.port), rate=25e6, rtt_ms=6.0) as backbone, \
            ServerThread(out / "edge", threads=2, upstream=f"http://127.0.0.1:{backbone.port}") as edge, \
            NetemThread(("127.0.0.1", edge.port), rate=2.5e6, rtt_ms=4.0) as uplink, \
            EdgeClient(out / "device", f"http://127.0.0.1:{uplink.port}", timeout=20) as client:
        plans = httpx.get(edge.url + "/v1/plans").json()
        assert plans["upstream"]["cut"] == ["meta", "trunk/flatten"]
        for seed in SEEDS:
            feeds = _feeds(model, seed)
            result = client.infer(feeds)
            assert not result.fallback and result.error is None
            _equal(result.outputs, three.run(feeds))


def test_the_relay_forwards_the_clouds_records_unchanged(quant, model) -> None:
    """The cloud's 16-bit reply reaches the device as the cloud sent it (the edge's own output at 32 bits)."""
    _, out = quant
    device = Pipeline(out / "device")
    feeds = _feeds(model, 5)
    body = request.encode_request("default", device.codec.encode(device.run_edge(feeds)), 9,
                                  device_crc(out))
    with ServerThread(out / "cloud", reply_bits=16) as cloud, \
            ServerThread(out / "edge", upstream=cloud.url) as edge:
        reply = request.decode_response(httpx.post(edge.url + "/v1/infer", content=body).content)
    records = {r.name: request.record_array(r) for r in reply.records}
    three = TierPipeline(out).run(feeds)
    assert reply.request_id == 9
    assert np.array_equal(records["aux"], three["aux"])
    assert np.array_equal(records["logits"], three["logits"].astype(np.float16).astype(np.float32))


def device_crc(out: Path) -> int:
    import zlib

    return zlib.crc32((out / "device" / "plan.json").read_bytes())


def test_upstream_down_is_a_502_naming_it_and_the_device_falls_back(quant, model) -> None:
    _, out = quant
    dead = f"http://127.0.0.1:{_free_port()}"
    feeds = _feeds(model, 6)
    device = Pipeline(out / "device")
    body = request.encode_request("default", device.codec.encode(device.run_edge(feeds)), 1, device_crc(out))
    with ServerThread(out / "edge", upstream=dead, upstream_timeout=2.0) as edge:
        answer = httpx.post(edge.url + "/v1/infer", content=body)
        assert answer.status_code == 502
        assert answer.json()["error"] == "upstream_unreachable" and dead in answer.json()["detail"]
        with EdgeClient(out / "device", edge.url, retries=0, fallback="local") as client:
            result = client.infer(feeds)
        assert result.fallback and dead in result.error
        _equal(result.outputs, TierPipeline(out).run(feeds))
        with EdgeClient(out / "device", edge.url, retries=0) as client, pytest.raises(CloudError):
            client.infer(feeds)


def test_a_slow_upstream_is_a_504(quant, model) -> None:
    _, out = quant
    device = Pipeline(out / "device")
    feeds = _feeds(model, 7)
    body = request.encode_request("default", device.codec.encode(device.run_edge(feeds)), 1, device_crc(out))
    with ServerThread(out / "cloud") as cloud, \
            NetemThread(("127.0.0.1", cloud.port), rtt_ms=4000.0) as slow, \
            ServerThread(out / "edge", upstream=f"http://127.0.0.1:{slow.port}", upstream_timeout=0.3) as edge:
        answer = httpx.post(edge.url + "/v1/infer", content=body, timeout=10)
        upstream = f"http://127.0.0.1:{slow.port}"
    assert answer.status_code == 504
    assert answer.json()["error"] == "upstream_timeout" and upstream in answer.json()["detail"]


def test_serving_the_edge_needs_an_upstream(quant) -> None:
    _, out = quant
    with pytest.raises(PlanError, match="--upstream"):
        ServerThread(out / "edge")
    with pytest.raises(PlanError, match="relaying edge output"):
        ServerThread(out / "cloud", upstream="http://127.0.0.1:1")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# ----------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def model_path(tmp_path_factory, model) -> Path:
    path = tmp_path_factory.mktemp("models") / "two_in_two_out.onnx"
    onnx.save(model, path)
    return path


def test_cli_compiles_three_tiers(model_path, tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main([str(model_path), "--tiers", "raspberry-pi-4,gtx-1080ti,t4", "--link", "device-edge=20Mbps/5ms",
                 "--link", "edge-cloud=200Mbps/30ms", "--cut", "stage1/pool,meta|trunk/flatten,meta", "--bits",
                 "8,32", "--json", "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert [t["nodes"] for t in summary["tiers"]] == [3, 8, 4]
    assert [link["bandwidth_Bps"] for link in summary["links"]] == [2.5e6, 2.5e7]
    tiers = json.loads((out / "tiers.json").read_text())
    assert [link["rtt_ms"] for link in tiers["links"]] == [5.0, 30.0]
    assert {c["tensor"]: c["bits"] for c in tiers["links"][1]["cut"]} == {"meta": 8, "trunk/flatten": 32}
    assert encoding_for("meta", 8, None, "huffman").wire_names() == tiers["links"][0]["cut"][0]["wire"]


@pytest.mark.parametrize("args, message", [
    (["--tiers", "raspberry-pi-4,warp-drive,t4"], "unknown target 'warp-drive'"),
    (["--tiers", "raspberry-pi-4,t4"], "three targets"),
    (["--link", "device-edge=20Mbps/5ms", "--link", "edge-cloud=fast/30ms"], "bad --link 'edge-cloud=fast/30ms'"),
    (["--link", "device-edge=20Mbps"], "bad --link"),
    (["--link", "uplink=20Mbps/5ms"], "bad --link"),
    (["--tiers", "raspberry-pi-4,gtx-1080ti,t4", "--link", "device-edge=20Mbps/5ms"], "two links"),
    (["--tiers", "raspberry-pi-4,gtx-1080ti,t4", "--cut", "a|b|c"], "--cut"),
    (["--tiers", "raspberry-pi-4,gtx-1080ti,t4", "--target", "tegra-k1"], "--target does not apply"),
])
def test_cli_errors_are_one_line(model_path, tmp_path, capsys, args, message) -> None:
    code = main([str(model_path), *args, "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and message in err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert not (tmp_path / "out").exists()


def test_cli_upstream_needs_uvicorn(quant, capsys) -> None:
    _, out = quant
    code = main(["serve", str(out / "edge"), "--engine", "ray", "--upstream", "http://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and "--upstream needs the uvicorn engine" in err and err.count("\n") == 1
