"""The edge client: run the edge half here, the cloud half on a ``splitc serve`` server.

    from splitc.runtime import EdgeClient

    with EdgeClient("out/", "http://127.0.0.1:8000", token=None, fallback="local") as client:
        outputs = client.run({"input": x})
        print(client.last.timing())        # edge, encode, network, cloud, decode ms; bytes; plan; fallback

Each request runs the edge half, encodes the cut (``CutCodec``), POSTs it over
a persistent HTTP connection (httpx), and decodes the reply. Network errors,
timeouts, 5xx replies and 200 replies whose body is not a valid response are
retried ``retries`` times; then, with ``fallback="local"``, the cloud half runs
on this device (it needs the plan's ``cloud.onnx``). A 4xx refusal, or a valid
reply that disagrees with the plan's outputs (a missing output, another shape
or dtype), raises ``CloudError`` at once. With an adaptive output
(``plans.json``) the client estimates the link from its own transfers and
switches plans between requests.

Deadlines: ``timeout`` (seconds) bounds each attempt as a whole - connecting,
sending the request and receiving the entire reply - not each read, so a
server that drips one byte at a time cannot hold an attempt longer.
``deadline`` (seconds, default ``(retries + 1) * timeout`` plus the backoff
pauses) bounds the cloud part of one request across all its attempts; when
it has passed no further attempt starts. The fallback then runs (or
``CloudError`` is raised). See docs/faults.md for every fault's outcome.
"""

# Over 400 lines on purpose: EdgeClient, its plan switching, local fallback and reply checks are one
# state machine per request; the pieces that stand alone (bandwidth, plans, relay) have their own modules.

from __future__ import annotations

import itertools
import ssl
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpcore
import httpx
import numpy as np

from splitc.wire import codec, request
from splitc.runtime.bandwidth import LOWER_BOUND_BYTES, BandwidthEstimator, PlanSwitcher
from splitc.runtime.cloud_service import open_session
from splitc.runtime.cut_codec import CutCodec
from splitc.runtime.image_input import prepare_feeds
from splitc.runtime.pipeline import InputError
from splitc.runtime.plans import PlanEntry, PlanSet

RETRY_BACKOFF_S = 0.05


class CloudError(RuntimeError):
    """The server refused a request (4xx), or could not be reached and there is no fallback."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Result:
    """The outputs of one inference and where its time went (milliseconds, bytes)."""

    outputs: dict[str, np.ndarray]
    plan_id: str
    fallback: bool = False
    edge_ms: float = 0.0
    encode_ms: float = 0.0
    network_ms: float = 0.0
    cloud_ms: float = 0.0
    decode_ms: float = 0.0
    total_ms: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0
    attempts: int = 0
    error: str | None = None  # why the fallback ran
    server: dict = field(default_factory=dict)  # the server's decode/cloud/encode ms

    def timing(self) -> dict:
        """The breakdown as a plain dict (for JSON or printing)."""
        keys = ("plan_id", "fallback", "edge_ms", "encode_ms", "network_ms", "cloud_ms", "decode_ms", "total_ms",
                "bytes_up", "bytes_down", "attempts", "error")
        return {k: getattr(self, k) for k in keys}


class _Local:
    """A plan's halves on this device: the edge half, and the cloud half for the fallback."""

    def __init__(self, entry: PlanEntry, threads: int) -> None:
        self.entry = entry
        self.threads = threads
        self.edge = open_session(entry.dir / entry.plan.edge.file, threads)
        self.edge_names = [o.name for o in self.edge.get_outputs()]
        self.codec = CutCodec(entry.plan, entry.dir)
        self.codec.warm_up()
        self._cloud = None

    def cloud(self):
        if self._cloud is None:
            if not self.entry.has_cloud or not (self.entry.dir / self.entry.plan.cloud.file).is_file():
                raise CloudError(f"plan {self.entry.id!r} has no cloud half here to fall back on")
            self._cloud = open_session(self.entry.dir / self.entry.plan.cloud.file, self.threads)
        return self._cloud


