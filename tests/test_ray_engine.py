"""``splitc serve --engine ray``: Ray Serve replicas, batching, a dying replica, autoscaling, hostile requests.

One local Ray cluster for the module (2 CPUs, no dashboard, a bounded object
store), Serve's HTTP proxy on an ephemeral 127.0.0.1 port. Every loop is bounded
in count and time; nothing asserts a duration.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest

pytestmark = pytest.mark.serial

try:
    import ray
    from ray import serve
except ImportError:  # the `ray` extra is not installed
    pytest.skip("Ray Serve is not installed (pip install 'splitc[ray]')", allow_module_level=True)

from splitc.testing import zoo
from splitc.adaptive import compile_range
from splitc.cli import main
from splitc.runtime import EdgeClient, Pipeline
from splitc.wire import codec, request
from splitc.runtime.ray_engine import RAY_HINT, RayOptions, deploy, start_http
from splitc.runtime.server import ServerThread
from tests.stitching import SLOW_EDGE, compile_quantized, compile_raw, digits_images, raw_http

TOKEN = "s3cret-token"
MAX_BODY = 100_000
RTOL = 1e-5  # batched vs single answers (splitc.runtime.batching.RTOL); singles are bit for bit
REPLICA_CPUS = 0.25  # every test app fits on the 2-CPU cluster at once


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024, log_to_driver=False,
             logging_level="ERROR")
    port = _free_port()
    try:
        start_http("127.0.0.1", port)
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def quant_out(tmp_path_factory) -> Path:
    return compile_quantized(tmp_path_factory.mktemp("ray-quant") / "out")


@pytest.fixture(scope="module")
def raw_out(tmp_path_factory) -> Path:
    return compile_raw(tmp_path_factory.mktemp("ray-raw") / "out")


@pytest.fixture(scope="module")
def range_out(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ray-range") / "out"
    compile_range(zoo.build("resnet_blocks"), "20KBps..50Mbps", target=SLOW_EDGE, rtt="10ms", bits=32).save(out)
    return out


def _app(cluster: str, out: Path, name: str, **options):
    """Deploy ``out`` as application ``name`` under ``/name``; the base URL of its API."""
    token = options.pop("token", None)
    max_body = options.pop("max_body", 64 * 1024 * 1024)
    info = deploy(out, RayOptions(replica_cpus=REPLICA_CPUS, start_timeout_s=120, **options), token=token,
                  max_body=max_body, app_name=name, route_prefix=f"/{name}")
    return f"{cluster}/{name}", info


@pytest.fixture(scope="module")
def digits_app(cluster, quant_out):
    """The digits CNN cut mid-network (4 bits, Huffman codebook): 2 replicas, batches of up to 8."""
    url, _ = _app(cluster, quant_out, "digits", replicas=2, batch_max=8, batch_wait_ms=20, token=TOKEN,
                  max_body=MAX_BODY)
    yield url
    serve.delete("digits")


def _auth() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


def _batch_counts(url: str) -> tuple[float, float, float]:
    """(observations, sum of batch sizes, observations of size 1) of splitc_batch_size on /metrics."""
    text = httpx.get(url + "/metrics", headers=_auth(), timeout=10).text
    values = {}
    for line in text.splitlines():
        for key in ("splitc_batch_size_count", "splitc_batch_size_sum", 'splitc_batch_size_bucket{le="1.0"'):
            if line.startswith(key):
                values[key] = float(line.rsplit(" ", 1)[1])
    return (values.get("splitc_batch_size_count", 0.0), values.get("splitc_batch_size_sum", 0.0),
            values.get('splitc_batch_size_bucket{le="1.0"', 0.0))


# ----------------------------------------------------------------------------- the command (its own Ray instance)


def test_the_serve_command_serves_and_stops_cleanly(quant_out) -> None:
    """`splitc serve --engine ray` starts a local Ray, serves, and on SIGTERM exits 0 leaving no Ray behind."""
    import signal
    import subprocess

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "splitc.cli", "serve", str(quant_out), "--engine", "ray",
                               "--port", str(port), "--replicas", "2", "--batch-max", "4"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                info = httpx.get(url + "/v1/plans", timeout=2)
                if info.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert server.poll() is None, server.stderr.read()
            time.sleep(0.2)
        assert info.json()["plans"][0]["batching"]["mode"] == "stacked"
        image = digits_images(1)[0]
        with EdgeClient(quant_out, url) as client:
            np.testing.assert_array_equal(client.run({"image": image})["logits"],
                                          Pipeline(quant_out).run({"image": image})["logits"])
        time.sleep(1.0)  # the command has announced itself and waits for a signal
        server.send_signal(signal.SIGTERM)
        assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(30)
    time.sleep(1.0)
    session = f"_{server.pid}/"  # Ray's session directory ends with the driver's pid: its GCS and raylet
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        leftovers = [p.pid for p in psutil.process_iter(["cmdline"])
                     if session in " ".join(p.info["cmdline"] or []) and "session_" in " ".join(p.info["cmdline"])]
        if not leftovers:
            break
        time.sleep(0.5)
    assert not leftovers


# ----------------------------------------------------------------------------- answers


def test_mid_network_cut_equals_the_pipeline_bit_for_bit(digits_app, quant_out) -> None:
    pipeline = Pipeline(quant_out)
    with EdgeClient(quant_out, digits_app, token=TOKEN) as client:
        for image in digits_images(6):  # one at a time: batches of one run the original half
            np.testing.assert_array_equal(client.run({"image": image})["logits"],
                                          pipeline.run({"image": image})["logits"])
    plans = httpx.get(digits_app + "/v1/plans", headers=_auth(), timeout=10).json()
    batching = plans["plans"][0]["batching"]
    assert plans["engine"]["name"] == "ray" and plans["engine"]["replicas"] == 2
    assert batching["mode"] == "stacked" and batching["max"] == 8 and batching["ort_threads"] >= 1


def test_sixteen_concurrent_clients_are_batched_with_equal_answers(digits_app, quant_out) -> None:
    images = digits_images(16)
    pipeline = Pipeline(quant_out)
    expected = [pipeline.run({"image": image})["logits"] for image in images]
    before = _batch_counts(digits_app)
    start = threading.Barrier(16, timeout=60)

    def work(k: int) -> list[bool]:
        with EdgeClient(quant_out, digits_app, token=TOKEN, timeout=30) as client:
            client.run({"image": images[k]})  # connection up
            start.wait()
            return [np.allclose(client.run({"image": images[k]})["logits"], expected[k], rtol=RTOL,
                                atol=RTOL * np.abs(expected[k]).max()) for _ in range(4)]

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(work, range(16)))
    assert all(all(r) for r in results)
    count, total, singles = (a - b for a, b in zip(_batch_counts(digits_app), before))
    assert count == 16 * 5
    assert total > count  # some onnxruntime calls ran more than one request
    assert singles < count  # (a batch of n is observed n times, once per request)


def test_a_bandwidth_range_output_serves_every_plan(cluster, range_out) -> None:
    url, info = _app(cluster, range_out, "range", replicas=2)
    try:
        feeds = zoo.random_inputs(zoo.build("resnet_blocks"), seed=4)
        plans = httpx.get(url + "/v1/plans", timeout=10).json()
        served = [p["id"] for p in plans["plans"] if p["served"]]
        assert plans["adaptive"] and len(plans["plans"]) >= 2 and served == info["plans"]
        assert served  # every plan with a cloud half has its own deployment
        for plan_id in served:  # each plan's request, built as its edge would, answered by its deployment
            entry_dir = range_out / "plans" / plan_id
            pipeline = Pipeline(entry_dir)
            frames = pipeline.codec.encode(pipeline.run_edge(feeds))
            body = request.encode_request(plan_id, frames, 9, zlib.crc32((entry_dir / "plan.json").read_bytes()))
            reply = httpx.post(url + "/v1/infer", content=body, timeout=30)
            assert reply.status_code == 200, reply.text
            message = request.decode_response(reply.content)
            assert message.plan_id == plan_id and message.request_id == 9
            np.testing.assert_array_equal(request.record_array(message.records[0]), pipeline.run(feeds)["logits"])
        with EdgeClient(range_out, url) as client:  # the adaptive client picks plans itself
            assert client.run(feeds)["logits"].shape == (1, 10)
    finally:
        serve.delete("range")


def test_the_raw_cut_over_ray_equals_the_pipeline(cluster, raw_out) -> None:
    url, _ = _app(cluster, raw_out, "raw", replicas=1, batch_max=4, batch_wait_ms=5)
    try:
        pipeline = Pipeline(raw_out)
        with EdgeClient(raw_out, url) as client:
            for seed in range(2):
                feeds = zoo.random_inputs(zoo.build("resnet_blocks"), seed=seed)
                np.testing.assert_array_equal(client.run(feeds)["logits"], pipeline.run(feeds)["logits"])
    finally:
        serve.delete("raw")


# ----------------------------------------------------------------------------- faults


def test_killing_a_replica_mid_loop_loses_no_request(digits_app, quant_out) -> None:
    handle = serve.get_deployment_handle("plan-default", app_name="digits")
    actors = set()
    for _ in range(40):  # bounded: the router spreads calls over both replicas
        actors.add(handle.describe.remote().result(timeout_s=30)["actor"])
        if len(actors) == 2:
            break
    assert len(actors) == 2
    victim = sorted(actors)[0]
    images = digits_images(8)
    pipeline = Pipeline(quant_out)
    expected = [pipeline.run({"image": image})["logits"] for image in images]
    outcomes: list[bool] = []
    killed = threading.Event()

    def loop(offset: int) -> None:
        with EdgeClient(quant_out, digits_app, token=TOKEN, timeout=30, retries=2) as client:
            deadline = time.monotonic() + 90
            for i in range(60):
                if time.monotonic() > deadline:
                    break
                k = (i + offset) % len(images)
                outcomes.append(bool(np.array_equal(client.run({"image": images[k]})["logits"], expected[k])))
                if offset == 0 and i == 10:
                    ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
                    killed.set()

    threads = [threading.Thread(target=loop, args=(n,)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert killed.is_set() and len(outcomes) == 180 and all(outcomes)
    assert httpx.get(digits_app + "/healthz", timeout=10).json()["status"] == "ok"


def test_a_replica_that_cannot_load_its_half_fails_serve_at_once(cluster, quant_out, tmp_path, capsys) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(quant_out, broken)
    (broken / "cloud.onnx").write_bytes(b"not an onnx model")
    code = main(["serve", str(broken), "--engine", "ray", "--port", str(_free_port()), "--replicas", "2"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    last = [line for line in err.strip().splitlines() if line.strip()][-1]
    assert "cloud.onnx" in " ".join(err.split()) and "error" in last
    assert "splitc" not in serve.status().applications  # deleted: no restart loop left behind


def test_ray_missing_is_one_line(quant_out, capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.setitem(sys.modules, "ray.serve", None)
    code = main(["serve", str(quant_out), "--engine", "ray"])
    err = capsys.readouterr().err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and RAY_HINT in " ".join(err.split())


def test_an_unreachable_address_is_one_line(quant_out, capsys) -> None:
    address = f"127.0.0.1:{_free_port()}"
    code = main(["serve", str(quant_out), "--engine", "ray", "--address", address])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and address in err and "Traceback" not in err


# ----------------------------------------------------------------------------- autoscaling


def _running(app: str, deployment: str) -> int:
    status = serve.status().applications[app].deployments[deployment]
    return sum(n for state, n in status.replica_states.items() if str(getattr(state, "value", state)) == "RUNNING")


def test_autoscaling_goes_to_two_replicas_under_load_and_back_to_one(cluster, quant_out) -> None:
    fast = {"upscale_delay_s": 0.5, "downscale_delay_s": 2.0, "look_back_period_s": 1.0}
    url, _ = _app(cluster, quant_out, "auto", autoscale=(1, 2), target_ongoing_requests=1, autoscaling=fast)
    try:
        assert _running("auto", "plan-default") == 1
        image = digits_images(1)[0]
        stop, peak = threading.Event(), [1]

        def load() -> None:
            with EdgeClient(quant_out, url, timeout=30) as client:
                for _ in range(3000):  # bounded; stopped once two replicas run
                    if stop.is_set():
                        return
                    client.run({"image": image})

        threads = [threading.Thread(target=load) for _ in range(6)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and peak[0] < 2:
            peak[0] = max(peak[0], _running("auto", "plan-default"))
            time.sleep(0.25)
        stop.set()
        for thread in threads:
            thread.join(60)
        assert peak[0] == 2
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _running("auto", "plan-default") != 1:
            time.sleep(0.25)
        assert _running("auto", "plan-default") == 1
    finally:
        serve.delete("auto")


# ----------------------------------------------------------------------------- hostile requests, both engines


@pytest.fixture(scope="module")
def uvicorn_app(quant_out):
    with ServerThread(quant_out, token=TOKEN, max_body=MAX_BODY, threads=2) as running:
        yield running.url


def _huge_frame() -> bytes:
    small = codec.encode(np.zeros((1, 32, 16, 16), np.uint8), 4, 0.0, 1.0)
    shape = np.frombuffer(small[20:36], "<u4").copy()
    shape[:] = [1, 1024, 512, 512]
    return small[:20] + shape.tobytes() + small[36:]


def _valid_body(out: Path) -> bytes:
    pipeline = Pipeline(out)
    frames = pipeline.codec.encode(pipeline.run_edge({"image": digits_images(1)[0]}))
    return request.encode_request("default", frames, 5, zlib.crc32((out / "plan.json").read_bytes()))


HOSTILE = {  # case: (status, error code) that both engines must answer
    "garbage": (400, "bad_request"), "truncated-container": (400, "bad_request"),
    "wrong-count": (400, "bad_request"), "huge-frame-shape": (400, "bad_request"), "empty": (400, "bad_request"),
    "truncated-frame": (400, "bad_request"), "wrong-token": (401, "unauthorised"),
    "unknown-plan": (404, "unknown_plan"), "stale-crc": (409, "plan_mismatch"), "too-large": (413, "too_large"),
    "too-large-streamed": (413, "too_large"),
}


def _hostile(case: str, out: Path):
    body = _valid_body(out)
    message = request.decode_request(body)
    frame = message.records[0].data
    crc = message.plan_crc

    def chunks():
        for _ in range(40):
            yield bytes(10_000)

    return {
        "garbage": os.urandom(300), "truncated-container": body[:-7], "empty": b"",
        "wrong-count": request.encode_request("default", [frame, frame], 1, crc),
        "huge-frame-shape": request.encode_request("default", [_huge_frame()], 1, crc),
        "truncated-frame": request.encode_request("default", [frame[: len(frame) // 2]], 1, crc),
        "wrong-token": body, "unknown-plan": request.encode_request("p7", [frame], 1),
        "stale-crc": request.encode_request("default", [frame], 1, plan_crc=0xDEADBEEF),
        "too-large": bytes(MAX_BODY + 1), "too-large-streamed": chunks(),
    }[case]


@pytest.mark.parametrize("engine", ["uvicorn", "ray"])
@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_requests_get_the_same_4xx_on_both_engines(engine, case, request_, quant_out) -> None:
    url = request_.getfixturevalue("uvicorn_app" if engine == "uvicorn" else "digits_app")
    token = "wrong" if case == "wrong-token" else TOKEN
    reply = httpx.post(url + "/v1/infer", content=_hostile(case, quant_out),
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert (reply.status_code, reply.json()["error"]) == HOSTILE[case]
    with EdgeClient(quant_out, url, token=TOKEN) as client:  # still serving
        image = digits_images(2)[1]
        np.testing.assert_array_equal(client.run({"image": image})["logits"],
                                      Pipeline(quant_out).run({"image": image})["logits"])


@pytest.fixture
def request_(request):
    return request


@pytest.mark.parametrize("engine", ["uvicorn", "ray"])
def test_unauthorised_reads_and_open_health_on_both_engines(engine, request_) -> None:
    url = request_.getfixturevalue("uvicorn_app" if engine == "uvicorn" else "digits_app")
    assert httpx.get(url + "/v1/plans", timeout=10).status_code == 401
    assert httpx.get(url + "/metrics", timeout=10).status_code == 401
    no_auth = httpx.post(url + "/v1/infer", content=b"x", timeout=10)
    assert no_auth.status_code == 401 and no_auth.headers["www-authenticate"] == "Bearer"
    assert httpx.get(url + "/healthz", timeout=10).json()["status"] == "ok"
    assert httpx.post(url + "/v1/probe", content=bytes(1000), headers=_auth(), timeout=10).json() == {"bytes": 1000}


def test_a_client_that_disconnects_mid_body_does_not_hurt_ray(digits_app, quant_out) -> None:
    port = int(digits_app.rsplit(":", 1)[1].split("/")[0])
    head = (f"POST /digits/v1/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: 50000\r\n\r\n").encode()
    for _ in range(3):
        raw_http(port, head + bytes(1000), read=False)
    with EdgeClient(quant_out, digits_app, token=TOKEN) as client:
        image = digits_images(3)[2]
        np.testing.assert_array_equal(client.run({"image": image})["logits"],
                                      Pipeline(quant_out).run({"image": image})["logits"])
