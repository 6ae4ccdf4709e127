"""The cloud server with the edge client: exactness, quantized plans, hostile requests, TLS, the CLI."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import onnx
import pytest

from splitc.testing import zoo
from splitc.runtime import CloudError, EdgeClient, Pipeline
from splitc.wire import codec, request
from splitc.runtime.server import ServerThread
from tests.conftest import run_model
from tests.stitching import compile_quantized, compile_raw, digits_images, raw_http

TOKEN = "s3cret-token"
MAX_BODY = 100_000


@pytest.fixture(scope="module")
def raw_out(tmp_path_factory) -> Path:
    return compile_raw(tmp_path_factory.mktemp("raw") / "out")


@pytest.fixture(scope="module")
def quant_out(tmp_path_factory) -> Path:
    return compile_quantized(tmp_path_factory.mktemp("quant") / "out")


def _has_ray() -> bool:
    try:
        import ray  # noqa: F401
        from ray import serve  # noqa: F401
    except ImportError:
        return False
    return True


# Every test on `server` runs against both engines; Ray's runs go with the serial group (one Ray cluster).
ENGINES = ["uvicorn", pytest.param("ray", marks=[pytest.mark.serial, pytest.mark.skipif(
    not _has_ray(), reason="Ray Serve is not installed (pip install 'splitc[ray]')")])]


@pytest.fixture(scope="module", params=ENGINES)
def server(request, raw_out):
    if request.param == "uvicorn":
        with ServerThread(raw_out, token=TOKEN, max_body=MAX_BODY, threads=2) as running:
            yield running
        return
    yield from _ray_server(raw_out)


def _ray_server(out: Path):
    """The same output served by Ray Serve (2 replicas) at the root of its HTTP proxy, on 127.0.0.1."""
    import socket
    from types import SimpleNamespace

    import ray
    from ray import serve

    from splitc.runtime.ray_engine import RayOptions, deploy, start_http

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024, log_to_driver=False,
             logging_level="ERROR")
    try:
        start_http("127.0.0.1", port)
        deploy(out, RayOptions(replicas=2, replica_cpus=0.5, start_timeout_s=120), token=TOKEN, max_body=MAX_BODY,
               app_name="server", route_prefix="/")
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}", port=port, host="127.0.0.1")
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def _feeds(seed: int = 0) -> dict[str, np.ndarray]:
    return zoo.random_inputs(zoo.build("resnet_blocks"), seed=seed)


def _valid_body(raw_out: Path, seed: int = 0) -> bytes:
    pipeline = Pipeline(raw_out)
    frames = pipeline.codec.encode(pipeline.run_edge(_feeds(seed)))
    return request.encode_request("default", frames, 5, zlib.crc32((raw_out / "plan.json").read_bytes()))


def _post(server, body: bytes, token: str = TOKEN, **kw) -> httpx.Response:
    return httpx.post(server.url + "/v1/infer", content=body, headers={"Authorization": f"Bearer {token}"},
                      timeout=10, **kw)


def assert_exact(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal up to float rounding: rtol 1e-6 of each value, atol 1e-6 of the largest (onnxruntime fuses
    BatchNorm into Conv in the whole model but not always across a cut, which moves the last bits)."""
    np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-6 * float(np.abs(expected).max()))


def _still_serving(server, raw_out: Path) -> None:
    assert httpx.get(server.url + "/healthz", timeout=5).json()["status"] == "ok"
    with EdgeClient(raw_out, server.url, token=TOKEN) as client:
        expected = run_model(zoo.build("resnet_blocks"), _feeds(3))["logits"]
        assert_exact(client.run(_feeds(3))["logits"], expected)


def test_raw_plan_over_http_equals_the_original_model(server, raw_out) -> None:
    model, pipeline = zoo.build("resnet_blocks"), Pipeline(raw_out)
    with EdgeClient(raw_out, server.url, token=TOKEN) as client:
        for seed in range(3):
            result = client.infer(_feeds(seed))
            assert_exact(result.outputs["logits"], run_model(model, _feeds(seed))["logits"])
            np.testing.assert_array_equal(result.outputs["logits"], pipeline.run(_feeds(seed))["logits"])
    assert result.plan_id == "default" and not result.fallback and result.attempts == 1
    assert result.bytes_up > 32 * 16 * 16 * 4 and result.bytes_down > 40
    assert result.cloud_ms > 0 and result.network_ms >= 0 and result.total_ms >= result.edge_ms


def test_quantized_plan_over_http_matches_the_pipeline_bit_for_bit(quant_out) -> None:
    plan = json.loads((quant_out / "plan.json").read_text())
    assert plan["cut"][0]["bits"] == 4 and plan["cut"][0]["codec"].get("codebook")
    pipeline = Pipeline(quant_out)
    with ServerThread(quant_out) as running, EdgeClient(quant_out, running.url) as client:
        for image in digits_images(8):
            remote = client.run({"image": image})["logits"]
            np.testing.assert_array_equal(remote, pipeline.run({"image": image})["logits"])


def test_concurrent_clients_get_their_own_answers(server, raw_out) -> None:
    model = zoo.build("resnet_blocks")

    def work(seed: int) -> bool:
        with EdgeClient(raw_out, server.url, token=TOKEN) as client:
            expected = run_model(model, _feeds(seed))["logits"]
            return all(np.allclose(client.run(_feeds(seed))["logits"], expected, rtol=1e-6,
                                   atol=1e-6 * np.abs(expected).max()) for _ in range(3))

    with ThreadPoolExecutor(6) as pool:
        assert all(pool.map(work, range(6)))


@pytest.mark.parametrize("case", ["garbage", "truncated-frame", "truncated-container", "wrong-count",
                                  "huge-frame-shape", "empty"])