class EdgeClient:
    """Runs compiled splits against a cloud server (see the module docstring)."""

    def __init__(self, out_dir: str | Path, url: str | None = None, token: str | None = None, timeout: float = 10.0,
                 retries: int = 2, fallback: str | None = None, verify: bool | str = True, threads: int = 0,
                 hysteresis: float = 0.15, alpha: float = 0.3, initial_bandwidth: float | None = None,
                 probe_interval_s: float = 10.0, deadline: float | None = None, dwell_s: float = 1.0) -> None:
        if fallback not in (None, "local"):
            raise ValueError(f"fallback must be None or 'local', not {fallback!r}")
        for name, value in (("timeout", timeout), ("deadline", deadline)):
            if value is not None and not (value > 0 and value < float("inf")):
                raise ValueError(f"{name} must be a finite number of seconds above 0, not {value!r}")
        self.plans = PlanSet(out_dir)
        self.url = url.rstrip("/") if url else None
        self.retries, self.fallback, self.threads = max(0, retries), fallback, threads
        self.timeout = float(timeout)
        backoff = sum(RETRY_BACKOFF_S * 2**a for a in range(self.retries))
        self.deadline = float(deadline) if deadline is not None else (self.retries + 1) * self.timeout + backoff
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if isinstance(verify, (str, Path)):
            verify = ssl.create_default_context(cafile=str(verify))  # a CA bundle or a self-signed certificate
        self._clock = _Deadline()
        self.http = _http_client(self.timeout, verify, headers, self._clock) if url else None
        self.estimator = BandwidthEstimator(alpha, initial_bandwidth)
        self.switcher = PlanSwitcher(self.plans, hysteresis, initial_bandwidth, dwell_s)
        self.probe_interval_s = probe_interval_s
        self.last_sample: float | None = None  # time of the latest link measurement
        self.local: dict[str, _Local] = {}
        self.ids = itertools.count(1)
        self.last: Result | None = None
        first = self.plans.entries[0].plan
        self.input_specs, self.output_names = first["edge"]["inputs"], [o["name"] for o in first["model"]["outputs"]]
        self.plan_switches: list[tuple[float, str]] = []  # (time.monotonic(), plan id) at each change of plan

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's outputs, in the original order (details of the run in ``last``)."""
        return self.infer(feeds).outputs

    def infer(self, feeds: dict[str, np.ndarray]) -> Result:
        """One inference; returns the outputs with the timing breakdown."""
        self._maybe_probe()
        start = time.perf_counter()
        before = self.switcher.current.id
        local = self._local(self.switcher.select(self.estimator.bandwidth, self.estimator.updates))
        if local.entry.id != before:
            self.plan_switches.append((time.monotonic(), local.entry.id))
        feeds = prepare_feeds(feeds, self.input_specs, local.entry.plan.preprocess)
        at_edge = local.edge.run(local.edge_names, _check_inputs(self.input_specs, feeds))
        at_edge = dict(zip(local.edge_names, at_edge))
        t_edge = time.perf_counter()
        result = Result({}, local.entry.id, edge_ms=(t_edge - start) * 1e3)
        cloud_out = self._cloud_part(local, at_edge, result) if local.entry.has_cloud else {}
        merged = {**at_edge, **cloud_out}
        result.outputs = {name: merged[name] for name in self.output_names}
        result.total_ms = (time.perf_counter() - start) * 1e3
        self.last = result
        return result

    def probe(self, nbytes: int = 64 * 1024) -> dict:
        """Measure the RTT (``GET /healthz``) and bandwidth (``POST /v1/probe``) and seed the estimates."""
        t0 = time.perf_counter()
        self._send("GET", "/healthz", end=time.monotonic() + self.timeout)
        rtt = (time.perf_counter() - t0) * 1e3
        self.estimator.observe_rtt(rtt)
        t1 = time.perf_counter()
        self._send("POST", "/v1/probe", bytes(nbytes), end=time.monotonic() + self.timeout)
        self.estimator.observe_transfer(nbytes, (time.perf_counter() - t1) * 1e3, "probe")
        self.last_sample = time.monotonic()
        return {"rtt_ms": self.estimator.rtt_ms, "bandwidth_Bps": self.estimator.bandwidth}

    def _maybe_probe(self) -> None:
        """Adaptive outputs: measure the link when no transfer has measured it for ``probe_interval_s``.

        A switch awaiting confirmation (``PlanSwitcher.pending``) probes at once.
        This seeds the estimate before the first request and lets an edge-only
        plan (which sends nothing), or a plan whose frames are too small to time
        the link, notice that the link changed.
        """
        stale = self.last_sample is None or time.monotonic() - self.last_sample > self.probe_interval_s
        stale = stale or self.switcher.pending  # confirm (or refute) a pending switch at once
        if not (self.plans.adaptive and self.http is not None and stale):
            return
        try:
            self.probe(self._probe_bytes())
        except (httpx.TransportError, httpcore.TimeoutException, _Retryable, CloudError):
            self.last_sample = time.monotonic()  # the request itself will retry or fall back

    def _probe_bytes(self) -> int:
        """Enough bytes to tell the current plan's interval edges apart (16 KiB .. 256 KiB).

        The transfer must take well above the timing noise (``PROBE_MS``) at the
        upper edge of the current plan's interval, and no more than that: a probe
        sized like a large cut would stall a slow link for seconds.
        """
        lo, hi = self.switcher.current.interval
        edge = hi if self.switcher.current is not self.plans.entries[-1] else lo  # the top plan has no upper edge
        return int(min(256 * 1024, max(LOWER_BOUND_BYTES, edge * PROBE_MS / 1e3)))

    def close(self) -> None:
        if self.http is not None:
            self.http.close()

    def __enter__(self) -> "EdgeClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _local(self, entry: PlanEntry) -> _Local:
        if entry.id not in self.local:
            self.local[entry.id] = _Local(entry, self.threads)
        return self.local[entry.id]

    def _cloud_part(self, local: _Local, at_edge: dict, result: Result) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        frames = local.codec.encode(at_edge)
        t1 = time.perf_counter()
        result.encode_ms = (t1 - t0) * 1e3
        try:
            return self._remote(local, frames, result, t1)
        except (httpx.TransportError, httpcore.TimeoutException, _Retryable) as exc:
            if self.fallback != "local":
                raise CloudError(f"the cloud is unreachable: {exc}") from exc
            return self._fallback(local, frames, result, exc)

    def _remote(self, local: _Local, frames: list[bytes], result: Result, t1: float) -> dict[str, np.ndarray]:
        if self.http is None:
            raise _Retryable("no cloud URL given")
        entry, rid = local.entry, next(self.ids)
        body = request.encode_request(entry.id, frames, rid, entry.crc)
        (reply, message, outputs), result.attempts, t2 = self._post(body, entry, rid)
        server_ms = sum(v for v in message.timing.values() if np.isfinite(v) and v >= 0)
        result.server, result.cloud_ms = message.timing, message.timing["cloud_ms"]
        result.decode_ms = (time.perf_counter() - t2) * 1e3
        result.network_ms = max(0.0, (t2 - t1) * 1e3 - server_ms)
        result.bytes_up, result.bytes_down = len(body), len(reply)
        self.estimator.observe_transfer(len(body) + len(reply), result.network_ms, "infer")
        if self.estimator.informative:  # else the link is unmeasured: the next request may probe it
            self.last_sample = time.monotonic()
        return outputs

    def _post(self, body: bytes, entry: PlanEntry, rid: int):
        """((reply, message, outputs), attempts, time the reply arrived); retries within ``deadline``."""
        overall = time.monotonic() + self.deadline
        for attempt in range(self.retries + 1):
            try:
                reply = self._send("POST", "/v1/infer", body, end=min(overall, time.monotonic() + self.timeout)).content
                arrived = time.perf_counter()
                return self._read_reply(reply, entry, rid), attempt + 1, arrived
            except (httpx.TransportError, httpcore.TimeoutException, _Retryable):
                pause = RETRY_BACKOFF_S * 2**attempt
                if attempt == self.retries or time.monotonic() + pause >= overall:
                    raise
                time.sleep(pause)
        raise AssertionError("unreachable")

    def _read_reply(self, reply: bytes, entry: PlanEntry, rid: int):
        """The parsed reply, checked against the plan's cloud outputs.

        A body that is not a response container (HTML, random bytes, empty,
        truncated) or answers another request is retryable, like a 5xx. A valid
        reply whose outputs disagree with the plan raises ``CloudError``.
        """
        try:
            message = request.decode_response(reply, max_length=len(reply))
        except codec.CodecError as exc:
            raise _Retryable(f"the 200 reply is not a valid response ({type(exc).__name__}: {exc})") from exc
        if message.request_id != rid or message.plan_id != entry.id:
            raise _Retryable(f"the reply is for request {message.request_id} of plan {message.plan_id!r}, "
                             f"not request {rid} of plan {entry.id!r}")
        return reply, message, _check_outputs(message, entry)

    def _send(self, method: str, path: str, body: bytes | None = None, end: float | None = None) -> httpx.Response:
        """One HTTP exchange that ends (connect, send, whole reply) by ``end`` (time.monotonic())."""
        if self.http is None:
            raise _Retryable("no cloud URL given")
        headers = {"Content-Type": "application/octet-stream"} if body is not None else None
        self._clock.set(end if end is not None else time.monotonic() + self.timeout)
        try:
            response = self.http.request(method, self.url + path, content=body, headers=headers)
        finally:
            self._clock.set(None)
        if response.status_code >= 500:
            raise _Retryable(f"server error {response.status_code}: {response.text[:200]}")
        if response.status_code >= 400:
            raise _refusal(response)
        return response

    def _fallback(self, local: _Local, frames: list[bytes], result: Result, exc: Exception) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        try:
            cloud = local.cloud()
        except CloudError as missing:
            raise CloudError(f"the cloud failed ({_why(exc)}) and {missing}") from exc
        names = [o.name for o in cloud.get_outputs()]
        outputs = dict(zip(names, cloud.run(names, local.codec.decode(frames))))
        result.fallback, result.error = True, _why(exc)
        result.cloud_ms = (time.perf_counter() - t0) * 1e3
        return outputs


