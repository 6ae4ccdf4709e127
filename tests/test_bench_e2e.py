"""The end-to-end benchmark's device emulation and one small real run through netem and a server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import splitc
from splitc.testing import zoo
from splitc.tools.bench_e2e import METHODS, BenchConfig, Emulation, host_profile, run_model_bench

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "digits"


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    model = zoo.build("chain_cnn")
    path = host_profile(model, tmp_path_factory.mktemp("profile") / "host.json", runs=3, progress=lambda _s: None)
    return model, path


def test_profile_is_reused_only_for_the_same_model(chain) -> None:
    model, path = chain
    before = path.stat().st_mtime_ns
    assert host_profile(model, path, runs=3, progress=lambda _s: pytest.fail("profiled again")) == path
    assert path.stat().st_mtime_ns == before
    other = zoo.build("resnet_blocks")
    seen = []
    host_profile(other, path.with_name("other.json"), runs=1, progress=seen.append)
    assert seen and "profiling" in seen[0]


def test_emulation_scales_the_measured_segment_of_each_half(chain, tmp_path: Path) -> None:
    model, path = chain
    emulation = Emulation(model, "jetson-tx2", "gtx-1080ti", path)
    profile = json.loads(path.read_text())
    analysis = splitc.analyse(model, target="jetson-tx2", cloud="gtx-1080ti")
    cut = next(t for t in analysis.result.cut_vertices if t in profile["segments"]["prefix"]
               and t in profile["segments"]["suffix"])
    plan = analysis.split([cut]).plan
    edge, cloud = emulation.plan_ratios(plan)
    prefix = profile["segments"]["prefix"][cut]["median_ms"]
    suffix = profile["segments"]["suffix"][cut]["median_ms"]
    assert edge == pytest.approx(plan["predicted"]["edge_ms"] / prefix, rel=1e-9)
    assert cloud == pytest.approx(plan["predicted"]["cloud_ms"] / suffix, rel=1e-9)

    whole_edge, whole_cloud = emulation.whole_ratios()
    edge_only = analysis.split([]).plan
    assert emulation.plan_ratios(edge_only)[0] == pytest.approx(whole_edge, rel=1e-9)
    cloud_only = analysis.split([v.name for v in analysis.graph.inputs]).plan
    assert emulation.plan_ratios(cloud_only)[1] == pytest.approx(whole_cloud, rel=1e-9)
    # a TX2 is slower than a 1080 Ti on the same work
    assert whole_edge > whole_cloud > 0


def test_small_bench_run_reports_every_method(tmp_path: Path) -> None:
    config = BenchConfig(EXAMPLES / "digits_cnn.onnx", "raspberry-pi-4", "gtx-1080ti", [300e3], 10.0,
                         EXAMPLES / "calib.npz", EXAMPLES / "test.npz", 0.01, requests=2, out=tmp_path / "bench",
                         name="digits", test_limit=48)
    result = run_model_bench(config, progress=lambda _s: None)
    (row,) = result["rows"]
    assert set(row) == {"bandwidth_Bps", *METHODS}
    assert row["Origin2Cloud"]["up_bytes"] > row["PNG2Cloud"]["up_bytes"] > 0  # 8x8 digits: PNG still smaller
    assert row["edge-only"]["up_bytes"] == 0
    for method in METHODS:
        assert row[method]["median_ms"] > 0 and row[method]["p90_ms"] >= row[method]["median_ms"]
    accuracy = result["accuracy"]
    assert accuracy["edge-only"]["agreement"] == 1.0
    assert accuracy["Origin2Cloud"]["agreement"] >= 0.98  # 8-bit input
    assert np.isclose(accuracy["edge-only"]["accuracy"], accuracy["splitc-0"]["accuracy"], atol=0.03)
