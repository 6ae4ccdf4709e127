"""The Ray Serve deployments of ``splitc serve --engine ray`` (imports Ray; see ``ray_engine`` for the driver).

* ``PlanReplica``: one deployment per plan with a cloud half. A replica loads
  that half with ``CloudService`` (the same decoding, checks and encoding as
  the uvicorn server) and answers request bodies. With batching on, concurrent
  requests are gathered by ``@serve.batch`` and run as one onnxruntime call
  (``splitc.runtime.batching``).
* ``Ingress``: the HTTP layer, ``CloudApp`` (the uvicorn server's Starlette app:
  routes, token, body limits, /healthz, /metrics) mounted with
  ``@serve.ingress``, whose ``answer`` forwards each body to its plan's
  deployment and retries on another replica when one dies.

Replies between them are tuples, never exceptions: ``("ok", reply, timing,
batch_size)``, ``("rejected", status, code, message)`` or ``("error", text)``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor

import ray
from prometheus_client import Histogram
from ray import serve
from ray.exceptions import RayActorError

from splitc.runtime import cloud_service
from splitc.wire import codec, request
from splitc.runtime.batching import stack_half
from splitc.runtime.cloud_service import CloudService, Rejected, check_plan
from splitc.runtime.pipeline import PlanError
from splitc.runtime.server import CloudApp

log = logging.getLogger("splitc.ray")
LOAD_FAILED = "cannot load the cloud half"
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
RETRIES = 3  # attempts per request when a replica dies under it


class HalfLoadError(RuntimeError):
    """A replica could not load its plan's cloud half; the message names the file."""


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:400] if lines else type(exc).__name__


@serve.deployment(name="splitc-plan")
class PlanReplica:
    """The cloud half of one plan."""

    def __init__(self, out_dir: str, plan_id: str, settings: dict) -> None:
        self.plan_id = plan_id
        self.settings = settings
        threads = int(settings["ort_threads"])
        cloud_service.ALLOW_SPINNING = False  # this process shares the cores with the proxy and other replicas
        try:
            self.service = CloudService(out_dir, threads, settings["reply_bits"], plan_ids=[plan_id])
        except PlanError as exc:
            raise HalfLoadError(f"{LOAD_FAILED} of plan {plan_id!r}: {_first_line(exc)}") from None
        except Exception as exc:  # onnxruntime: missing file, corrupt protobuf, unknown op ...
            raise HalfLoadError(f"{LOAD_FAILED} of plan {plan_id!r}: {type(exc).__name__}: "
                                f"{_first_line(exc)}") from None
        self.served = self.service.served[plan_id]
        self.path = self.served.entry.dir / self.served.entry.plan.cloud.file
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="splitc-half")  # its onnxruntime threads use the cores
        self.stacked, reason = None, "off (--batch-max 1): one call per request"
        batch_max = int(settings["batch_max"])
        if batch_max > 1:
            self.stacked, reason = stack_half(self.path, self.served.session, threads)
            if self.stacked is None:
                reason = f"one call per request: {reason}"
                log.warning("plan %s: %s", plan_id, reason)
            else:
                self.infer_batch.set_max_batch_size(batch_max)
                self.infer_batch.set_batch_wait_timeout_s(float(settings["batch_wait_ms"]) / 1e3)
        self.info = {
            "mode": "stacked" if self.stacked is not None else "per-request",
            "max": batch_max if self.stacked is not None else 1,
            "wait_ms": float(settings["batch_wait_ms"]) if self.stacked is not None else 0.0,
            "detail": reason,
            "ort_threads": threads,
        }

    async def __call__(self, body: bytes) -> tuple:
        if self.stacked is not None:
            return await self.infer_batch(body)
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._one, body)

    @serve.batch(max_batch_size=2, batch_wait_timeout_s=0.005)
    async def infer_batch(self, bodies: list[bytes]) -> list[tuple]:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._many, bodies)

    def describe(self) -> dict:
        """Batching mode of this plan, and who answered (actor name, pid: the tests kill replicas)."""
        return {**self.info, "actor": ray.get_runtime_context().get_actor_name(), "pid": os.getpid()}

    def _one(self, body: bytes) -> tuple:
        try:
            reply, _, timing = self.service.infer(body)
        except Rejected as exc:
            return ("rejected", exc.status, exc.code, str(exc))
        except Exception as exc:
            log.exception("inference failed")
            return ("error", f"{type(exc).__name__}: {exc}")
        return ("ok", reply, timing, 1)

    def _many(self, bodies: list[bytes]) -> list[tuple]:
        results: list[tuple | None] = [None] * len(bodies)
        ready = []
        for i, body in enumerate(bodies):
            t0 = time.perf_counter()
            try:
                message, served, feeds = self.service.prepare(body)
            except Rejected as exc:
                results[i] = ("rejected", exc.status, exc.code, str(exc))
                continue
            except Exception as exc:
                results[i] = ("error", f"{type(exc).__name__}: {exc}")
                continue
            ready.append((i, message, served, feeds, (time.perf_counter() - t0) * 1e3))
        if not ready:
            return results
        t1 = time.perf_counter()
        try:
            if len(ready) == 1:  # alone: the original half, exactly the uvicorn server's answer
                _, _, served, feeds, _ = ready[0]
                outputs = [served.session.run(served.output_names, feeds)]
            else:
                outputs = self.stacked.run([r[3] for r in ready])
        except Exception as exc:
            log.exception("batched inference failed")
            for i, *_ in ready:
                results[i] = ("error", f"{type(exc).__name__}: {exc}")
            return results
        cloud_ms = (time.perf_counter() - t1) * 1e3
        for (i, message, served, _, decode_ms), values in zip(ready, outputs):
            timing = {"decode_ms": decode_ms, "cloud_ms": cloud_ms}
            try:
                results[i] = ("ok", self.service.respond(message, served, values, timing), timing, len(ready))
            except Exception as exc:
                results[i] = ("error", f"{type(exc).__name__}: {exc}")
        return results


