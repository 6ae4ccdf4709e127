"""The user-space link emulator: achieved rate and delay, live changes, and a kernel-shaped cross-check."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from splitc.runtime.netem import NetemThread, TokenBucket
from tests.stitching import Sink, measure_link

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sink():
    server = Sink()
    yield server
    server.close()


def test_token_bucket_is_exact_in_virtual_time() -> None:
    bucket = TokenBucket(1000.0, burst=100)
    assert bucket.reserve(100, bucket.last) == 0.0  # the burst goes at once
    assert bucket.reserve(500, bucket.last) == pytest.approx(0.5)
    assert bucket.reserve(500, bucket.last + 0.5) == pytest.approx(0.5)  # queued behind the first 500
    assert TokenBucket(None, 0).reserve(10**9, 0.0) == 0.0  # unlimited


@pytest.mark.parametrize("rate, rtt_ms", [(300_000, 40), (625_000, 20), (5_000_000, 10)])
def test_achieved_rate_and_delay_within_15_percent(sink, rate: float, rtt_ms: float) -> None:
    with NetemThread(sink.address, rate=rate, rtt_ms=rtt_ms) as proxy:
        rtt, achieved = measure_link(proxy.port, int(rate * 0.6))
    assert_close_to_link(rtt * 1e3, rtt_ms, achieved, rate)


def assert_close_to_link(rtt_ms: float, want_rtt_ms: float, rate: float, want_rate: float) -> None:
    """The proxy is never faster than asked; a busy machine (tests run in parallel) may make it a little slower."""
    assert want_rtt_ms * 0.9 - 1.0 <= rtt_ms <= want_rtt_ms * 1.15 + 5.0
    assert want_rate * 0.75 <= rate <= want_rate * 1.15


def test_rate_and_rtt_change_while_running(sink) -> None:
    with NetemThread(sink.address, rate=2_000_000, rtt_ms=10) as proxy:
        _, fast = measure_link(proxy.port, 1_000_000)
        proxy.set_link(rate=400_000, rtt_ms=30)
        rtt, slow = measure_link(proxy.port, 200_000)
    assert 2_000_000 * 0.75 <= fast <= 2_000_000 * 1.15
    assert_close_to_link(rtt * 1e3, 30, slow, 400_000)


def test_unreachable_target_closes_the_client_connection() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with NetemThread(("127.0.0.1", port)) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
            assert sock.recv(1) == b""  # closed, not hung


# ----------------------------------------------------------------------------- kernel cross-check


def _kernel_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root for ip netns and tc"
    if not (shutil.which("ip") and shutil.which("tc")):
        return "needs iproute2 (ip, tc)"
    probe = subprocess.run(["ip", "netns", "add", f"splprobe{os.getpid()}"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"ip netns is not available here: {probe.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", f"splprobe{os.getpid()}"], capture_output=True)
    return None


class KernelLink:
    """A namespace behind a veth pair whose root-side end is shaped by ``tc tbf``; a ``Sink`` runs inside."""

    def __init__(self, rate_bits: int) -> None:
        tag = os.getpid() % 100000
        self.ns, self.veth, self.peer = f"splns{tag}", f"splv{tag}a", f"splv{tag}b"
        self.address = "10.213.7.2"
        self.sink = None
        for command in (
            f"ip netns add {self.ns}",
            f"ip link add {self.veth} type veth peer name {self.peer}",
            f"ip link set {self.peer} netns {self.ns}",
            f"ip addr add 10.213.7.1/24 dev {self.veth}",
            f"ip link set {self.veth} up",
            f"ip netns exec {self.ns} ip addr add {self.address}/24 dev {self.peer}",
            f"ip netns exec {self.ns} ip link set {self.peer} up",
            f"ip netns exec {self.ns} ip link set lo up",
            f"tc qdisc add dev {self.veth} root tbf rate {rate_bits}bit burst 16kb latency 200ms",
        ):
            subprocess.run(command.split(), check=True, capture_output=True, timeout=30)
        script = (f"import sys, time; sys.path.insert(0, {str(ROOT)!r}); from tests.stitching import Sink; "
                  f"s = Sink({self.address!r}); print(s.address[1], flush=True); time.sleep(120)")
        self.sink = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-c", script],
                                     stdout=subprocess.PIPE, text=True)
        self.port = int(self.sink.stdout.readline())

    def close(self) -> None:
        if self.sink is not None:
            self.sink.kill()
            self.sink.wait(10)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True, timeout=30)
        subprocess.run(["ip", "link", "del", self.veth], capture_output=True, timeout=30)


KERNEL_UNAVAILABLE = _kernel_unavailable()


@pytest.mark.skipif(KERNEL_UNAVAILABLE is not None, reason=str(KERNEL_UNAVAILABLE))
def test_rate_matches_a_kernel_shaped_link(sink) -> None:
    rate = 500_000  # bytes/s = 4 Mbit/s
    link = KernelLink(rate * 8)
    try:
        _, kernel = measure_link(link.port, 600_000, host=link.address)
    finally:
        link.close()
    with NetemThread(sink.address, rate=rate) as proxy:
        _, ours = measure_link(proxy.port, 600_000)
    print(f"tc tbf: {kernel:.0f} B/s, netem proxy: {ours:.0f} B/s, configured {rate} B/s")
    assert kernel == pytest.approx(rate, rel=0.15)
    assert ours == pytest.approx(kernel, rel=0.15)