def _why(exc: Exception) -> str:
    """Why the cloud failed, in words: our own errors by their message, network errors with their kind."""
    if isinstance(exc, (_Retryable, CloudError)):
        return str(exc)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class _Retryable(Exception):
    """A 5xx reply, a garbled 200 reply or no URL: worth retrying, then falling back."""


PROBE_MS = 20.0  # a probe lasts about this long at the upper edge of the current plan's interval


def _check_outputs(message: request.Message, entry: PlanEntry) -> dict[str, np.ndarray]:
    """The reply's arrays, each checked against the plan's spec of that cloud output (else CloudError)."""
    records = {r.name: r for r in message.records}
    outputs = {}
    for spec in entry.plan["cloud"].get("outputs", []):
        name, shape, dtype = spec["name"], [int(d) for d in spec["shape"]], np.dtype(spec["dtype"])
        record = records.get(name)
        if record is None:
            raise CloudError(f"the cloud's reply has no output {name!r} (plan {entry.id!r}); "
                             f"it holds {sorted(records)}", code="bad_reply")
        try:
            limit = max(1, int(np.prod(shape, dtype=object)))
            value = request.record_array(record, max_elements=limit)
        except codec.CodecError as exc:
            raise CloudError(f"the cloud's output {name!r} does not decode: {exc}", code="bad_reply") from exc
        if list(value.shape) != shape or value.dtype != dtype:
            raise CloudError(f"the cloud's output {name!r} is {value.dtype} {list(value.shape)}, "
                             f"the plan says {dtype} {shape}", code="bad_reply")
        outputs[name] = value
    return outputs


