"""Client fault injection: a fake loopback server that misbehaves in one way per test.

For each fault the client's documented outcome (docs/faults.md) is asserted -
retry then fallback, or CloudError - together with a generous bound on the
wall time, which the deadlines guarantee.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from splitc.runtime import CloudError, EdgeClient, Pipeline
from splitc.wire import request
from tests.stitching import compile_quantized, digits_images


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    return compile_quantized(tmp_path_factory.mktemp("faults") / "out")


@pytest.fixture(scope="module")
def expected(out) -> np.ndarray:
    return Pipeline(out).run({"image": digits_images(1)[0]})["logits"]


def _http(status: int, body: bytes, content_type: str = "application/octet-stream") -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def _reply(req: bytes, logits: np.ndarray | None = None, name: str = "logits", extra=()) -> bytes:
    """A valid response to ``req`` (a request body), holding ``logits`` (or nothing)."""
    message = request.decode_request(req)
    records = [] if logits is None else [request.output_record(name, logits)]
    records += list(extra)
    return request.encode_response(request.Message(message.plan_id, records, message.request_id, message.plan_crc,
                                                   {"decode_ms": 0.1, "cloud_ms": 0.1, "encode_ms": 0.1}))


class FakeServer:
    """Accepts connections on 127.0.0.1; ``behaviour(conn, body)`` answers each POST (None: hang up)."""

    def __init__(self, behaviour, refuse: bool = False) -> None:
        self.behaviour = behaviour
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests = 0
        self.conns: list[socket.socket] = []
        if refuse:  # nothing listens: connections are refused
            self.sock.close()
            return
        self.sock.listen(16)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while True:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length")), 0)
                while len(body) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    body += chunk
                self.requests += 1
                self.behaviour(conn, body)
        except OSError:
            return

    def close(self) -> None:
        self.sock.close()
        for conn in self.conns:
            try:
                conn.close()
            except OSError:
                pass


def _run(out, server, **options):
    start = time.monotonic()
    with EdgeClient(out, server.url, **options) as client:
        result = client.infer({"image": digits_images(1)[0]})
    return result, time.monotonic() - start


def _expect_fallback(out, expected, behaviour, bound_s: float, attempts: int = 2, refuse: bool = False, **options):
    server = FakeServer(behaviour, refuse)
    try:
        result, took = _run(out, server, fallback="local", retries=attempts - 1, timeout=0.5, **options)
    finally:
        server.close()
    assert result.fallback, result
    np.testing.assert_array_equal(result.outputs["logits"], expected)
    assert took < bound_s, f"{took:.2f} s"
    if not refuse:
        assert server.requests == attempts  # every attempt was made, then the fallback ran
    return result


def _expect_error(out, behaviour, bound_s: float, match: str, fallback: str | None = "local", **options):
    server = FakeServer(behaviour)
    try:
        start = time.monotonic()
        with pytest.raises(CloudError, match=match) as caught:
            _run(out, server, fallback=fallback, retries=2, timeout=0.5, **options)
        took = time.monotonic() - start
    finally:
        server.close()
    assert took < bound_s, f"{took:.2f} s"
    return caught.value, server


# ----------------------------------------------------------------------------- retried, then the fallback


def test_refused_connection(out, expected) -> None:
    result = _expect_fallback(out, expected, None, 5.0, refuse=True)
    assert "ConnectError" in result.error


def test_hang_is_bounded_by_the_attempt_timeout(out, expected) -> None:
    result = _expect_fallback(out, expected, lambda conn, body: time.sleep(30), 4.0)
    assert "Timeout" in result.error


def test_drip_is_bounded_by_the_attempt_timeout_not_per_read(out, expected) -> None:
    def drip(conn, body):
        reply = _http(200, _reply(body, expected))
        for byte in reply:
            conn.sendall(bytes([byte]))
            time.sleep(0.1)

    result = _expect_fallback(out, expected, drip, 3.0)  # 2 attempts of 0.5 s, not 2 x (bytes x 0.1 s)
    assert "Timeout" in result.error


def test_overall_deadline_caps_all_attempts(out, expected) -> None:
    server = FakeServer(lambda conn, body: time.sleep(30))
    try:
        result, took = _run(out, server, fallback="local", retries=5, timeout=0.5, deadline=1.2)
    finally:
        server.close()
    assert result.fallback and took < 3.0 and server.requests <= 3


@pytest.mark.parametrize("body", [b"", b"<html><body>502 Bad Gateway</body></html>", bytes(range(256)) * 3,
                                  b"SPRS\x01"])
def test_garbage_200_body_is_retried_then_falls_back(out, expected, body) -> None:
    result = _expect_fallback(out, expected, lambda conn, req: conn.sendall(_http(200, body, "text/html")), 5.0)
    assert "not a valid response" in result.error


def test_truncated_reply_is_retried_then_falls_back(out, expected) -> None:
    def truncate(conn, body):
        reply = _http(200, _reply(body, expected))
        conn.sendall(reply[: len(reply) - 7])
        conn.close()

    result = _expect_fallback(out, expected, truncate, 5.0)
    assert result.error


def test_5xx_is_retried_then_falls_back(out, expected) -> None:
    result = _expect_fallback(out, expected,
                              lambda conn, body: conn.sendall(_http(503, b'{"error":"busy","detail":"x"}')), 5.0,
                              attempts=3)
    assert "503" in result.error and result.attempts == 0


def test_a_reply_for_another_request_is_retried(out, expected) -> None:
    def other(conn, body):
        message = request.decode_request(body)
        message.request_id += 1000
        conn.sendall(_http(200, _reply(request.encode_request(message.plan_id, [], message.request_id), expected)))

    result = _expect_fallback(out, expected, other, 5.0)
    assert "for request" in result.error


def test_without_fallback_a_garbage_reply_is_a_cloud_error(out) -> None:
    error, server = _expect_error(out, lambda conn, body: conn.sendall(_http(200, b"junk")), 5.0, "unreachable",
                                  fallback=None)
    assert server.requests == 3


# ----------------------------------------------------------------------------- CloudError at once


def test_4xx_is_a_cloud_error_without_retry(out) -> None:
    error, server = _expect_error(
        out, lambda conn, body: conn.sendall(_http(409, json.dumps({"error": "plan_mismatch", "detail": "d"}).encode(),
                                                   "application/json")), 3.0, "plan_mismatch")
    assert error.status == 409 and server.requests == 1


def test_wrong_shape_is_a_cloud_error_naming_the_output(out, expected) -> None:
    error, server = _expect_error(out, lambda conn, body: conn.sendall(_http(200, _reply(body, expected[:, :5]))),
                                  3.0, "'logits'.*\\[1, 5\\].*\\[1, 10\\]")
    assert server.requests == 1 and error.code == "bad_reply"


def test_wrong_dtype_is_a_cloud_error_naming_the_output(out, expected) -> None:
    _expect_error(out, lambda conn, body: conn.sendall(_http(200, _reply(body, expected.astype(np.int64)))), 3.0,
                  "'logits'.*int64")


def test_missing_output_is_a_cloud_error_naming_it(out, expected) -> None:
    _expect_error(out, lambda conn, body: conn.sendall(_http(200, _reply(body, expected, name="other"))), 3.0,
                  "no output 'logits'")


def test_an_honest_server_after_faults_gives_the_exact_answer(out, expected) -> None:
    calls = []

    def flaky(conn, body):
        calls.append(1)
        if len(calls) == 1:
            conn.sendall(_http(200, b"garbage"))
        else:
            conn.sendall(_http(200, _reply(body, expected)))

    server = FakeServer(flaky)
    try:
        result, took = _run(out, server, fallback="local", retries=2, timeout=2)
    finally:
        server.close()
    assert not result.fallback and result.attempts == 2 and took < 5
    np.testing.assert_array_equal(result.outputs["logits"], expected)
