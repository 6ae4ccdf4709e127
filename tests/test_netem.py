"""The user-space link emulator: achieved rate and delay, live changes, and a kernel-shaped cross-check."""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from splitc.errors import SplitcError
from splitc.runtime.netem import Netem, NetemThread, TokenBucket, TraceLink, check_trace, read_trace, run
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


# ----------------------------------------------------------------------------- trace mode


def test_trace_link_is_exact_in_virtual_time() -> None:
    link = TraceLink([2, 2, 5], origin=0.0)  # opportunities at 2, 2, 5, 7, 7, 10, 12, 12, 15, 17, 17, 20 ms ...
    assert link.rate == pytest.approx(3 * 1500 / 0.005)
    assert link.reserve(1500, 0.0) == pytest.approx(0.002)
    assert link.reserve(1500, 0.0) == pytest.approx(0.002)  # the second opportunity of the same millisecond
    assert link.reserve(100, 0.0) == pytest.approx(0.005)  # a packet's worth of the next opportunity ...
    assert link.reserve(1400, 0.001) == pytest.approx(0.004)  # ... shared with the next bytes
    assert link.reserve(3001, 0.001) == pytest.approx(0.009)  # 7, 7 and 10 ms
    assert link.reserve(1, 0.0195) == pytest.approx(0.0005)  # idle meanwhile: 12 .. 17 ms are lost; 20 ms
    assert link.reserve(1500, 0.0201) == pytest.approx(0.0019)  # 22 ms (the next cycle's 2 ms)


def test_bad_trace_is_refused_with_its_line(tmp_path) -> None:
    path = tmp_path / "bad.up"
    path.write_text("3\n9\n4\n")
    with pytest.raises(SplitcError, match=f"^{path}:3: timestamp 4 is smaller"):
        read_trace(path)
    with pytest.raises(SplitcError, match="lasts 0 ms"):
        NetemThread(("127.0.0.1", 9), trace=[0, 0])
    with pytest.raises(SplitcError, match="empty"):
        check_trace([])
    with pytest.raises(SplitcError, match=f"^{path}:3:"):
        run(("127.0.0.1", 0), ("127.0.0.1", 9), None, 0.0, trace=path)  # refused before listening


def test_set_link_keeps_a_trace_driven_uplink() -> None:
    netem = Netem(("127.0.0.1", 9), rate=100_000, trace=[1])
    netem.set_link(rate=50_000, rtt_ms=30)
    assert isinstance(netem.up.bucket, TraceLink) and netem.up.bucket.rate == pytest.approx(1.5e6)
    assert netem.down.bucket.rate == 50_000 and netem.up.delay_s == netem.down.delay_s == pytest.approx(0.015)


def two_rate_trace(low_mbps: float, high_mbps: float) -> list[int]:
    """``low`` for one second, then ``high`` for one second: packets spread evenly, period 2000 ms."""
    stamps = []
    for second, mbps in enumerate((low_mbps, high_mbps)):
        per_ms = mbps * 1e6 / 8 / 1500 / 1e3
        stamps += [1000 * second + math.ceil((n + 1) / per_ms) for n in range(round(per_ms * 1000))]
    return stamps


class Recorder:
    """A TCP server that drains one connection and records (monotonic time, bytes) of each read."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.address = self.sock.getsockname()
        self.reads: list[tuple[float, int]] = []
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            while data := conn.recv(65536):
                self.reads.append((time.monotonic(), len(data)))

    def per_window(self, origin: float, windows: int) -> list[int]:
        """Bytes received in each second ``[origin + i, origin + i + 1)``."""
        totals = [0] * windows
        for when, size in self.reads:
            index = math.floor(when - origin)
            if 0 <= index < windows:
                totals[index] += size
        return totals


def test_trace_mode_delivers_the_trace_rate_per_second() -> None:
    stamps = two_rate_trace(2.0, 8.0)
    recorder = Recorder()
    with NetemThread(recorder.address, trace=stamps) as proxy:
        origin = proxy.netem.trace.origin
        stop = threading.Event()

        def send() -> None:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
                while not stop.is_set():
                    sock.sendall(bytes(16384))

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        time.sleep(max(0.0, origin + 4.1 - time.monotonic()))
        stop.set()
        sender.join(10)
    recorder.sock.close()
    got = recorder.per_window(origin, 4)[1:]  # the first second includes the connection's start
    link = TraceLink(stamps, origin=0.0)
    want = [0] * 4
    index = 0
    while (at := link.opportunity_ms(index)) < 4000:
        want[at // 1000] += 1500
        index += 1
    assert want[1:] == pytest.approx([1_000_000, 250_000, 1_000_000], rel=0.01)  # the trace: 8, 2, 8 Mbps
    print(f"delivered {got} bytes per second, trace {want[1:]}")
    for sent, expected in zip(got, want[1:]):
        assert expected * 0.75 <= sent <= expected * 1.25


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
