"""The cloud server: an ASGI app (Starlette) over ``CloudService``, served by uvicorn.

Endpoints: ``POST /v1/infer`` (binary request → binary response, see
docs/wire-format.md), ``POST /v1/probe`` (reads a body, for bandwidth probes),
``GET /v1/plans``, ``GET /healthz`` and ``GET /metrics`` (Prometheus text).
Every endpoint but ``/healthz`` needs the bearer token when one is set. Errors
are JSON ``{"error": code, "detail": message}`` with a 4xx/5xx status, and the
server keeps serving.

    from splitc.runtime.server import ServerThread
    with ServerThread("out/") as server:      # an ephemeral port on 127.0.0.1
        print(server.url)
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from splitc.runtime.cloud_service import CloudService, Rejected
from splitc.runtime.server_metrics import ServerMetrics

DEFAULT_MAX_BODY = 64 * 1024 * 1024
log = logging.getLogger("splitc.server")


def _error(status: int, code: str, detail: str) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise Rejected(400, "bad_request", "Content-Length is not a number")
        if int(declared) > limit:
            raise Rejected(413, "too_large", f"body of {declared} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Rejected(413, "too_large", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class CloudApp:
    """The HTTP layer: authorisation, body limits, the thread pool and metrics."""

    def __init__(self, service: CloudService, token: str | None = None, max_body: int = DEFAULT_MAX_BODY,
                 threads: int | None = None) -> None:
        self.service = service
        self.token = token.encode() if token else None
        self.max_body = max_body
        self.threads = threads or os.cpu_count() or 1
        self.pool: ThreadPoolExecutor | None = None
        self.metrics = ServerMetrics()

    def authorised(self, request: Request) -> bool:
        if self.token is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token)

    async def infer(self, request: Request) -> Response:
        start, body = time.perf_counter(), b""
        try:
            if not self.authorised(request):
                raise Rejected(401, "unauthorised", "missing or wrong bearer token")
            body = await read_body(request, self.max_body)
            reply, plan_id, timing = await self.answer(body)
        except Rejected as exc:
            self.metrics.failed(exc.status, exc.code, len(body))
            return _error(exc.status, exc.code, str(exc))
        except ClientDisconnect:
            self.metrics.failed(499, "disconnected", len(body))
            return Response(status_code=400)
        except Exception as exc:  # an unexpected failure must not take the server down
            log.exception("inference failed")
            self.metrics.failed(500, "internal", len(body))
            return _error(500, "internal", f"{type(exc).__name__}: {exc}")
        self.metrics.served(plan_id, time.perf_counter() - start, timing["cloud_ms"], len(body), len(reply))
        return Response(reply, media_type="application/octet-stream")

    async def answer(self, body: bytes) -> tuple[bytes, str, dict]:
        """Run one request body (the Ray engine overrides this to call its plan deployments)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, self.service.infer, body)

    async def probe(self, request: Request) -> Response:
        if not self.authorised(request):
            return _error(401, "unauthorised", "missing or wrong bearer token")
        try:
            body = await read_body(request, self.max_body)
        except Rejected as exc:
            return _error(exc.status, exc.code, str(exc))
        except ClientDisconnect:
            return Response(status_code=400)
        return JSONResponse({"bytes": len(body)})

    async def plans(self, request: Request) -> Response:
        if not self.authorised(request):
            return _error(401, "unauthorised", "missing or wrong bearer token")
        return JSONResponse(self.service.describe())

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "plans": len(self.service.plans.entries)})

    async def metrics_text(self, request: Request) -> Response:
        if not self.authorised(request):
            return _error(401, "unauthorised", "missing or wrong bearer token")
        return Response(self.metrics.render(), media_type=self.metrics.content_type)

    @asynccontextmanager
    async def lifespan(self, app):
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="splitc-infer")
        try:
            yield
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def asgi(self) -> Starlette:
        routes = [
            Route("/v1/infer", self.infer, methods=["POST"]),
            Route("/v1/probe", self.probe, methods=["POST"]),
            Route("/v1/plans", self.plans, methods=["GET"]),
            Route("/healthz", self.health, methods=["GET"]),
            Route("/metrics", self.metrics_text, methods=["GET"]),
        ]
        return Starlette(routes=routes, lifespan=self.lifespan)


def create_app(out_dir: str | Path, token: str | None = None, max_body: int = DEFAULT_MAX_BODY,
               threads: int | None = None, ort_threads: int | None = None, reply_bits: int = 32,
               upstream: str | None = None, upstream_timeout: float = 10.0) -> Starlette:
    """The ASGI app serving the cloud halves of every plan in ``out_dir``.

    ``threads`` requests run at once (default: the core count), each session
    with ``ort_threads`` intra-op threads (default: cores / threads, at least 1).
    With ``upstream`` (a cloud server's URL) ``out_dir`` is a relaying edge output
    (``splitc.runtime.relay``); requests go on to the upstream within ``upstream_timeout`` s.
    """
    from splitc.runtime.relay import service_for

    threads = threads or os.cpu_count() or 1
    ort_threads = ort_threads if ort_threads is not None else max(1, (os.cpu_count() or 1) // threads)
    service = service_for(out_dir, upstream, ort_threads, reply_bits, upstream_timeout)
    return CloudApp(service, token, max_body, threads).asgi()


def _config(app, host: str, port: int, tls_cert: str | None, tls_key: str | None, quiet: bool) -> uvicorn.Config:
    if bool(tls_cert) != bool(tls_key):
        raise ValueError("TLS needs both a certificate and a key")
    return uvicorn.Config(app, host=host, port=port, ssl_certfile=tls_cert, ssl_keyfile=tls_key,
                          log_level="warning" if quiet else "info", access_log=not quiet, timeout_keep_alive=30,
                          lifespan="on", http="h11")


def listen_socket(host: str, port: int) -> socket.socket:
    """A bound TCP socket with TCP_NODELAY (its accepted connections inherit it: no Nagle delay on replies)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                         proto=socket.IPPROTO_TCP)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(address)
    return sock


def serve(out_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          tls_cert: str | None = None, tls_key: str | None = None, max_body: int = DEFAULT_MAX_BODY,
          threads: int | None = None, reply_bits: int = 32, quiet: bool = False, upstream: str | None = None,
          upstream_timeout: float = 10.0) -> None:
    """Serve ``out_dir`` until interrupted (blocking); ``upstream``: relay to this cloud server (see ``create_app``)."""
    app = create_app(out_dir, token, max_body, threads, reply_bits=reply_bits, upstream=upstream,
                     upstream_timeout=upstream_timeout)
    sock = listen_socket(host, port)
    try:
        uvicorn.Server(_config(app, host, port, tls_cert, tls_key, quiet)).run(sockets=[sock])
    finally:
        sock.close()


class ServerThread:
    """A server on ``127.0.0.1`` and an ephemeral port, in a background thread (tests, benchmarks).

    ``with ServerThread(out_dir, token=...) as server: server.url`` — stopped and
    joined on exit. Keyword arguments go to ``create_app``.
    """

    def __init__(self, out_dir: str | Path, host: str = "127.0.0.1", tls_cert: str | None = None,
                 tls_key: str | None = None, **app_options) -> None:
        app = create_app(out_dir, **app_options)
        self.server = uvicorn.Server(_config(app, host, 0, tls_cert, tls_key, quiet=True))
        self.sock = listen_socket(host, 0)
        self.host, self.port = self.sock.getsockname()[:2]
        self.url = f"{'https' if tls_cert else 'http'}://{host}:{self.port}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def start(self, timeout: float = 30.0) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()

    def __enter__(self) -> "ServerThread":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
