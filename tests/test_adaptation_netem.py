"""Adaptation through the netem proxy: no flapping at steady rates, quick switches at steps, right estimates.

Two hand-made bandwidth-range outputs, each an edge-only plan ``p0`` below a
breakpoint and a cloud plan ``p1`` above it:

* small frames: the digits CNN, ``p1`` sends the 8-bit input (a 71-byte frame),
  breakpoint 537 KB/s (a tegra-k1 edge, an h100 cloud and a 0.01 ms RTT);
* large frames: a model whose ``p1`` sends a 100 KiB float32 input, breakpoint 1 MB/s.

A request every 50 ms. Targets: zero flips at a steady rate, the switch within
3 requests of a step, and, with large frames, the settled estimate within 20%
of the set rate. Small frames cannot measure the link, so there the client
probes (``probe_interval_s``); its requests leave the estimate alone.
"""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import splitc
from splitc.runtime import EdgeClient
from splitc.runtime.netem import NetemThread, _default_burst
from splitc.runtime.server import ServerThread
from tests.stitching import DIGITS

# Timing on a shared 2-core machine: `make test` runs these after the parallel run, alone.
pytestmark = pytest.mark.serial

SLOW, FAST = 100_000.0, 6_250_000.0  # 100 KB/s and 50 Mbps


def _range_output(out: Path, model, cloud_cut: list[str], bits: int, breakpoint_Bps: float) -> Path:
    out.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splitc.compile(model, cut=[]).save(out / "plans" / "p0")
        splitc.compile(model, cut=cloud_cut, bits=bits, codec="none" if bits == 32 else "huffman").save(
            out / "plans" / "p1")
    index = {"schema": "splitc.plans/1", "breakpoints_Bps": [breakpoint_Bps],
             "plans": [{"id": "p0", "interval_Bps": [30_000.0, breakpoint_Bps]},
                       {"id": "p1", "interval_Bps": [breakpoint_Bps, 1e10]}]}
    (out / "plans.json").write_text(json.dumps(index))
    return out


def _big_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 160, 160])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("ReduceMean", ["r"], ["y"], keepdims=1)]
    return helper.make_model(helper.make_graph(nodes, "big", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return _range_output(tmp_path_factory.mktemp("small") / "out", onnx.load(DIGITS), ["image"], 8, 537_000.0)


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> Path:
    return _range_output(tmp_path_factory.mktemp("large") / "out", _big_model(), ["x"], 32, 1_000_000.0)


def _drive(out: Path, phases: list[tuple[float, float]], feeds: dict, probe_interval_s: float):
    """Run the phases ((rate B/s, seconds), ...): per request (phase, plan id, estimate); and the client."""
    log = []
    with ServerThread(out, threads=2) as server, NetemThread(("127.0.0.1", server.port), rate=phases[0][0],
                                                               rtt_ms=2.0) as proxy:
        with EdgeClient(out, f"http://127.0.0.1:{proxy.port}", probe_interval_s=probe_interval_s,
                        timeout=5) as client:
            for index, (rate, seconds) in enumerate(phases):
                proxy.set_link(rate=rate)
                end, tick = time.monotonic() + seconds, time.monotonic()
                while time.monotonic() < end:
                    result = client.infer(feeds)
                    assert not result.fallback, result.error
                    log.append((index, result.plan_id, client.estimator.bandwidth))
                    tick += 0.05
                    time.sleep(max(0.0, tick - time.monotonic()))
    return log, client


def _flips(plans: list[str]) -> int:
    return sum(a != b for a, b in zip(plans, plans[1:]))


def _requests_to_switch(log, phase: int, wanted: str) -> int:
    """How many requests of ``phase`` ran before the first one on ``wanted``."""
    plans = [plan for index, plan, _ in log if index == phase]
    assert wanted in plans, plans
    assert all(p == wanted for p in plans[plans.index(wanted):]), plans  # and it stays there
    return plans.index(wanted)


@pytest.mark.parametrize("rate,wanted", [(FAST, "p1"), (SLOW, "p0")])
def test_small_frames_steady_rate_never_flips(small, rate, wanted) -> None:
    log, client = _drive(small, [(rate, 3.0)], {"image": np.zeros((1, 1, 8, 8), np.float32)}, 0.5)
    plans = [plan for _, plan, _ in log]
    assert plans[-1] == wanted and _flips(plans) <= (1 if wanted == "p1" else 0), plans  # at most the first move
    assert plans[3:] == [wanted] * (len(plans) - 3), plans
    assert len(plans) >= 20


def test_small_frames_switch_within_3_requests_of_a_step(small) -> None:
    phases = [(SLOW, 2.0), (FAST, 2.5), (SLOW, 2.5)]
    log, client = _drive(small, phases, {"image": np.zeros((1, 1, 8, 8), np.float32)}, 0.05)
    assert _requests_to_switch(log, 1, "p1") <= 3, log
    assert _requests_to_switch(log, 2, "p0") <= 3, log
    assert client.switcher.switches == 2


def test_large_frames_steady_rate_settles_within_20_percent(large) -> None:
    log, client = _drive(large, [(FAST, 3.5)], {"x": np.ones((1, 1, 160, 160), np.float32)}, 0.5)
    plans = [plan for _, plan, _ in log]
    assert _flips(plans) <= 1 and plans[3:] == ["p1"] * (len(plans) - 3), plans
    settled = [bw for _, _, bw in log[len(log) // 2:]]
    # What the emulated link delivers for one 100 KiB frame: its token bucket sends the first `burst` bytes
    # at once, the rest at the set rate, so a frame crosses at FAST * n / (n - burst), not at FAST.
    n, burst = 160 * 160 * 4, _default_burst(FAST)
    delivered = FAST * n / (n - burst)
    assert np.median(settled) == pytest.approx(delivered, rel=0.2), (delivered, settled)
    assert all(bw == pytest.approx(delivered, rel=0.35) for bw in settled[-5:]), (delivered, settled)


def test_large_frames_switch_within_3_requests_of_a_step(large) -> None:
    phases = [(FAST, 2.0), (400_000.0, 2.5), (FAST, 2.0)]
    log, client = _drive(large, phases, {"x": np.ones((1, 1, 160, 160), np.float32)}, 0.05)
    assert _requests_to_switch(log, 1, "p0") <= 3, log
    assert _requests_to_switch(log, 2, "p1") <= 3, log
    assert client.switcher.switches == 3  # p0 -> p1 at the start, then one per step
