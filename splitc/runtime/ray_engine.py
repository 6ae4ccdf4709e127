"""``splitc serve OUT --engine ray``: the cloud halves on Ray Serve (replicas, dynamic batching, autoscaling).

The HTTP API is the uvicorn server's (``splitc.runtime.server.CloudApp``,
mounted as a Ray Serve ingress deployment); each plan with a cloud half is its
own deployment (``splitc.runtime.ray_deployments``), scaled on its own. This
module is the driver: it checks the options, connects to Ray (a local
instance, or ``--address`` to join a cluster), starts Serve's HTTP proxy on
``--host``/``--port``, deploys the application and waits, with a deadline,
until it runs or fails. Ray is imported only here and in
``ray_deployments`` (``pip install 'splitc[ray]'``).

    from splitc.runtime.ray_engine import RayOptions, deploy
    info = deploy("out/", RayOptions(replicas=2, batch_max=8))

Autoscaling (``--autoscale MIN..MAX``) uses Ray's ``autoscaling_config`` with
``target_ongoing_requests`` = the batch size when batching is on (a replica is
busy when a full batch waits), else 2 (one request running, one decoding or
queued), ``upscale_delay_s`` 5 and ``downscale_delay_s`` 60 (Ray's defaults,
30 and 600 s, react too slowly for bursts of edge traffic).
"""

from __future__ import annotations

import importlib
import os
import re
import signal
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

RAY_HINT = "pip install 'splitc[ray]'"
APP_NAME = "splitc"
DEFAULT_UPSCALE_DELAY_S = 5.0
DEFAULT_DOWNSCALE_DELAY_S = 60.0


class EngineError(Exception):
    """A user error of the Ray engine (bad option, unreachable cluster, a half that does not load): one line."""


@dataclass
class RayOptions:
    """How to run the deployments. ``replicas`` or ``autoscale`` (min, max); ``batch_max`` 1 is no batching."""

    replicas: int = 1
    autoscale: tuple[int, int] | None = None
    batch_max: int = 1
    batch_wait_ms: float = 5.0
    address: str | None = None
    ort_threads: int | None = None  # intra-op threads per replica (default: cores // max replicas)
    replica_cpus: float | None = None  # Ray num_cpus per replica (default: cluster CPUs / replicas, at most 1)
    target_ongoing_requests: float | None = None
    autoscaling: dict = field(default_factory=dict)  # overrides of autoscaling_config (tests: short delays)
    ingress_replicas: int = 1
    start_timeout_s: float = 300.0
    connect_timeout_s: float = 30.0

    def check(self) -> None:
        if self.replicas < 1:
            raise EngineError(f"--replicas must be at least 1, not {self.replicas}")
        if self.autoscale is not None:
            lo, hi = self.autoscale
            if lo < 1 or hi < lo:
                raise EngineError(f"--autoscale {lo}..{hi}: need 1 <= MIN <= MAX")
        if self.batch_max < 1:
            raise EngineError(f"--batch-max must be at least 1, not {self.batch_max}")
        if not 0 <= self.batch_wait_ms <= 10_000:
            raise EngineError(f"--batch-wait-ms must be within 0..10000, not {self.batch_wait_ms}")

    @property
    def max_replicas(self) -> int:
        return self.autoscale[1] if self.autoscale else self.replicas

    def target(self) -> float:
        if self.target_ongoing_requests:
            return float(self.target_ongoing_requests)
        return float(self.batch_max) if self.batch_max > 1 else 2.0


def parse_autoscale(text: str) -> tuple[int, int]:
    """``1..4`` → (1, 4)."""
    match = re.fullmatch(r"\s*(\d+)\s*\.\.\s*(\d+)\s*", text or "")
    if not match:
        raise EngineError(f"--autoscale {text!r}: expected MIN..MAX, e.g. 1..4")
    return int(match.group(1)), int(match.group(2))


def require_ray():
    """Ray Serve's module, or EngineError with the install command."""
    try:
        importlib.import_module("ray")
        return importlib.import_module("ray.serve")
    except ImportError:
        raise EngineError(f"--engine ray needs Ray Serve: {RAY_HINT}") from None


