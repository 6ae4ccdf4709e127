"""The model-tree client: run blocks one by one on the edge and follow the tree policy at each fork.

    from splitc.runtime.tree_client import TreeClient

    with TreeClient("out/", "http://127.0.0.1:8000", fallback="local") as client:
        result = client.infer({"image": x})
        print(result.fork, result.path, result.label, result.total_ms)

``out/`` is a ``splitc tree`` output (docs/plan.md, "Model-tree output"). At
fork f (before block f) the client reads its bandwidth estimate, turns it into
a class with the policy's class edges, and does what the policy says for
(fork, path so far, class): run a variant of block f and go on, or offload.
An offload feeds the fork's tensors to the entry point's pass-through edge
half (the quantizer), encodes the cut with the entry point's codec, and POSTs
one request container (``splitc.wire.request``) naming the entry point's plan
id to ``splitc serve OUT``; the server runs the base model's suffix. After the
last block the result is on the edge.

The rate is ``bandwidth()`` when a callable is given (a measurement the
application makes); else the rate the latest probe measured (``probe``: a
small and a large ``POST /v1/probe`` back to back, the extra bytes over the
extra time), made before a request when the last measurement is older than
``probe_interval_s``: the chain's classes describe the rate of the last step,
a point measurement, not a long-run average. Before any probe it is the
``BandwidthEstimator`` fed by the client's own offloads; with no estimate at
all the chain's most frequent class is used.

Failures: network errors, timeouts and 5xx replies are retried ``retries``
times; then, with ``fallback="local"``, the entry point's suffix (its
``cloud.onnx``, which the output directory holds) runs here. A 404 (the server
does not serve that entry point; its message names the plan id) falls back
at once; any other 4xx raises ``CloudError``. ``compose`` runs a given
branch entirely in process, through the same codec round trip, so that an
answer can be checked bit for bit.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpcore
import httpx
import numpy as np

from splitc.runtime.bandwidth import BandwidthEstimator
from splitc.runtime.client import CloudError, _check_inputs, _check_outputs, _refusal, _Retryable
from splitc.runtime.cloud_service import open_session
from splitc.runtime.cut_codec import CutCodec
from splitc.runtime.errors import PlanError
from splitc.runtime.plans import PlanEntry, PlanSet
from splitc.runtime.tree_manifest import TreeManifest
from splitc.wire import codec, request

__all__ = ["TreeClient", "TreeResult"]

PROBE_S = 0.05  # a probe takes about this long at the highest class edge
PROBE_BASE_BYTES = 64  # the probe that measures the base latency of a probe
MIN_PROBE_MS = 0.05  # a probe faster than the small one by less than this counts as this much
RETRY_BACKOFF_S = 0.05


@dataclass
class TreeResult:
    """One inference: outputs, the branch taken, the classes seen at each fork, and where the time went (ms)."""

    outputs: dict[str, np.ndarray]
    path: tuple[int, ...] = ()
    fork: int | None = None  # where it offloaded (None: all on the edge)
    label: str | None = None
    plan_id: str | None = None
    classes: list[int] = field(default_factory=list)
    fallback: bool = False
    error: str | None = None
    edge_ms: float = 0.0
    network_ms: float = 0.0
    cloud_ms: float = 0.0
    total_ms: float = 0.0
    bytes_up: int = 0
    bytes_down: int = 0


class _EntryPoint:
    """An entry point on the edge: the pass-through quantizer, the codec, and (for the fallback) the suffix."""

    def __init__(self, entry: PlanEntry, threads: int, need_cloud: bool) -> None:
        self.entry = entry
        self.threads = threads
        for part in (entry.plan.edge, *((entry.plan.cloud,) if need_cloud and entry.plan.cloud else ())):
            if not (entry.dir / part.file).is_file():
                raise PlanError(f"{entry.dir / part.file}: missing (entry point {entry.id!r})")
        self.edge = open_session(entry.dir / entry.plan.edge.file, threads)
        self.edge_inputs = [i.name for i in self.edge.get_inputs()]
        self.edge_names = [o.name for o in self.edge.get_outputs()]
        self.codec = CutCodec(entry.plan, entry.dir)
        self._cloud = None

    def frames(self, acts: dict[str, np.ndarray]) -> list[bytes]:
        """The request's frames for the fork's tensors."""
        wire = self.edge.run(self.edge_names, {n: acts[n] for n in self.edge_inputs})
        return self.codec.encode(dict(zip(self.edge_names, wire)))

    def local(self, frames: list[bytes]) -> dict[str, np.ndarray]:
        """The suffix run here on the decoded frames, exactly as the server runs it."""
        if self._cloud is None:
            cloud = self.entry.plan.cloud
            if cloud is None or not (self.entry.dir / cloud.file).is_file():
                raise CloudError(f"entry point {self.entry.id!r} has no suffix here to fall back on")
            self._cloud = open_session(self.entry.dir / cloud.file, self.threads)
        names = [o.name for o in self._cloud.get_outputs()]
        return dict(zip(names, self._cloud.run(names, self.codec.decode(frames))))


class TreeClient:
    """Follows a model tree's policy block by block (see the module docstring)."""

    def __init__(self, out_dir: str | Path, url: str | None = None, token: str | None = None, timeout: float = 10.0,
                 retries: int = 1, fallback: str | None = None, threads: int = 0, bandwidth=None,
                 initial_bandwidth: float | None = None, alpha: float = 0.3, probe_interval_s: float = 1.0) -> None:
        if fallback not in (None, "local"):
            raise ValueError(f"fallback must be None or 'local', not {fallback!r}")
        self.tree = TreeManifest.load(out_dir)
        plans = PlanSet(out_dir)
        self.entries = {}
        for plan_id in self.tree.used_entry_points():
            if plan_id not in plans.by_id:
                raise PlanError(f"{Path(out_dir) / 'plans.json'}: no entry point {plan_id!r} (tree.json uses it)")
            self.entries[plan_id] = _EntryPoint(plans.by_id[plan_id], threads, fallback == "local")
        self.blocks = [[open_session(file, threads) for _, file in variants] for variants in self.tree.blocks]
        self.url, self.fallback, self.retries = (url.rstrip("/") if url else None), fallback, max(0, retries)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(timeout=timeout, headers=headers) if url else None
        self.bandwidth = bandwidth
        self.estimator = BandwidthEstimator(alpha, initial_bandwidth)
        self.probe_interval_s = probe_interval_s
        self.last_sample: float | None = None
        self.measured: float | None = None  # the latest probe's rate (bytes/s)
        self.ids = itertools.count(1)
        self.last: TreeResult | None = None

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's outputs (details of the run in ``last``)."""
        return self.infer(feeds).outputs

    def infer(self, feeds: dict[str, np.ndarray]) -> TreeResult:
        """One inference following the policy; the outputs, the branch and the timing."""
        self._maybe_probe()
        start = time.perf_counter()
        acts = self._check(feeds)
        result = TreeResult({})
        fork = 0
        while fork < self.tree.num_blocks:
            cls = self.tree.classify(self._rate())
            result.classes.append(cls)
            decision = self.tree.decide(fork, result.path, cls)
            if decision.kind == "offload":
                result.edge_ms = (time.perf_counter() - start) * 1e3
                result.fork, result.label = fork, decision.label
                acts = self._offload(fork, decision.label, acts, result)
                break
            acts = self._block(fork, decision.index, acts)
            result.path += (decision.index,)
            fork += 1
        else:
            result.edge_ms = (time.perf_counter() - start) * 1e3
        result.outputs = {name: acts[name] for name in self.tree.outputs}
        result.total_ms = (time.perf_counter() - start) * 1e3
        self.last = result
        return result

    def compose(self, feeds: dict[str, np.ndarray], path: tuple[int, ...], fork: int | None = None,
                label: str | None = None) -> dict[str, np.ndarray]:
        """One branch run entirely here: ``path``'s variants, then the entry point (``fork``, ``label``) locally."""
        acts = self._check(feeds)
        for f, v in enumerate(path):
            acts = self._block(f, v, acts)
        if fork is not None:
            point = self._entry(self.tree.entry_point(fork, label))
            acts = point.local(point.frames(acts))
        return {name: acts[name] for name in self.tree.outputs}

    def probe(self, nbytes: int | None = None) -> float | None:
        """Measure the link now; returns the measured rate (bytes/s), which ``infer`` then uses.

        ``GET /healthz`` times the round trip; a small ``POST /v1/probe`` times
        a request that carries (almost) nothing and one of ``nbytes`` (default:
        about ``PROBE_S`` at the highest class edge) the same request with the
        bytes: the rate is the extra bytes over the extra time. Both transfers
        also feed the ``BandwidthEstimator``.
        """
        if self.http is None:
            return self.measured
        nbytes = nbytes or self._probe_bytes()
        t0 = time.perf_counter()
        self._send("GET", "/healthz")
        self.estimator.observe_rtt((time.perf_counter() - t0) * 1e3)
        times = []
        for size in (PROBE_BASE_BYTES, nbytes):
            t1 = time.perf_counter()
            self._send("POST", "/v1/probe", bytes(size))
            times.append((time.perf_counter() - t1) * 1e3)
            self.estimator.observe_transfer(size, times[-1], "probe")
        self.measured = (nbytes - PROBE_BASE_BYTES) * 1e3 / max(times[1] - times[0], MIN_PROBE_MS)
        self.last_sample = time.monotonic()
        return self.measured

    def close(self) -> None:
        """Close the HTTP connection."""
        if self.http is not None:
            self.http.close()

    def __enter__(self) -> TreeClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _rate(self) -> float | None:
        if self.bandwidth is not None:
            return self.bandwidth()
        return self.measured if self.measured is not None else self.estimator.bandwidth

    def _probe_bytes(self) -> int:
        top = float(self.tree.edges.max()) if len(self.tree.edges) else 0.0
        return int(min(256 * 1024, max(3000, top * PROBE_S)))

    def _maybe_probe(self) -> None:
        stale = self.last_sample is None or time.monotonic() - self.last_sample > self.probe_interval_s
        if self.bandwidth is not None or self.http is None or not len(self.tree.edges) or not stale:
            return
        try:
            self.probe()
        except (httpx.TransportError, httpcore.TimeoutException, _Retryable, CloudError):
            self.last_sample = time.monotonic()  # the request itself will retry or fall back

    def _check(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return _check_inputs(self.tree.inputs, feeds)

    def _block(self, fork: int, variant: int, acts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.blocks[fork][variant]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, {i.name: acts[i.name] for i in session.get_inputs()})))

    def _entry(self, plan_id: str) -> _EntryPoint:
        if plan_id not in self.entries:
            raise PlanError(f"{self.tree.out_dir}: entry point {plan_id!r} is not loaded")
        return self.entries[plan_id]

    def _offload(self, fork: int, label: str, acts: dict, result: TreeResult) -> dict[str, np.ndarray]:
        point = self._entry(self.tree.entry_point(fork, label))
        result.plan_id = point.entry.id
        frames = point.frames(acts)
        try:
            return self._remote(point, frames, result)
        except (httpx.TransportError, httpcore.TimeoutException, _Retryable, CloudError) as exc:
            missing = isinstance(exc, CloudError) and exc.status == 404
            if self.fallback != "local" or (isinstance(exc, CloudError) and not missing):
                if isinstance(exc, CloudError):
                    raise
                raise CloudError(f"the cloud is unreachable: {exc}") from exc
            t0 = time.perf_counter()
            outputs = point.local(frames)
            result.fallback, result.error = True, str(exc) or type(exc).__name__
            result.cloud_ms = (time.perf_counter() - t0) * 1e3
            return outputs

    def _remote(self, point: _EntryPoint, frames: list[bytes], result: TreeResult) -> dict[str, np.ndarray]:
        if self.http is None:
            raise _Retryable("no cloud URL given")
        rid = next(self.ids)
        body = request.encode_request(point.entry.id, frames, rid, point.entry.crc)
        for attempt in range(self.retries + 1):
            try:
                t0 = time.perf_counter()
                reply = self._send("POST", "/v1/infer", body).content
                elapsed = (time.perf_counter() - t0) * 1e3
                message, outputs = _read_reply(reply, point.entry, rid)
                break
            except (httpx.TransportError, httpcore.TimeoutException, _Retryable):
                if attempt == self.retries:
                    raise
                time.sleep(RETRY_BACKOFF_S * 2**attempt)
        server_ms = sum(v for v in message.timing.values() if np.isfinite(v) and v >= 0)
        result.cloud_ms = message.timing.get("cloud_ms", 0.0)
        result.network_ms = max(0.0, elapsed - server_ms)
        result.bytes_up, result.bytes_down = len(body), len(reply)
        self.estimator.observe_transfer(len(body) + len(reply), result.network_ms, "infer")
        if self.estimator.informative:
            self.last_sample = time.monotonic()
        return outputs

    def _send(self, method: str, path: str, body: bytes | None = None) -> httpx.Response:
        headers = {"Content-Type": "application/octet-stream"} if body is not None else None
        response = self.http.request(method, self.url + path, content=body, headers=headers)
        if response.status_code >= 500:
            raise _Retryable(f"server error {response.status_code}: {response.text[:200]}")
        if response.status_code >= 400:
            raise _refusal(response)
        return response


def _read_reply(reply: bytes, entry: PlanEntry, rid: int) -> tuple[request.Message, dict[str, np.ndarray]]:
    """The reply and its outputs, checked against the entry point's plan (a garbled reply is retryable)."""
    try:
        message = request.decode_response(reply, max_length=len(reply))
    except codec.CodecError as exc:
        raise _Retryable(f"the reply is not a valid response ({type(exc).__name__}: {exc})") from exc
    if message.request_id != rid or message.plan_id != entry.id:
        raise _Retryable(f"the reply answers request {message.request_id} of plan {message.plan_id!r}")
    return message, _check_outputs(message, entry)
