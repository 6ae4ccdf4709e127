"""The relaying edge server of a three-tier split, and the three parts run in one process.

``splitc serve OUT/edge --upstream http://cloud:PORT`` serves a device's requests
(made for ``OUT/device/plan.json``, whose copy ``OUT/edge/plan.json`` is): it
decodes the link-1 frames its half reads, runs the edge half, encodes the
link-2 tensors it made (``OUT/edge/upstream/plan.json``: the cloud's plan, byte
for byte), forwards the device tensors the cloud reads as the very frames the
device sent, POSTs the request to the cloud server and answers the device with
its own outputs plus the cloud's output records, unchanged (bit for bit what
the cloud sent). ``relay.json`` says which is which (docs/plan.md).

An upstream that cannot be reached, fails (5xx), refuses the relayed request
(4xx) or sends a reply that is not one is answered 502; one that does not
answer in time 504. The error's detail names the upstream URL. A device client
with ``fallback="local"`` then runs ``OUT/device/rest.onnx`` (the edge and cloud
halves composed) itself.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import httpx
import numpy as np

from splitc.artifacts.plan import Plan
from splitc.runtime.cloud_service import CloudService, Rejected, check_plan, open_session
from splitc.runtime.cut_codec import CutCodec, is_array
from splitc.runtime.errors import PlanError
from splitc.runtime.pipeline import Pipeline
from splitc.runtime.plans import PlanEntry, PlanSet
from splitc.wire import codec, request

RELAY = "relay.json"
RELAY_SCHEMA = "splitc.relay/"
DEFAULT_UPSTREAM_TIMEOUT = 10.0


def is_relay_dir(out_dir: str | Path) -> bool:
    """True for a relaying edge output (``OUT/edge`` of a three-tier compile whose cloud runs nodes)."""
    return (Path(out_dir) / RELAY).is_file()


def _read_manifest(out_dir: Path) -> dict:
    path = out_dir / RELAY
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise PlanError(f"{path}: not a readable relay manifest: {exc}") from exc
    if not isinstance(manifest, dict) or not str(manifest.get("schema", "")).startswith(RELAY_SCHEMA):
        raise PlanError(f"{path}: not a splitc relay manifest")
    return manifest


def _single(plans: PlanSet) -> PlanEntry:
    if plans.adaptive:
        raise PlanError(f"{plans.out_dir}: a relaying edge serves one plan, not a bandwidth range")
    return plans.entries[0]


def _subplan(plan: Plan, cut: list[dict], edge: dict | None) -> Plan:
    """``plan`` restricted to some of its cut entries (and, with ``edge``, another sending half): what a
    ``CutCodec`` for those entries reads."""
    data = {**plan.to_json(), "cut": cut}
    if edge is not None:
        data["edge"] = edge
    return Plan.from_json(data)


def _frames(records: list[request.Record]) -> list[bytes]:
    """Request records as the frames ``encode_request`` sends again with the same kind."""
    return [request.ArrayPayload(r.data) if r.kind == request.KIND_ARRAY else bytes(r.data) for r in records]


class EdgeRelay:
    """The edge's part without HTTP: a device's link-1 frames in, the link-2 frames and the edge's outputs out."""

    def __init__(self, out_dir: str | Path, threads: int = 0) -> None:
        self.out_dir = Path(out_dir)
        self.manifest = _read_manifest(self.out_dir)
        self.plans = PlanSet(self.out_dir)
        self.entry = _single(self.plans)
        self.upstream = _single(PlanSet(self.out_dir / self.manifest["upstream"]["dir"]))
        index = {e.tensor: i for i, e in enumerate(self.entry.plan.cut)}
        sources = self.manifest["upstream"]["cut"]
        if [s["tensor"] for s in sources] != [e.tensor for e in self.upstream.plan.cut]:
            raise PlanError(f"{self.out_dir / RELAY}: its upstream cut differs from {self.upstream.dir}/plan.json")
        missing = [t for t in self.manifest["consumed"] + [s["tensor"] for s in sources if s["source"] == "relay"]
                   if t not in index]
        if missing:
            raise PlanError(f"{self.out_dir / RELAY}: tensor {missing[0]!r} is not in the device's cut")
        self.consumed = [index[t] for t in self.manifest["consumed"]]
        self.sources = [index[s["tensor"]] if s["source"] == "relay" else None for s in sources]
        cut = self.entry.plan["cut"]
        self.in_codec = CutCodec(_subplan(self.entry.plan, [cut[i] for i in self.consumed], None), self.out_dir)
        edge = self.manifest.get("edge")
        made = [e for e, s in zip(self.upstream.plan["cut"], sources) if s["source"] == "edge"]
        self.out_codec = CutCodec(_subplan(self.upstream.plan, made, edge), self.upstream.dir)
        self.session = open_session(self.out_dir / edge["file"], threads) if edge else None
        self.names = [o.name for o in self.session.get_outputs()] if self.session else []
        for part in (self.in_codec, self.out_codec):
            part.warm_up()

    def forward(self, frames: list[bytes]) -> tuple[list[bytes], dict[str, np.ndarray], dict[str, float]]:
        """The cloud's frames (in its plan's order), the model outputs the edge computes, and the times (ms).

        ``frames`` are the device's, in its plan's order; malformed ones raise ``codec.CodecError``.
        """
        t0 = time.perf_counter()
        feeds = self.in_codec.decode([frames[i] for i in self.consumed])
        t1 = time.perf_counter()
        outputs = dict(zip(self.names, self.session.run(self.names, feeds))) if self.session else {}
        t2 = time.perf_counter()
        made = iter(self.out_codec.encode(outputs))
        upstream = [frames[i] if i is not None else next(made) for i in self.sources]
        returned = {name: outputs[name] for name in self.manifest["returned"]}
        timing = {"decode_ms": (t1 - t0) * 1e3, "edge_ms": (t2 - t1) * 1e3,
                  "encode_ms": (time.perf_counter() - t2) * 1e3}
        return upstream, returned, timing