def connect(address: str | None, timeout_s: float = 30.0) -> bool:
    """Connect to Ray: ``address`` (a cluster), else a running ``ray.init`` of this process, else a new
    local instance without the dashboard. True when this call started Ray here. An address that does not
    accept connections fails within ``timeout_s`` (at most 5 s)."""
    import ray

    if address:
        check_address(address, timeout_s)
    if ray.is_initialized():
        return False
    started = not address
    where = f"the Ray cluster at {address}" if address else "a local Ray instance"
    try:  # in the main thread (Ray's init hangs elsewhere); an unreachable address failed the check above
        if address:
            ray.init(address=address, log_to_driver=False, logging_level="WARNING")
        else:
            ray.init(include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    except Exception as exc:
        raise EngineError(f"cannot connect to {where}: {_first_line(exc)}") from None
    return started


def check_address(address: str, timeout_s: float) -> None:
    """Fail fast (one line) when a HOST:PORT address does not accept TCP connections ('auto' is Ray's)."""
    if address == "auto" or address.startswith("local"):
        return
    target = re.sub(r"^[a-z]+://", "", address).split("/")[0]
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise EngineError(f"--address {address!r}: expected HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=min(5.0, timeout_s)):
            pass
    except OSError as exc:
        raise EngineError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}") from None


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:400] if lines else type(exc).__name__


def start_http(host: str, port: int, tls_cert: str | None = None, tls_key: str | None = None) -> None:
    """Start Serve with its HTTP proxy on ``host:port`` (Serve already running on the cluster keeps its own)."""
    serve = require_ray()
    if bool(tls_cert) != bool(tls_key):
        raise EngineError("TLS needs both a certificate and a key")
    options = {"host": host, "port": port, "keep_alive_timeout_s": 30}
    if tls_cert:
        options.update(ssl_certfile=tls_cert, ssl_keyfile=tls_key)
    serve.start(http_options=options)


def build(out_dir: str | Path, options: RayOptions, token: str | None = None, max_body: int = 64 * 1024 * 1024,
          reply_bits: int = 32):
    """The Serve application (ingress bound to one deployment per plan) and a description of it."""
    import ray

    from splitc.runtime import ray_deployments as rd
    from splitc.runtime.plans import PlanSet

    options.check()
    out_dir = str(Path(out_dir).resolve())
    plans = PlanSet(out_dir)
    cloud = [e for e in plans.entries if e.has_cloud]
    if not cloud:
        raise EngineError(f"{out_dir}: no plan has a cloud half (every plan runs on the edge only)")
    cores = os.cpu_count() or 1
    threads = options.ort_threads or max(1, cores // options.max_replicas)
    cpus = options.replica_cpus
    if cpus is None:
        total = float(ray.cluster_resources().get("CPU", cores))
        cpus = round(min(1.0, max(0.01, total / (len(cloud) * options.max_replicas + 0.5))), 2)
    settings = {"ort_threads": threads, "reply_bits": reply_bits, "batch_max": options.batch_max,
                "batch_wait_ms": options.batch_wait_ms}
    scaling = {"num_replicas": options.replicas}
    if options.autoscale:
        lo, hi = options.autoscale
        scaling = {"autoscaling_config": {
            "min_replicas": lo, "max_replicas": hi, "initial_replicas": lo,
            "target_ongoing_requests": options.target(),
            "upscale_delay_s": DEFAULT_UPSCALE_DELAY_S, "downscale_delay_s": DEFAULT_DOWNSCALE_DELAY_S,
            **options.autoscaling}}
    max_ongoing = int(max(64, 4 * options.batch_max, 2 * options.target()))  # queue at the replica, not the router
    handles = {}
    for entry in cloud:
        handles[entry.id] = rd.PlanReplica.options(
            name=f"plan-{entry.id}", ray_actor_options={"num_cpus": cpus}, max_ongoing_requests=max_ongoing,
            max_constructor_retry_count=1, health_check_period_s=2.0, health_check_timeout_s=30.0,
            graceful_shutdown_timeout_s=5.0, **scaling,
        ).bind(out_dir, entry.id, settings)
    engine = {"name": "ray", "replicas": None if options.autoscale else options.replicas,
              "autoscale": list(options.autoscale) if options.autoscale else None,
              "target_ongoing_requests": options.target() if options.autoscale else None,
              "replica_num_cpus": cpus, "ort_threads": threads}
    ingress = rd.Ingress.options(
        name="splitc-ingress", num_replicas=options.ingress_replicas, ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=max(256, 4 * max_ongoing), max_constructor_retry_count=1,
    ).bind(out_dir, handles, token, max_body, engine)
    return ingress, {"out": out_dir, "plans": [e.id for e in cloud], **engine}


def deploy(out_dir: str | Path, options: RayOptions, token: str | None = None, max_body: int = 64 * 1024 * 1024,
           reply_bits: int = 32, app_name: str = APP_NAME, route_prefix: str = "/") -> dict:
    """Deploy ``out_dir`` on the connected cluster and wait (``options.start_timeout_s``) until it runs.

    A replica that cannot load its half fails the deployment at once (no restart loop): the application is
    deleted and ``EngineError`` names the file.
    """
    serve = require_ray()
    from ray.serve.api import RunTarget, run_many
    from ray.serve.schema import ApplicationStatus

    app, info = build(out_dir, options, token, max_body, reply_bits)
    run_many([RunTarget(target=app, name=app_name, route_prefix=route_prefix)],
             wait_for_ingress_deployment_creation=False, wait_for_applications_running=False)
    deadline = time.monotonic() + options.start_timeout_s
    while True:
        status = serve.status().applications.get(app_name)
        state = status.status if status else None
        if state == ApplicationStatus.RUNNING:
            return {**info, "app": app_name}
        if state in (ApplicationStatus.DEPLOY_FAILED, ApplicationStatus.UNHEALTHY):
            message = _failure(status)
            _delete(serve, app_name)
            raise EngineError(message)
        if time.monotonic() > deadline:
            _delete(serve, app_name)
            raise EngineError(f"the Ray deployment of {info['out']} did not start within "
                              f"{options.start_timeout_s:.0f} s (not enough CPUs for the replicas?)")
        time.sleep(0.2)


def _failure(status) -> str:
    """One line out of Serve's failure report: the replica's own error when it is there."""
    from splitc.runtime.ray_deployments import LOAD_FAILED

    texts = [status.message or ""] + [d.message or "" for d in status.deployments.values()]
    for text in texts:
        for line in text.splitlines():
            if LOAD_FAILED in line:
                return line[line.index("HalfLoadError:") + 15:].strip() if "HalfLoadError:" in line else line.strip()
    for text in texts:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return f"the Ray deployment failed: {lines[-1][:400]}"
    return "the Ray deployment failed"


def _delete(serve, app_name: str) -> None:
    try:
        serve.delete(app_name)
    except Exception:  # already gone, or Serve is shutting down
        pass


def serve_ray(out_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
              tls_cert: str | None = None, tls_key: str | None = None, max_body: int = 64 * 1024 * 1024,
              reply_bits: int = 32, options: RayOptions | None = None, announce=print) -> None:
    """``splitc serve --engine ray``: deploy, then block until SIGINT/SIGTERM; clean up what it started."""
    options = options or RayOptions()
    options.check()
    serve = require_ray()
    started = connect(options.address, options.connect_timeout_s)
    import ray

    def stop(signum, frame) -> None:  # replaces Ray's own handlers: leave through the finally below
        raise _Stopped()

    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        for sig in previous:
            signal.signal(sig, stop)
        start_http(host, port, tls_cert, tls_key)
        info = deploy(out_dir, options, token, max_body, reply_bits)
        scale = (f"autoscaling {info['autoscale'][0]}..{info['autoscale'][1]} replicas "
                 f"(target {info['target_ongoing_requests']:g} ongoing requests)" if info["autoscale"]
                 else f"{info['replicas']} replica(s)")
        batching = f"batches of up to {options.batch_max} ({options.batch_wait_ms:g} ms wait)" \
            if options.batch_max > 1 else "no batching"
        announce(f"ray engine: {len(info['plans'])} plan deployment(s), {scale} each, {batching}, "
                 f"{info['ort_threads']} onnxruntime thread(s) per replica")
        while True:
            time.sleep(3600)
    except _Stopped:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)  # a second signal must not cut the clean-up short
        try:
            if started:  # the local instance goes, and everything on it
                ray.shutdown()
            else:  # a cluster we joined keeps running; only our application leaves it
                _delete(serve, APP_NAME)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


