"""Serving at scale: `splitc serve` (uvicorn) against `--engine ray` (Ray Serve), replicas and batching.

Two cloud halves: the digits CNN cut mid-network (4 bits, static Huffman
codebook; a tiny half, so the fixed cost per request dominates) and a
ResNet-50-shaped network (bench/e2e.py) cut after its stem (8 bits; the cloud
half is 15 of 16 stages, about 3.9 GFLOPs). Configurations: uvicorn (one
process, a thread per core, 1 onnxruntime thread each), Ray with 1 and 2
replicas per plan, batching off and on (``--batch-max 16 --batch-wait-ms 5``).
For each, 1, 8 and 32 concurrent clients (threads of this process, one
keep-alive connection each) post pre-encoded request bodies (so the clients'
edge halves do not compete with the server for the 2 cores) and check every
reply against the in-process cloud half (rtol 1e-5). Reports throughput,
p50/p99 latency, the RSS of the serving processes, and the fixed overhead per
request at 1 client. Writes bench/results/serve_scale.md and serve_scale.json.

    python bench/serve_scale.py [--quick]
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
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import splitc  # noqa: E402
from splitc.runtime import Pipeline  # noqa: E402
from splitc.wire import request  # noqa: E402

RESULTS = ROOT / "bench" / "results"
DIGITS = ROOT / "examples" / "digits"
BATCH_MAX, BATCH_WAIT_MS = 16, 5.0
RTOL = 1e-5
CONFIGS = [("uvicorn", 0, 1), ("ray", 1, 1), ("ray", 2, 1), ("ray", 1, BATCH_MAX), ("ray", 2, BATCH_MAX)]


def compile_models(work: Path) -> dict[str, Path]:
    from e2e import resnet50

    outs = {"digits": work / "digits", "resnet50": work / "resnet50"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        splitc.compile(DIGITS / "digits_cnn.onnx", target="raspberry-pi-4", cut=["/features/features.2/Relu_output_0"],
                       bits=4, calib=DIGITS / "calib.npz").save(outs["digits"])
        splitc.compile(resnet50(), target="jetson-tx2", cut=["stem/pool"], bits=8).save(outs["resnet50"])
    return outs


def bodies(out: Path, count: int) -> tuple[list[bytes], list[np.ndarray]]:
    """Request bodies and the expected outputs (the in-process cloud half) of ``count`` inputs."""
    pipeline = Pipeline(out)
    crc = zlib.crc32((out / "plan.json").read_bytes())
    spec = pipeline.plan["edge"]["inputs"][0]
    rng = np.random.default_rng(3)
    if out.name == "digits":
        inputs = [x[None] for x in np.load(DIGITS / "test.npz")["image"][:count]]
    else:
        inputs = [rng.standard_normal(spec["shape"]).astype(np.float32) for _ in range(count)]
    result = [], []
    for k, x in enumerate(inputs):
        frames = pipeline.codec.encode(pipeline.run_edge({spec["name"]: x}))
        result[0].append(request.encode_request("default", frames, k + 1, crc))
        result[1].append(pipeline.run({spec["name"]: x})[pipeline.plan["model"]["outputs"][0]["name"]])
    return result


def client(url: str, payloads: list[bytes], expected: list[np.ndarray], count: int, offset: int):
    latencies, errors, wrong = [], 0, 0
    with httpx.Client(timeout=120) as http:
        for i in range(count):
            k = (offset + i) % len(payloads)
            start = time.perf_counter()
            try:
                reply = http.post(url + "/v1/infer", content=payloads[k])
                reply.raise_for_status()
                message = request.decode_response(reply.content)
            except Exception:  # counted: every failure is reported
                errors += 1
                continue
            latencies.append((time.perf_counter() - start) * 1e3)
            got = request.record_array(message.records[0])
            ref = expected[k]
            wrong += int(got.shape != ref.shape or not np.allclose(got, ref, rtol=RTOL, atol=RTOL * np.abs(ref).max()))
    return latencies, errors, wrong


def measure(url: str, payloads, expected, clients: int, per_client: int) -> dict:
    client(url, payloads, expected, 3, 0)  # warm-up
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        parts = list(pool.map(lambda c: client(url, payloads, expected, per_client, c), range(clients)))
    elapsed = time.perf_counter() - start
    latencies = np.concatenate([np.array(p[0]) for p in parts]) if any(p[0] for p in parts) else np.zeros(1)
    return {"clients": clients, "requests": clients * per_client, "errors": sum(p[1] for p in parts),
            "wrong": sum(p[2] for p in parts), "seconds": elapsed,
            "throughput_rps": sum(len(p[0]) for p in parts) / elapsed,
            "p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99))}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pids) -> float:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.Error:
            pass
    return total / 1e6


def run_uvicorn(out: Path, levels, payloads, expected) -> tuple[list[dict], float]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "splitc.cli", "serve", str(out), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        rows = [measure(url, payloads, expected, c, n) for c, n in levels]
        return rows, rss_mb([server.pid])
    finally:
        server.terminate()
        server.wait(30)


def run_ray(out: Path, name: str, replicas: int, batch: int, base: str, levels, payloads, expected):
    from ray import serve

    from splitc.runtime.ray_engine import RayOptions, deploy

    info = deploy(out, RayOptions(replicas=replicas, batch_max=batch, batch_wait_ms=BATCH_WAIT_MS,
                                  start_timeout_s=180), app_name=name, route_prefix=f"/{name}")
    url = f"{base}/{name}"
    try:
        mode = httpx.get(url + "/v1/plans", timeout=30).json()["plans"][0].get("batching", {})
        rows = [measure(url, payloads, expected, c, n) for c, n in levels]
        handle = serve.get_deployment_handle("plan-default", app_name=name)
        pids = set()
        for _ in range(30):
            pids.add(handle.describe.remote().result(timeout_s=30)["pid"])
            if len(pids) == replicas:
                break
        ray_pids = [p.pid for p in psutil.process_iter(["name"]) if (p.info["name"] or "").startswith(
            ("ray::", "raylet", "gcs_server"))]
        return rows, rss_mb(pids), rss_mb(ray_pids), mode, info
    finally:
        serve.delete(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests (a smoke run)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/splitc-serve-scale"))
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    import ray

    from splitc.runtime.ray_engine import start_http

    outs = compile_models(args.work)
    scale = 0.25 if args.quick else 1.0
    levels = {"digits": [(1, 200), (8, 60), (32, 20)], "resnet50": [(1, 12), (8, 6), (32, 4)]}
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, object_store_memory=200 * 1024 * 1024,
             log_to_driver=False, logging_level="ERROR")
    port = free_port()
    start_http("127.0.0.1", port)
    base = f"http://127.0.0.1:{port}"
    results = {"cpus": os.cpu_count(), "machine": platform.processor() or platform.machine(),
               "ray": ray.__version__, "batch_max": BATCH_MAX, "batch_wait_ms": BATCH_WAIT_MS, "rtol": RTOL,
               "models": {}}
    try:
        for model, out in outs.items():
            payloads, expected = bodies(out, 8)
            model_levels = [(c, max(2, int(n * scale))) for c, n in levels[model]]
            rows = []
            for engine, replicas, batch in CONFIGS:
                label = "uvicorn" if engine == "uvicorn" else f"ray {replicas}r" + (f" batch {batch}" if batch > 1
                                                                                     else "")
                print(f"{model}: {label}", flush=True)
                if engine == "uvicorn":
                    measured, rss, total, mode = *run_uvicorn(out, model_levels, payloads, expected), None, {}
                    total = rss
                else:
                    measured, rss, total, mode, _ = run_ray(out, f"{model}-{replicas}-{batch}", replicas, batch,
                                                            base, model_levels, payloads, expected)
                rows.append({"config": label, "engine": engine, "replicas": replicas, "batch_max": batch,
                             "batching": mode, "rss_mb": rss, "rss_total_mb": total, "levels": measured})
                for row in measured:
                    print(f"  {row['clients']:>2} clients: {row['throughput_rps']:7.1f} req/s  p50 "
                          f"{row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  errors {row['errors']} "
                          f"wrong {row['wrong']}", flush=True)
            results["models"][model] = rows
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()
    write(results)


def _level(row: dict, clients: int) -> dict:
    return next(r for r in row["levels"] if r["clients"] == clients)


def write(results: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve_scale.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = ["# Serving at scale (bench/serve_scale.py)", "",
             f"One machine, {results['cpus']} CPUs ({results['machine']}), Ray {results['ray']}. Clients are threads of "
             "the benchmark process posting pre-encoded request bodies over loopback (one keep-alive connection "
             "each); clients, proxy and replicas share the cores. Every reply was checked against the in-process "
             f"cloud half (rtol {results['rtol']:g}). Batching: `--batch-max {results['batch_max']} --batch-wait-ms "
             f"{results['batch_wait_ms']:g}`. uvicorn: `splitc serve` (a thread per core, 1 onnxruntime thread each); "
             "Ray: cores // replicas onnxruntime threads per replica. RSS: the uvicorn process; for Ray, the "
             "plan replicas (and, in brackets, every Ray process: GCS, raylet, controller, proxy, ingress, "
             "replicas).", ""]
    for model, rows in results["models"].items():
        title = {"digits": "Digits CNN, cut mid-network, 4 bits",
                 "resnet50": "ResNet-50-shaped, cut after the stem, 8 bits (cloud half ~3.9 GFLOPs)"}[model]
        lines += [f"## {title}", "",
                  "| config | clients | req/s | p50 ms | p99 ms | p99/p50 | errors | wrong | RSS MB |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for row in rows:
            rss = f"{row['rss_mb']:.0f}" if row["engine"] == "uvicorn" else \
                f"{row['rss_mb']:.0f} ({row['rss_total_mb']:.0f})"
            for level in row["levels"]:
                lines.append(f"| {row['config']} | {level['clients']} | {level['throughput_rps']:.1f} | "
                             f"{level['p50_ms']:.1f} | {level['p99_ms']:.1f} | "
                             f"{level['p99_ms'] / max(level['p50_ms'], 1e-9):.2f} | {level['errors']} | "
                             f"{level['wrong']} | {rss} |")
        modes = {row["config"]: row["batching"].get("mode") for row in rows if row["batching"]}
        lines += ["", "Batching mode reported by `GET /v1/plans`: " + ", ".join(f"{k}: {v}" for k, v in modes.items())
                  + ".", ""]
        base = next(r for r in rows if r["engine"] == "uvicorn")
        plain = next(r for r in rows if r["config"] == "ray 1r")
        over = _level(plain, 1)["p50_ms"] - _level(base, 1)["p50_ms"]
        lines.append(f"Fixed overhead per request at 1 client (p50, Ray 1 replica without batching minus uvicorn): "
                     f"{over:+.1f} ms ({_level(plain, 1)['p50_ms']:.1f} vs {_level(base, 1)['p50_ms']:.1f} ms).")
        best = max((r for r in rows if r["batch_max"] > 1), key=lambda r: _level(r, 32)["throughput_rps"])
        ratio = _level(best, 32)["throughput_rps"] / _level(base, 32)["throughput_rps"]
        tail = _level(best, 32)["p99_ms"] / _level(best, 32)["p50_ms"]
        lines += [f"At 32 clients the best batched configuration ({best['config']}) serves "
                  f"{ratio:.2f}x uvicorn's throughput with p99/p50 = {tail:.2f}.", ""]
        if model == "resnet50":
            verdict = "met" if ratio >= 1.5 and tail < 2 else "not met"
            lines += [f"Target (ResNet-50-shaped, batching on, >= 1.5x uvicorn at 32 clients, p99 < 2x p50): "
                      f"**{verdict}**.", ""]
    (RESULTS / "serve_scale.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