class RelayService:
    """Serves a relaying edge output: the ``CloudService`` interface (``plans``, ``describe``, ``infer``)."""

    def __init__(self, out_dir: str | Path, upstream: str, ort_threads: int = 0, reply_bits: int = 32,
                 timeout: float = DEFAULT_UPSTREAM_TIMEOUT) -> None:
        if reply_bits not in (16, 32):
            raise ValueError(f"reply bits must be 16 or 32, not {reply_bits}")
        if not str(upstream).startswith(("http://", "https://")):
            raise PlanError(f"the upstream must be an http:// or https:// URL, not {upstream!r}")
        if not (timeout > 0 and timeout < float("inf")):
            raise ValueError(f"the upstream timeout must be a finite number of seconds above 0, not {timeout!r}")
        self.relay = EdgeRelay(out_dir, ort_threads)
        self.plans = self.relay.plans
        self.url = str(upstream).rstrip("/")
        self.reply_bits, self.timeout = reply_bits, float(timeout)
        self.http = httpx.Client(timeout=self.timeout)
        self.ids = itertools.count(1)

    def describe(self) -> dict:
        """What ``GET /v1/plans`` returns: the device's plan, and where its requests go on."""
        entry, up = self.relay.entry, self.relay.upstream
        return {"adaptive": False, "breakpoints_Bps": [],
                "plans": [{"id": entry.id, "crc": f"{entry.crc:08x}", "interval_Bps": [0.0, None],
                           "kind": entry.plan.kind, "cut": [c.tensor for c in entry.plan.cut],
                           "bits": [c.bits for c in entry.plan.cut], "served": True}],
                "upstream": {"url": self.url, "plan": up.id, "crc": f"{up.crc:08x}",
                             "cut": [c.tensor for c in up.plan.cut]}}

    def infer(self, body: bytes) -> tuple[bytes, str, dict]:
        """Serve one device request: the response bytes, the plan id and the timings (ms)."""
        try:
            message = request.decode_request(body, max_length=len(body))
        except codec.CodecError as exc:
            raise Rejected(400, "bad_request", str(exc)) from exc
        entry = check_plan(self.plans, message)
        _check_records(entry, message.records)
        try:
            frames, returned, timing = self.relay.forward(_frames(message.records))
        except codec.CodecError as exc:
            raise Rejected(400, "bad_request", str(exc)) from exc
        up = self.relay.upstream
        rid = next(self.ids)
        t0 = time.perf_counter()
        reply = self._post(request.encode_request(up.id, frames, rid, up.crc))
        upstream_ms = (time.perf_counter() - t0) * 1e3
        records = self._cloud_records(reply, rid)
        t1 = time.perf_counter()
        own = [request.output_record(n, v, self.reply_bits) for n, v in returned.items()]
        timing = {"decode_ms": timing["decode_ms"], "cloud_ms": timing["edge_ms"] + upstream_ms,
                  "encode_ms": timing["encode_ms"] + (time.perf_counter() - t1) * 1e3}
        answer = request.Message(message.plan_id, [*own, *records], message.request_id, entry.crc, timing)
        return request.encode_response(answer), message.plan_id, timing

    def _post(self, body: bytes) -> bytes:
        try:
            response = self.http.post(self.url + "/v1/infer", content=body,
                                      headers={"Content-Type": "application/octet-stream"})
        except httpx.TimeoutException as exc:
            raise Rejected(504, "upstream_timeout", f"the upstream {self.url} did not answer within "
                                                   f"{self.timeout:g} s ({type(exc).__name__})") from exc
        except httpx.HTTPError as exc:
            raise Rejected(502, "upstream_unreachable", f"cannot reach the upstream {self.url}: "
                                                        f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 200:
            try:
                info = response.json()
            except ValueError:
                info = {"error": "http_error", "detail": response.text[:200]}
            what = "failed" if response.status_code >= 500 else "refused the relayed request"
            raise Rejected(502, "upstream_error", f"the upstream {self.url} {what} ({response.status_code} "
                                                  f"{info.get('error')}): {info.get('detail')}")
        return response.content

    def _cloud_records(self, reply: bytes, rid: int) -> list[request.Record]:
        """The cloud's output records, checked to answer this request (else 502)."""
        up = self.relay.upstream
        try:
            message = request.decode_response(reply, max_length=len(reply))
        except codec.CodecError as exc:
            raise Rejected(502, "upstream_error", f"the upstream {self.url} sent a reply that is not a response "
                                                  f"({type(exc).__name__}: {exc})") from exc
        if message.request_id != rid or message.plan_id != up.id:
            raise Rejected(502, "upstream_error", f"the upstream {self.url} answered request {message.request_id} "
                                                  f"of plan {message.plan_id!r}, not {rid} of {up.id!r}")
        return message.records

    def close(self) -> None:
        self.http.close()


def _check_records(entry: PlanEntry, records: list[request.Record]) -> None:
    cut = entry.plan.cut
    if len(records) != len(cut):
        raise Rejected(400, "bad_request", f"plan {entry.id!r} takes {len(cut)} cut tensors, "
                                           f"the request has {len(records)}")
    for record, spec in zip(records, cut):
        kind = request.KIND_ARRAY if is_array(spec) else request.KIND_FRAME
        if record.kind != kind or record.name not in ("", spec.tensor):
            what = "a frame" if kind == request.KIND_FRAME else "a plain array"
            raise Rejected(400, "bad_request", f"the record for {spec.tensor!r} must be {what} named '' or "
                                               f"{spec.tensor!r}")
        declared = request.frame_shape(record.data) if kind == request.KIND_FRAME else None
        if declared is not None and tuple(declared) != tuple(spec.shape):
            raise Rejected(400, "bad_request", f"the frame for {spec.tensor!r} has shape {list(declared)}, "
                                               f"the plan expects {list(spec.shape)}")


def service_for(out_dir: str | Path, upstream: str | None, ort_threads: int = 0, reply_bits: int = 32,
                upstream_timeout: float = DEFAULT_UPSTREAM_TIMEOUT):
    """The service ``splitc serve`` runs: a ``RelayService`` with an upstream, else a ``CloudService``."""
    if upstream is not None:
        if not is_relay_dir(out_dir):
            raise PlanError(f"{out_dir}: --upstream needs a relaying edge output (OUT/edge of a three-tier "
                            f"compile, with {RELAY})")
        return RelayService(out_dir, upstream, ort_threads, reply_bits, upstream_timeout)
    if is_relay_dir(out_dir):
        raise PlanError(f"{out_dir} is a relaying edge output: serve it with --upstream URL (the cloud server)")
    return CloudService(out_dir, ort_threads, reply_bits)


class TierPipeline:
    """The three parts of ``OUT`` in one process: device half, link-1 codec, edge half, link-2 codec, cloud half.

    Each link carries exactly what the servers exchange (request containers included); the cloud's outputs
    come back as a 32-bit reply.
    """

    def __init__(self, out_dir: str | Path, threads: int | None = None) -> None:
        out = Path(out_dir)
        self.device = Pipeline(out / "device", threads)
        has_cloud = (out / "cloud" / "plan.json").is_file()
        self.relay = EdgeRelay(out / "edge", threads or 0) if has_cloud else None
        self.upper = CloudService(out / ("cloud" if has_cloud else "edge"), threads or 0) \
            if self.device.cloud is not None else None
        self.output_names = self.device.output_names

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's outputs, in the original order."""
        at_device = self.device.run_edge(feeds)
        merged = dict(at_device)
        if self.upper is not None:
            frames, plan = self.device.codec.encode(at_device), self.upper.plans.entries[0]
            if self.relay is not None:
                frames, returned, _ = self.relay.forward(frames)
                merged.update(returned)
            reply, _, _ = self.upper.infer(request.encode_request(plan.id, frames, 1, plan.crc))
            merged.update({r.name: request.record_array(r) for r in request.decode_response(reply).records})
        return {name: merged[name] for name in self.output_names}
