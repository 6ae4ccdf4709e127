"""The edge client: run the edge half here, the cloud half on a ``splitc serve`` server.

    from splitc.runtime import EdgeClient

    with EdgeClient("out/", "http://127.0.0.1:8000", token=None, fallback="local") as client:
        outputs = client.run({"input": x})
        print(client.last.timing())        # edge, encode, network, cloud, decode ms; bytes; plan; fallback

Each request runs the edge half, encodes the cut (``CutCodec``), POSTs it over
a persistent HTTP connection (httpx), and decodes the reply. Network errors,
timeouts and 5xx replies are retried ``retries`` times; then, with
``fallback="local"``, the cloud half runs on this device (it needs the plan's
``cloud.onnx``). With an adaptive output (``plans.json``) the client estimates
the link from its own transfers and switches plans between requests.
"""

from __future__ import annotations

import itertools
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from splitc.runtime import request
from splitc.runtime.bandwidth import BandwidthEstimator, PlanSwitcher
from splitc.runtime.cloud_service import open_session
from splitc.runtime.cut_codec import CutCodec
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
        self.edge = open_session(entry.dir / entry.plan["edge"]["file"], threads)
        self.edge_names = [o.name for o in self.edge.get_outputs()]
        self.codec = CutCodec(entry.plan, entry.dir)
        self._cloud = None

    def cloud(self):
        if self._cloud is None:
            if not self.entry.has_cloud or not (self.entry.dir / self.entry.plan["cloud"]["file"]).is_file():
                raise CloudError(f"plan {self.entry.id!r} has no cloud half here to fall back on")
            self._cloud = open_session(self.entry.dir / self.entry.plan["cloud"]["file"], self.threads)
        return self._cloud