class RayCloudApp(CloudApp):
    """``CloudApp`` whose inference calls the plan deployments."""

    def __init__(self, service: CloudService, handles: dict, token: str | None, max_body: int,
                 engine: dict) -> None:
        super().__init__(service, token, max_body, threads=1)
        self.handles = handles
        self.engine = engine
        self.batch_info: dict[str, dict] = {}
        self.batch_size = Histogram("splitc_batch_size", "Requests per onnxruntime call (Ray engine)", ["plan"],
                                    buckets=BATCH_BUCKETS, registry=self.metrics.registry)

    async def answer(self, body: bytes) -> tuple[bytes, str, dict]:
        try:
            message = request.decode_request(body, max_length=len(body))
        except codec.CodecError as exc:
            raise Rejected(400, "bad_request", str(exc)) from exc
        entry = check_plan(self.service.plans, message)
        handle = self.handles[entry.id]
        for attempt in range(RETRIES):
            try:
                result = await handle.remote(body)
                break
            except RayActorError as exc:  # the replica died (killed, OOM, node lost): another one answers
                if attempt + 1 == RETRIES:
                    raise Rejected(503, "unavailable", f"plan {entry.id!r}: {_first_line(exc)}") from exc
                log.warning("plan %s: a replica died (%s); retrying", entry.id, type(exc).__name__)
                await asyncio.sleep(0.05 * 2**attempt)
        kind = result[0]
        if kind == "rejected":
            raise Rejected(*result[1:])
        if kind == "error":
            raise RuntimeError(result[1])
        _, reply, timing, batch = result
        self.batch_size.labels(entry.id).observe(batch)
        return reply, entry.id, timing

    async def plans(self, request_):
        from starlette.responses import JSONResponse

        if not self.authorised(request_):
            from splitc.runtime.server import _error

            return _error(401, "unauthorised", "missing or wrong bearer token")
        described = self.service.describe()
        for plan in described["plans"]:
            handle = self.handles.get(plan["id"])
            plan["served"] = handle is not None
            if handle is not None:
                if plan["id"] not in self.batch_info:
                    info = await handle.describe.remote()
                    self.batch_info[plan["id"]] = {k: info[k] for k in ("mode", "max", "wait_ms", "detail",
                                                                         "ort_threads")}
                plan["batching"] = self.batch_info[plan["id"]]
        described["engine"] = self.engine
        return JSONResponse(described)


@serve.deployment(name="splitc-ingress")
@serve.ingress()
class Ingress:
    """The HTTP entry point: the uvicorn server's routes, forwarding to one deployment per plan."""

    def __init__(self, out_dir: str, handles: dict, token: str | None, max_body: int, engine: dict) -> None:
        self.cloud_app = RayCloudApp(CloudService(out_dir, plan_ids=()), handles, token, max_body, engine)

    def __serve_build_asgi_app__(self):
        return self.cloud_app.asgi()