class _Stopped(Exception):
    """SIGINT or SIGTERM while serving."""


def app_from_env(args: dict | None = None):
    """A Serve application builder for config files and KubeRay (``import_path:
    splitc.runtime.ray_engine:app_from_env``). Options from ``args`` or the environment: ``SPLITC_OUT``
    (required), ``SPLITC_REPLICAS``, ``SPLITC_AUTOSCALE`` (MIN..MAX), ``SPLITC_BATCH_MAX``,
    ``SPLITC_BATCH_WAIT_MS``, ``SPLITC_TOKEN_FILE``, ``SPLITC_MAX_BODY`` (bytes), ``SPLITC_REPLY_BITS``."""
    values = {**{k[len("SPLITC_"):].lower(): v for k, v in os.environ.items() if k.startswith("SPLITC_")},
              **{k.lower(): str(v) for k, v in (args or {}).items()}}
    if not values.get("out"):
        raise EngineError("SPLITC_OUT (or the 'out' argument) must name the splitc output directory")
    options = RayOptions(replicas=int(values.get("replicas", 1)),
                         autoscale=parse_autoscale(values["autoscale"]) if values.get("autoscale") else None,
                         batch_max=int(values.get("batch_max", 1)),
                         batch_wait_ms=float(values.get("batch_wait_ms", 5.0)))
    token = Path(values["token_file"]).read_text().strip() if values.get("token_file") else None
    app, _ = build(values["out"], options, token or None, int(values.get("max_body", 64 * 1024 * 1024)),
                   int(values.get("reply_bits", 32)))
    return app