class _Deadline(threading.local):
    """The end (time.monotonic()) of the exchange in progress on this thread, or None."""

    end: float | None = None

    def set(self, end: float | None) -> None:
        self.end = end

    def clamp(self, timeout: float | None, error: type[Exception]) -> float | None:
        if self.end is None:
            return timeout
        left = self.end - time.monotonic()
        if left <= 0:
            raise error("the attempt's deadline has passed")
        return left if timeout is None else min(timeout, left)


class _DeadlineStream(httpcore.NetworkStream):
    """A network stream whose every read and write ends by the attempt's deadline."""

    def __init__(self, stream: httpcore.NetworkStream, clock: _Deadline) -> None:
        self.stream, self.clock = stream, clock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.stream.read(max_bytes, self.clock.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # in slices, so that a slow reader cannot stretch one send past the deadline
        for start in range(0, len(buffer), 65536) if buffer else [0]:
            self.stream.write(buffer[start : start + 65536], self.clock.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.stream.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        inner = self.stream.start_tls(ssl_context, server_hostname, self.clock.clamp(timeout, httpcore.ConnectTimeout))
        return _DeadlineStream(inner, self.clock)

    def get_extra_info(self, info: str):
        return self.stream.get_extra_info(info)


class _DeadlineBackend(httpcore.NetworkBackend):
    def __init__(self, backend: httpcore.NetworkBackend, clock: _Deadline) -> None:
        self.backend, self.clock = backend, clock

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        stream = self.backend.connect_tcp(host, port, self.clock.clamp(timeout, httpcore.ConnectTimeout),
                                          local_address, socket_options)
        return _DeadlineStream(stream, self.clock)

    def connect_unix_socket(self, path, timeout=None, socket_options=None):  # pragma: no cover - unused
        stream = self.backend.connect_unix_socket(path, self.clock.clamp(timeout, httpcore.ConnectTimeout),
                                                  socket_options)
        return _DeadlineStream(stream, self.clock)

    def sleep(self, seconds: float) -> None:
        self.backend.sleep(seconds)


def _http_client(timeout: float, verify, headers: dict, clock: _Deadline) -> httpx.Client:
    """An httpx client whose connections honour ``clock``: every socket operation ends by the attempt's end."""
    transport = httpx.HTTPTransport(verify=verify)
    pool = getattr(transport, "_pool", None)
    if pool is not None and hasattr(pool, "_network_backend"):
        pool._network_backend = _DeadlineBackend(pool._network_backend, clock)
    return httpx.Client(timeout=timeout, headers=headers, transport=transport)


def _refusal(response: httpx.Response) -> CloudError:
    try:
        info = response.json()
    except ValueError:
        info = {"error": "http_error", "detail": response.text[:200]}
    return CloudError(f"the server refused the request ({response.status_code} {info.get('error')}): "
                      f"{info.get('detail')}", response.status_code, info.get("error"))


def _check_inputs(specs: list[dict], feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    checked = {}
    for spec in specs:
        if spec["name"] not in feeds:
            raise InputError(f"missing input {spec['name']!r} (the model takes {[s['name'] for s in specs]})")
        array = np.asarray(feeds[spec["name"]])
        if list(array.shape) != list(spec["shape"]):
            raise InputError(f"input {spec['name']!r} has shape {list(array.shape)}, expected {spec['shape']}")
        checked[spec["name"]] = array.astype(spec["dtype"], copy=False)
    extra = sorted(set(feeds) - set(checked))
    if extra:
        raise InputError(f"unknown input {extra[0]!r}")
    return checked


__all__ = ["EdgeClient", "Result", "CloudError"]