class EdgeClient:
    """Runs compiled splits against a cloud server (see the module docstring)."""

    def __init__(self, out_dir: str | Path, url: str | None = None, token: str | None = None, timeout: float = 10.0,
                 retries: int = 2, fallback: str | None = None, verify: bool | str = True, threads: int = 0,
                 hysteresis: float = 0.15, alpha: float = 0.3, initial_bandwidth: float | None = None,
                 probe_interval_s: float = 10.0) -> None:
        if fallback not in (None, "local"):
            raise ValueError(f"fallback must be None or 'local', not {fallback!r}")
        self.plans = PlanSet(out_dir)
        self.url = url.rstrip("/") if url else None
        self.retries, self.fallback, self.threads = max(0, retries), fallback, threads
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if isinstance(verify, (str, Path)):
            verify = ssl.create_default_context(cafile=str(verify))  # a CA bundle or a self-signed certificate
        self.http = httpx.Client(timeout=timeout, verify=verify, headers=headers) if url else None
        self.estimator = BandwidthEstimator(alpha, initial_bandwidth)
        self.switcher = PlanSwitcher(self.plans, hysteresis, initial_bandwidth)
        self.probe_interval_s = probe_interval_s
        self.last_sample: float | None = None  # time of the latest link measurement
        self.local: dict[str, _Local] = {}
        self.ids = itertools.count(1)
        self.last: Result | None = None
        first = self.plans.entries[0].plan
        self.input_specs, self.output_names = first["edge"]["inputs"], [o["name"] for o in first["model"]["outputs"]]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's outputs, in the original order (details of the run in ``last``)."""
        return self.infer(feeds).outputs

    def infer(self, feeds: dict[str, np.ndarray]) -> Result:
        """One inference; returns the outputs with the timing breakdown."""
        self._maybe_probe()
        start = time.perf_counter()
        local = self._local(self.switcher.select(self.estimator.bandwidth))
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
        self._send("GET", "/healthz")
        rtt = (time.perf_counter() - t0) * 1e3
        self.estimator.observe_rtt(rtt)
        t1 = time.perf_counter()
        self._send("POST", "/v1/probe", bytes(nbytes))
        self.estimator.observe_transfer(nbytes, (time.perf_counter() - t1) * 1e3)
        self.last_sample = time.monotonic()
        return {"rtt_ms": self.estimator.rtt_ms, "bandwidth_Bps": self.estimator.bandwidth}

    def _maybe_probe(self) -> None:
        """Adaptive outputs: measure the link when no transfer has measured it for ``probe_interval_s``.

        This seeds the estimate before the first request and lets an edge-only
        plan (which sends nothing) notice that the link got faster.
        """
        stale = self.last_sample is None or time.monotonic() - self.last_sample > self.probe_interval_s
        if not (self.plans.adaptive and self.http is not None and stale):
            return
        try:
            self.probe(self._probe_bytes())
        except (httpx.TransportError, _Retryable, CloudError):
            self.last_sample = time.monotonic()  # the request itself will retry or fall back

    def _probe_bytes(self) -> int:
        """About what the next faster plan sends (4 KiB .. 256 KiB): the size whose timing matters."""
        entries = self.plans.entries
        index = min(entries.index(self.switcher.current) + 1, len(entries) - 1)
        sent = sum(c.get("predicted_bytes", c.get("bytes", 0)) for c in entries[index].plan.get("cut", []))
        return int(min(256 * 1024, max(4096, sent)))

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
        except (httpx.TransportError, _Retryable) as exc:
            if self.fallback != "local":
                raise CloudError(f"the cloud is unreachable: {exc}") from exc
            return self._fallback(local, frames, result, exc)

    def _remote(self, local: _Local, frames: list[bytes], result: Result, t1: float) -> dict[str, np.ndarray]:
        if self.http is None:
            raise _Retryable("no cloud URL given")
        entry, rid = local.entry, next(self.ids)
        body = request.encode_request(entry.id, frames, rid, entry.crc)
        reply, result.attempts = self._post(body)
        t2 = time.perf_counter()
        message = request.decode_response(reply, max_length=len(reply))
        if message.request_id != rid or message.plan_id != entry.id:
            raise CloudError(f"the reply is for request {message.request_id} of plan {message.plan_id!r}")
        outputs = {r.name: request.record_array(r) for r in message.records}
        server_ms = sum(message.timing.values())
        result.server, result.cloud_ms = message.timing, message.timing["cloud_ms"]
        result.decode_ms = (time.perf_counter() - t2) * 1e3
        result.network_ms = max(0.0, (t2 - t1) * 1e3 - server_ms)
        result.bytes_up, result.bytes_down = len(body), len(reply)
        self.estimator.observe_transfer(len(body) + len(reply), result.network_ms)
        self.last_sample = time.monotonic()
        return outputs

    def _post(self, body: bytes) -> tuple[bytes, int]:
        for attempt in range(self.retries + 1):
            try:
                return self._send("POST", "/v1/infer", body).content, attempt + 1
            except (httpx.TransportError, _Retryable):
                if attempt == self.retries:
                    raise
                time.sleep(RETRY_BACKOFF_S * 2**attempt)
        raise AssertionError("unreachable")

    def _send(self, method: str, path: str, body: bytes | None = None) -> httpx.Response:
        if self.http is None:
            raise _Retryable("no cloud URL given")
        headers = {"Content-Type": "application/octet-stream"} if body is not None else None
        response = self.http.request(method, self.url + path, content=body, headers=headers)
        if response.status_code >= 500:
            raise _Retryable(f"server error {response.status_code}: {response.text[:200]}")
        if response.status_code >= 400:
            raise _refusal(response)
        return response

    def _fallback(self, local: _Local, frames: list[bytes], result: Result, exc: Exception) -> dict[str, np.ndarray]:
        t0 = time.perf_counter()
        cloud = local.cloud()
        names = [o.name for o in cloud.get_outputs()]
        outputs = dict(zip(names, cloud.run(names, local.codec.decode(frames))))
        result.fallback, result.error = True, f"{type(exc).__name__}: {exc}"
        result.cloud_ms = (time.perf_counter() - t0) * 1e3
        return outputs


class _Retryable(Exception):
    """A 5xx reply or no URL: worth retrying, then falling back."""


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
