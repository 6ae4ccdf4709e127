"""Bandwidth ranges: the exact lower envelope, the emitted plans, link estimates, switching under netem."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest

import splitc
from splitc.testing import zoo
from splitc.adaptive import compile_range, envelope, line, parse_range
from splitc.errors import SplitcError
from splitc.partition.select import Option, rank
from splitc.runtime import EdgeClient, Pipeline, PlanSet
from splitc.runtime.bandwidth import BandwidthEstimator, PlanSwitcher
from splitc.runtime.netem import NetemThread
from splitc.runtime.server import ServerThread
from tests.conftest import run_model
from tests.stitching import SLOW_EDGE


def _random_options(rng: np.random.Generator, count: int) -> list[Option]:
    options = [Option((), 32, float(rng.uniform(5, 200)), 0.0, 0.0, 0.0, 0.0, "edge-only")]
    for i in range(count):
        options.append(Option((f"t{i % 5}",), int(rng.choice([2, 4, 8, 32])), float(rng.uniform(0, 50)),
                              float(rng.uniform(0, 20)), float(rng.uniform(50, 2e6)), float(rng.choice([0, 40])),
                              0.0))
    return options


@pytest.mark.parametrize("seed", range(12))
def test_envelope_equals_a_brute_force_scan(seed: int) -> None:
    rng = np.random.default_rng(seed)
    options, rtt = _random_options(rng, int(rng.integers(1, 40))), float(rng.uniform(0, 50))
    lo, hi = 30_000.0, 12_500_000.0
    pieces = envelope(options, lo, hi, rtt)
    assert pieces[0].lo == lo and pieces[-1].hi == hi
    assert all(a.hi == b.lo for a, b in zip(pieces, pieces[1:]))  # contiguous, ascending
    grid = np.geomspace(lo, hi, 20_000)[:-1]
    winners = set()
    for bw in grid:
        best = rank(options, bw, rtt, 1.0)[0]
        winners.add(id(best))
        piece = next(p for p in pieces if p.lo <= bw < p.hi)
        ours = piece.option.total_ms(bw, rtt)
        assert ours == pytest.approx(best.total_ms(bw, rtt), rel=1e-9, abs=1e-9)
    chosen = {id(p.option) for p in pieces}
    assert winners <= chosen  # nothing optimal is missing
    for piece in pieces:  # every emitted option wins on the grid unless its interval is narrower than a step
        if piece.hi / piece.lo > 1.01:
            assert id(piece.option) in winners


def test_breakpoints_are_exact_crossings() -> None:
    rng = np.random.default_rng(7)
    options, rtt = _random_options(rng, 30), 20.0
    pieces = envelope(options, 10_000.0, 1e8, rtt)
    assert len(pieces) >= 3
    for left, right in zip(pieces, pieces[1:]):
        (a1, b1), (a2, b2) = line(left.option, rtt), line(right.option, rtt)
        x = (a2 - a1) / (b1 - b2)  # where the two lines meet, exactly
        assert float(1 / x) == right.lo
        assert a1 + b1 * x == a2 + b2 * x


def test_envelope_ties_and_single_options() -> None:
    same = [Option(("t",), 8, 1.0, 1.0, 1000.0, 0.0, 0.0), Option(("t",), 4, 1.0, 1.0, 1000.0, 0.0, 0.0)]
    pieces = envelope(same, 1e3, 1e6, 5.0)
    assert len(pieces) == 1 and pieces[0].option.bits == 4  # rank's tie-break: fewer bits
    dominated = [Option((), 32, 1.0, 0.0, 0.0, 0.0, 0.0), Option(("t",), 8, 5.0, 1.0, 10.0, 0.0, 0.0)]
    assert [p.option.cut for p in envelope(dominated, 1e3, 1e6, 5.0)] == [()]
    assert line(dominated[0], 5.0) == (Fraction(1.0), Fraction(0))
    with pytest.raises(ValueError):
        envelope(dominated, 1e6, 1e3, 5.0)


def test_parse_range() -> None:
    assert parse_range("300KBps..50Mbps") == (300_000.0, 6_250_000.0)
    for bad in ("5Mbps", "50Mbps..300KBps", "a..b"):
        with pytest.raises(SplitcError):
            parse_range(bad)


@pytest.fixture(scope="module")
def adaptive_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("adaptive") / "out"
    result = compile_range(zoo.build("resnet_blocks"), "20KBps..50Mbps", target=SLOW_EDGE, rtt="10ms", bits=32,
                           emit_fallback=True)
    result.save(out)
    return out


def test_compiled_range_layout_and_index(adaptive_out: Path) -> None:
    index = json.loads((adaptive_out / "plans.json").read_text())
    assert index["schema"] == "splitc.plans/1" and not (adaptive_out / "plan.json").exists()
    ids = [p["id"] for p in index["plans"]]
    assert len(ids) >= 2 and index["breakpoints_Bps"] == [p["interval_Bps"][0] for p in index["plans"][1:]]
    assert index["plans"][0]["interval_Bps"][0] == 20_000 and index["plans"][-1]["interval_Bps"][1] == 6_250_000
    plans = PlanSet(adaptive_out)
    assert plans.adaptive and [e.id for e in plans.entries] == ids
    feeds = zoo.random_inputs(zoo.build("resnet_blocks"))
    expected = run_model(zoo.build("resnet_blocks"), feeds)["logits"]
    for entry in plans.entries:
        assert entry.plan["fallback"] is True and entry.plan["adaptive"]["interval_Bps"] == list(entry.interval)
        logits = Pipeline(entry.dir).run(feeds)["logits"]
        np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    assert plans.for_bandwidth(1.0).id == ids[0] and plans.for_bandwidth(1e12).id == ids[-1]


def test_each_plan_is_what_a_single_bandwidth_compile_chooses(tmp_path: Path) -> None:
    model = zoo.build("resnet_blocks")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = compile_range(model, (20_000.0, 6_250_000.0), target=SLOW_EDGE, rtt="10ms", bits=8)
        assert len(result.pieces) >= 2
        for piece in result.pieces:
            bandwidth = (piece.lo * piece.hi) ** 0.5
            single = splitc.compile(model, target=SLOW_EDGE, rtt="10ms", bits=8, bandwidth=bandwidth)
            assert [c["tensor"] for c in single.plan["cut"]] == list(piece.option.cut)
            assert single.plan["predicted"]["total_ms"] == pytest.approx(piece.a_ms + piece.b / bandwidth)


def test_estimator_converges_on_a_synthetic_link() -> None:
    rtt_ms, bandwidth = 30.0, 400_000.0
    estimator = BandwidthEstimator(alpha=0.3)
    estimator.observe_rtt(25.0)
    for i in range(40):
        nbytes = [2_000, 50_000, 200_000][i % 3]
        estimator.observe_transfer(nbytes, rtt_ms + nbytes / bandwidth * 1e3)
    assert estimator.bandwidth == pytest.approx(bandwidth, rel=0.1)
    assert estimator.rtt_ms == pytest.approx(rtt_ms, rel=0.15)


def test_switcher_hysteresis() -> None:
    entries = [SimpleNamespace(id="p0", interval=(1e3, 1e5)), SimpleNamespace(id="p1", interval=(1e5, 1e7))]
    plans = SimpleNamespace(entries=entries, for_bandwidth=lambda bw: entries[0] if bw < 1e5 else entries[1])
    switcher = PlanSwitcher(plans, hysteresis=0.2, dwell_s=0.0)
    assert switcher.current.id == "p0" and switcher.select(None).id == "p0"
    assert switcher.select(1.1e5, 1).id == "p0"  # inside the 20% margin: stay
    assert switcher.select(1.3e5, 2).id == "p0" and switcher.pending  # outside once: wait for confirmation
    assert switcher.select(1.3e5, 2).id == "p0"  # no new evidence: still waiting
    assert switcher.select(1.3e5, 3).id == "p1" and switcher.switches == 1
    assert switcher.select(0.9e5, 4).id == "p1"  # back inside the margin of p1: stay
    assert switcher.select(0.5e5, 5).id == "p1" and switcher.select(0.5e5, 6).id == "p0" and switcher.switches == 2
    timed = PlanSwitcher(plans, hysteresis=0.2, dwell_s=60.0)
    assert timed.select(1.3e5, 1).id == "p1"  # the first estimate ever seen switches at once
    assert [timed.select(0.5e5, k).id for k in range(2, 6)] == ["p1"] * 4  # but then it dwells 60 s


def test_estimator_knows_when_a_transfer_carries_no_bandwidth_information() -> None:
    estimator = BandwidthEstimator()
    for _ in range(5):
        estimator.observe_rtt(3.0)
    estimator.observe_transfer(64_000, 3.0 + 10.0, "probe")  # 6.4 MB/s
    assert estimator.informative and estimator.bandwidth == pytest.approx(6.4e6, rel=0.01)
    updates = estimator.updates
    for ms in (5.5, 6.0, 7.5, 5.2):  # 200-byte requests: overhead and noise, not bandwidth
        estimator.observe_transfer(200, ms, "infer")
        assert not estimator.informative
    assert estimator.updates == updates and estimator.bandwidth == pytest.approx(6.4e6, rel=0.01)
    assert estimator.base("infer") == 5.2 and estimator.base("rtt") == 3.0
    for _ in range(2):  # a step down, seen twice: the fit restarts
        estimator.observe_transfer(64_000, 3.0 + 640.0, "probe")
    assert estimator.bandwidth == pytest.approx(1e5, rel=0.01)


@pytest.mark.serial  # timing through the link emulator: run alone after the parallel run
def test_plans_switch_under_a_changing_throttle(adaptive_out: Path) -> None:
    model = zoo.build("resnet_blocks")
    feeds = [zoo.random_inputs(model, seed=s) for s in range(4)]
    expected = [run_model(model, f)["logits"] for f in feeds]
    plans = PlanSet(adaptive_out)
    low, high = plans.entries[0], plans.entries[-1]
    seen = []
    with ServerThread(adaptive_out) as server:
        with NetemThread(("127.0.0.1", server.port), rate=5_000_000, rtt_ms=10) as proxy:
            with EdgeClient(adaptive_out, f"http://127.0.0.1:{proxy.port}", probe_interval_s=0.2) as client:
                for phase, (rate, wanted) in enumerate(((5_000_000, high), (60_000, low), (5_000_000, high))):
                    proxy.set_link(rate=rate)
                    deadline, streak, i = time.monotonic() + 8.0, 0, 0
                    while streak < 3 and time.monotonic() < deadline:  # until the wanted plan runs 3 times
                        result = client.infer(feeds[i % 4])
                        np.testing.assert_allclose(result.outputs["logits"], expected[i % 4], rtol=1e-5,
                                                   atol=1e-5 * np.abs(expected[i % 4]).max())
                        assert not result.fallback
                        streak = streak + 1 if result.plan_id == wanted.id else 0
                        seen.append((phase, result.plan_id))
                        i += 1
                        time.sleep(0.02)
                    assert streak == 3, f"phase {phase} at {rate} B/s never settled on {wanted.id}: {seen}"
    assert client.switcher.switches >= 2 and len(seen) < 200


def test_server_serves_every_cloud_half_of_a_range(adaptive_out: Path) -> None:
    import httpx

    with ServerThread(adaptive_out) as server:
        info = httpx.get(server.url + "/v1/plans", timeout=5).json()
    assert info["adaptive"] and len(info["plans"]) >= 2
    assert [p["served"] for p in info["plans"]] == [p.has_cloud for p in PlanSet(adaptive_out).entries]


def test_cli_range_compile(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx.save(zoo.build("chain_cnn"), model)
    env = {**os.environ, "COLUMNS": "160"}
    ran = subprocess.run([sys.executable, "-m", "splitc.cli", str(model), "--bw", "300KBps..50Mbps", "--bits", "32",
                          "--emit-fallback", "--json", "-o", str(tmp_path / "out")], capture_output=True, text=True,
                         env=env, timeout=300)
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert summary["range_Bps"] == [300_000.0, 6_250_000.0] and summary["plans"]
    first = tmp_path / "out" / summary["plans"][0]["dir"] / "plan.json"
    assert json.loads(first.read_text())["fallback"] is True
    again = subprocess.run([sys.executable, "-m", "splitc.cli", str(model), "--bw", "1MBps..2MBps", "--bits", "32",
                            "-o", str(tmp_path / "out")], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr  # an earlier range output is replaced
