"""The cloud side without HTTP: request bytes in, response bytes out.

``CloudService(out_dir)`` loads the cloud half of every plan in an output
directory with onnxruntime (one session per plan, shared by all threads:
``InferenceSession.run`` is thread-safe) and answers requests
(``splitc.wire.request``). A request it cannot serve raises ``Rejected``
with the HTTP status and a short error code; nothing a client sends makes it
allocate more than the plan's own tensor sizes.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import onnxruntime as ort

from splitc.wire import codec, request
from splitc.runtime.cut_codec import CutCodec, is_array
from splitc.runtime.plans import PlanEntry, PlanSet


class Rejected(Exception):
    """A request the server will not serve: ``status`` (4xx/5xx), ``code`` and a message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class ServedPlan:
    """A plan's cloud half, ready to run."""

    entry: PlanEntry
    session: ort.InferenceSession
    cut_codec: CutCodec
    output_names: list[str]
    cut_shapes: list[tuple[int, ...]]


# onnxruntime's intra-op threads spin while they wait for work; a process sharing its cores with others (a Ray
# replica beside the proxy and other replicas) sets this False so that idle threads yield the CPU.
ALLOW_SPINNING = True


def session_options(threads: int = 0) -> ort.SessionOptions:
    """onnxruntime session options with ``threads`` intra-op threads (0: onnxruntime's default)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if not ALLOW_SPINNING:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def open_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """An onnxruntime CPU session (``threads`` intra-op threads; 0: onnxruntime's default)."""
    return ort.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])


class CloudService:
    """Runs the cloud halves of all plans in ``out_dir``."""

    def __init__(self, out_dir: str | Path, ort_threads: int = 0, reply_bits: int = 32,
                 plan_ids: Iterable[str] | None = None) -> None:
        """``plan_ids``: load only these plans' cloud halves (None: every plan; the Ray engine runs one per
        deployment)."""
        if reply_bits not in (16, 32):
            raise ValueError(f"reply bits must be 16 or 32, not {reply_bits}")
        self.plans = PlanSet(out_dir)
        self.reply_bits = reply_bits
        wanted = None if plan_ids is None else set(plan_ids)
        self.served = {e.id: _serve(e, ort_threads) for e in self.plans.entries
                       if e.has_cloud and (wanted is None or e.id in wanted)}

    def describe(self) -> dict:
        """What ``GET /v1/plans`` returns."""
        return {
            "adaptive": self.plans.adaptive,
            "breakpoints_Bps": self.plans.breakpoints,
            "plans": [_describe(e, e.id in self.served) for e in self.plans.entries],
        }

    def infer(self, body: bytes) -> tuple[bytes, str, dict]:
        """Serve one request: the response bytes, the plan id and the server timings (ms)."""
        t0 = time.perf_counter()
        message, served, feeds = self.prepare(body)
        t1 = time.perf_counter()
        values = served.session.run(served.output_names, feeds)
        t2 = time.perf_counter()
        timing = {"decode_ms": (t1 - t0) * 1e3, "cloud_ms": (t2 - t1) * 1e3}
        return self.respond(message, served, values, timing), message.plan_id, timing

    def prepare(self, body: bytes) -> tuple[request.Message, ServedPlan, dict[str, np.ndarray]]:
        """Parse and check a request and decode its cut tensors: the message, its plan and the cloud half's feeds."""
        try:
            message = request.decode_request(body, max_length=len(body))
        except codec.CodecError as exc:
            raise Rejected(400, "bad_request", str(exc)) from exc
        served = self._plan_for(message)
        return message, served, self._decode(served, message)

    def respond(self, message: request.Message, served: ServedPlan, values: list[np.ndarray],
                timing: dict[str, float]) -> bytes:
        """The response to ``message`` holding the cloud half's outputs; adds ``encode_ms`` to ``timing``."""
        t2 = time.perf_counter()
        records = [request.output_record(n, v, self.reply_bits) for n, v in zip(served.output_names, values)]
        timing["encode_ms"] = (time.perf_counter() - t2) * 1e3
        reply = request.Message(message.plan_id, records, message.request_id, served.entry.crc, timing)
        return request.encode_response(reply)

    def _plan_for(self, message: request.Message) -> ServedPlan:
        entry = check_plan(self.plans, message)
        if entry.id not in self.served:
            raise Rejected(404, "unknown_plan", f"plan {entry.id!r} is not served here")
        return self.served[entry.id]

    def _decode(self, served: ServedPlan, message: request.Message) -> dict[str, np.ndarray]:
        entries = served.cut_codec.entries
        if len(message.records) != len(entries):
            raise Rejected(400, "bad_request", f"plan {served.entry.id!r} takes {len(entries)} cut tensors, "
                                               f"the request has {len(message.records)}")
        for record, entry, shape in zip(message.records, entries, served.cut_shapes):
            _check_record(record, entry.tensor, shape, request.KIND_ARRAY if is_array(entry) else
                          request.KIND_FRAME)
        try:
            return served.cut_codec.decode([r.data for r in message.records])
        except codec.CodecError as exc:
            raise Rejected(400, "bad_request", str(exc)) from exc


def check_plan(plans: PlanSet, message: request.Message) -> PlanEntry:
    """The plan a request names: 404 when there is none, 409 when its CRC differs, 400 when it is edge-only."""
    entry = plans.by_id.get(message.plan_id)
    if entry is None:
        raise Rejected(404, "unknown_plan", f"no plan {message.plan_id!r} here (see GET /v1/plans)")
    if message.plan_crc and message.plan_crc != entry.crc:
        raise Rejected(409, "plan_mismatch", f"plan {entry.id!r} differs from the client's (plan.json CRC "
                                             f"{message.plan_crc:08x}, the server has {entry.crc:08x})")
    if not entry.has_cloud:
        raise Rejected(400, "edge_only", f"plan {entry.id!r} runs on the edge only")
    return entry


def _check_record(record: request.Record, tensor: str, shape: tuple[int, ...],
                  kind: int = request.KIND_FRAME) -> None:
    """Reject a record before decoding unless it is of the plan's kind and (frames) declares the plan's shape."""
    if record.kind != kind or record.name not in ("", tensor):
        what = "a frame" if kind == request.KIND_FRAME else "a plain array"
        raise Rejected(400, "bad_request", f"the record for {tensor!r} must be {what} named '' or {tensor!r}")
    if kind != request.KIND_FRAME:
        return
    declared = request.frame_shape(record.data)
    if declared is not None and tuple(declared) != shape:
        raise Rejected(400, "bad_request", f"the frame for {tensor!r} has shape {list(declared)}, "
                                           f"the plan expects {list(shape)}")


def _serve(entry: PlanEntry, threads: int) -> ServedPlan:
    session = open_session(entry.dir / entry.plan.cloud.file, threads)
    names = [o.name for o in session.get_outputs()]
    shapes = [tuple(int(d) for d in c.shape) for c in entry.plan.cut]
    cut_codec = CutCodec(entry.plan, entry.dir)
    cut_codec.warm_up()
    return ServedPlan(entry, session, cut_codec, names, shapes)


def _describe(entry: PlanEntry, served: bool) -> dict:
    return {
        "id": entry.id,
        "crc": f"{entry.crc:08x}",
        "interval_Bps": [v if math.isfinite(v) else None for v in entry.interval],
        "kind": entry.plan.kind,
        "cut": [c.tensor for c in entry.plan.cut],
        "bits": [c.bits for c in entry.plan.cut],
        "served": served,
    }