def test_malformed_requests_get_400_and_the_server_keeps_serving(server, raw_out, case: str) -> None:
    body = _valid_body(raw_out)
    message = request.decode_request(body)
    frame = message.records[0].data
    bodies = {
        "garbage": os.urandom(300),
        "truncated-frame": request.encode_request("default", [frame[: len(frame) // 2]], 1, message.plan_crc),
        "truncated-container": body[:-7],
        "wrong-count": request.encode_request("default", [frame, frame], 1, message.plan_crc),
        "huge-frame-shape": request.encode_request("default", [_huge_frame()], 1, message.plan_crc),
        "empty": b"",
    }
    reply = _post(server, bodies[case])
    assert reply.status_code == 400 and reply.json()["error"] == "bad_request"
    _still_serving(server, raw_out)


def _huge_frame() -> bytes:
    """A constant-mode frame that declares 2^28 elements in a few bytes (a decompression bomb)."""
    small = codec.encode(np.zeros((1, 32, 16, 16), np.uint8), 4, 0.0, 1.0)
    shape = np.frombuffer(small[20:36], "<u4").copy()
    shape[:] = [1, 1024, 512, 512]
    return small[:20] + shape.tobytes() + small[36:]


def test_wrong_token_plan_id_and_crc(server, raw_out) -> None:
    body = _valid_body(raw_out)
    assert _post(server, body, token="wrong").status_code == 401
    no_auth = httpx.post(server.url + "/v1/infer", content=body, timeout=5)
    assert no_auth.status_code == 401 and no_auth.headers["www-authenticate"] == "Bearer"
    frames = [r.data for r in request.decode_request(body).records]
    unknown = _post(server, request.encode_request("p7", frames, 1))
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown_plan"
    stale = _post(server, request.encode_request("default", frames, 1, plan_crc=0xDEADBEEF))
    assert stale.status_code == 409 and stale.json()["error"] == "plan_mismatch"
    assert httpx.get(server.url + "/v1/plans", timeout=5).status_code == 401
    _still_serving(server, raw_out)


def test_oversized_bodies_are_refused_while_streaming(server, raw_out) -> None:
    declared = _post(server, bytes(MAX_BODY + 1))
    assert declared.status_code == 413 and declared.json()["error"] == "too_large"

    def chunks():  # no Content-Length: chunked, refused once it passes the limit
        for _ in range(40):
            yield bytes(10_000)

    streamed = _post(server, chunks())
    assert streamed.status_code == 413
    _still_serving(server, raw_out)


def test_a_client_that_disconnects_mid_body_does_not_hurt(server, raw_out) -> None:
    head = (f"POST /v1/infer HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
            f"Content-Length: 50000\r\n\r\n").encode()
    for _ in range(3):
        raw_http(server.port, head + bytes(1000), read=False)
    time.sleep(0.2)
    assert b"400" in raw_http(server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: x\r\n\r\n")
    _still_serving(server, raw_out)


def test_metrics_count_requests_bytes_and_errors(server, raw_out) -> None:
    _still_serving(server, raw_out)
    _post(server, b"garbage")
    text = httpx.get(server.url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).text
    assert 'splitc_requests_total{plan="default",status="200"}' in text
    assert 'splitc_errors_total{code="bad_request"}' in text
    assert "splitc_request_seconds_bucket" in text and "splitc_bytes_in_total" in text
    assert "process_resident_memory_bytes" in text


def test_plans_endpoint(server) -> None:
    info = httpx.get(server.url + "/v1/plans", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).json()
    assert info["adaptive"] is False and info["plans"][0]["id"] == "default" and info["plans"][0]["served"]


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.skipif(subprocess.run(["which", "openssl"], capture_output=True).returncode != 0, reason="no openssl")
def test_tls_with_token(raw_out, tmp_path) -> None:
    cert, key = _self_signed(tmp_path)
    expected = run_model(zoo.build("resnet_blocks"), _feeds(1))["logits"]
    with ServerThread(raw_out, tls_cert=str(cert), tls_key=str(key), token=TOKEN) as running:
        assert running.url.startswith("https://")
        with EdgeClient(raw_out, running.url, token=TOKEN, verify=str(cert)) as client:
            assert_exact(client.run(_feeds(1))["logits"], expected)
        with EdgeClient(raw_out, running.url, token=TOKEN, retries=0) as unverified, pytest.raises(CloudError):
            unverified.run(_feeds(1))  # the self-signed certificate is not trusted by default


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_cli_serve_and_run_remote(raw_out, tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    port = _free_port()
    env = {**os.environ, "COLUMNS": "160"}
    server = subprocess.Popen([sys.executable, "-m", "splitc.cli", "serve", str(raw_out), "--port", str(port),
                               "--token-file", str(token), "--threads", "2"], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_healthy(port)
        np.save(tmp_path / "x.npy", _feeds(2)["input"])
        ran = subprocess.run([sys.executable, "-m", "splitc.cli", "run", str(raw_out), "--input",
                              str(tmp_path / "x.npy"), "--cloud", f"http://127.0.0.1:{port}", "--token-file",
                              str(token), "--save", str(tmp_path / "y.npz")], capture_output=True, text=True,
                             env=env, timeout=120)
        assert ran.returncode == 0, ran.stderr
        assert "Remote run: plan default" in ran.stdout and "network ms" in ran.stdout
        expected = run_model(onnx.ModelProto.FromString(zoo.build("resnet_blocks").SerializeToString()),
                             _feeds(2))["logits"]
        assert_exact(np.load(tmp_path / "y.npz")["logits"], expected)
    finally:
        server.terminate()
        server.wait(30)


def _wait_healthy(port: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.1)
    raise AssertionError("splitc serve did not come up")
