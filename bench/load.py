"""Load test of `splitc serve`: concurrent edge clients against one server process.

Compiles the digits CNN cut mid-network (4 bits, static Huffman codebook),
starts `splitc serve` in a subprocess, and runs ``--clients`` threads, each an
``EdgeClient`` with its own keep-alive connection sending ``--requests``
requests. Reports throughput, latency percentiles, errors (must be 0) and the
server's resident memory sampled during the run (it must stay flat). Writes
bench/results/load.md and load.json.

    python bench/load.py [--clients 32] [--requests 100]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import splitc  # noqa: E402
from splitc.runtime import EdgeClient, Pipeline  # noqa: E402

DIGITS = ROOT / "examples" / "digits"
RESULTS = ROOT / "bench" / "results"
MID = "/features/features.2/Relu_output_0"


def compile_plan(out: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splitc.compile(DIGITS / "digits_cnn.onnx", target="raspberry-pi-4", cut=[MID], bits=4,
                       calib=DIGITS / "calib.npz").save(out)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(out: Path, port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "splitc.cli", "serve", str(out), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.1)
    server.kill()
    raise RuntimeError("splitc serve did not start")


class RssSampler:
    """The server's RSS every ``period`` seconds, in a background thread."""

    def __init__(self, pid: int, period: float = 0.25) -> None:
        self.process, self.period = psutil.Process(pid), period
        self.samples: list[tuple[float, int]] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self.done.wait(self.period):
            self.samples.append((time.monotonic() - start, self.process.memory_info().rss))

    def __enter__(self) -> "RssSampler":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join()


def client_work(out: Path, url: str, images: np.ndarray, expected: list[np.ndarray], count: int, seed: int):
    latencies, errors, wrong = [], 0, 0
    with EdgeClient(out, url, timeout=30, retries=0) as client:
        for i in range(count):
            k = (seed + i) % len(images)
            start = time.perf_counter()
            try:
                logits = client.run({"image": images[k][None]})["logits"]
            except Exception:  # counted, not raised: the test reports every failure
                errors += 1
                continue
            latencies.append((time.perf_counter() - start) * 1e3)
            wrong += int(not np.array_equal(logits, expected[k]))
    return latencies, errors, wrong


def run(clients: int, requests: int, work: Path) -> dict:
    out = compile_plan(work / "plan")
    images = np.load(DIGITS / "test.npz")["image"]
    pipeline = Pipeline(out)
    expected = [pipeline.run({"image": x[None]})["logits"] for x in images]
    port = free_port()
    server = start_server(out, port)
    url = f"http://127.0.0.1:{port}"
    try:
        client_work(out, url, images, expected, 20, 0)  # warm-up
        with RssSampler(server.pid) as rss, ThreadPoolExecutor(clients) as pool:
            start = time.perf_counter()
            parts = list(pool.map(lambda s: client_work(out, url, images, expected, requests, s), range(clients)))
            elapsed = time.perf_counter() - start
        metrics = httpx.get(url + "/metrics", timeout=5).text
    finally:
        server.terminate()
        server.wait(30)
    latencies = np.concatenate([np.array(p[0]) for p in parts])
    mem = [m for _, m in rss.samples]
    return {
        "clients": clients, "requests_per_client": requests, "total": clients * requests,
        "errors": int(sum(p[1] for p in parts)), "wrong_outputs": int(sum(p[2] for p in parts)),
        "seconds": elapsed, "throughput_rps": len(latencies) / elapsed,
        "p50_ms": float(np.percentile(latencies, 50)), "p90_ms": float(np.percentile(latencies, 90)),
        "p99_ms": float(np.percentile(latencies, 99)), "max_ms": float(latencies.max()),
        "rss_mb_first": mem[0] / 1e6 if mem else 0.0, "rss_mb_last": mem[-1] / 1e6 if mem else 0.0,
        "rss_mb_max": max(mem) / 1e6 if mem else 0.0, "rss_samples": len(mem),
        "server_errors_metric": [line for line in metrics.splitlines() if line.startswith("splitc_errors_total")],
        "cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
    }


def write(result: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "load.json").write_text(json.dumps(result, indent=1) + "\n")
    text = "\n".join([
        "# Load test (bench/load.py)", "",
        f"`splitc serve` (one process, default thread pool) on {result['cpus']} CPUs, the digits CNN cut "
        "mid-network at 4 bits with a static Huffman codebook. "
        f"{result['clients']} concurrent `EdgeClient`s (threads in one process, one keep-alive connection each) "
        f"x {result['requests_per_client']} requests, no emulated link. Clients and server share the machine.", "",
        "| requests | errors | wrong outputs | seconds | throughput (req/s) | p50 ms | p90 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {result['total']} | {result['errors']} | {result['wrong_outputs']} | {result['seconds']:.1f} | "
        f"{result['throughput_rps']:.0f} | {result['p50_ms']:.1f} | {result['p90_ms']:.1f} | {result['p99_ms']:.1f} | "
        f"{result['max_ms']:.1f} |", "",
        f"Server RSS over the run ({result['rss_samples']} samples): first {result['rss_mb_first']:.1f} MB, "
        f"last {result['rss_mb_last']:.1f} MB, max {result['rss_mb_max']:.1f} MB.", "",
        "Latency is the client's wall time per `EdgeClient.run` (edge half, encode, HTTP round trip, decode); "
        "every output was compared with the in-process `Pipeline` bit for bit.", "",
    ])
    (RESULTS / "load.md").write_text(text)
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--work", type=Path, default=Path("/tmp/splitc-load"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    write(run(args.clients, args.requests, args.work))


if __name__ == "__main__":
    main()
