"""Benchmark: a many-device schedule run for real on loopback, predicted vs measured task delays.

A scenario of 8 devices, 2 edge servers (2 slots each) and one cloud is scheduled by splitc's scheduler
(``splitc.schedule``, policy ``splitc`` online by default); the schedule is then executed with real
processes: ``splitc serve`` cloud and edge servers (relaying edges ``--upstream`` to the cloud), user-space
netem links (``splitc.runtime.netem``), and one Python process per device that waits for its task's
scheduled start and runs its N_i inferences through ``EdgeClient`` (or locally, device-only). Each task's
measured delay (finish - arrival) is compared with the schedule's prediction.

Every tier is priced with this machine's own cost model (target ``host``, 1 onnxruntime thread per
process), except that the device is an emulated device ``--slowdown`` times slower than the host: the
scheduler prices device nodes at ``slowdown`` x the host cost, and a device process, after its own compute,
sleeps ``slowdown - 1`` times the compute it just measured. (With every tier priced alike nothing is worth
offloading and every task would run device-only.) How the modes map onto artifacts and processes:

* ``device`` - no artifact, no server: the device process runs the whole model with onnxruntime.
* ``edge`` - a three-tier compile whose cloud is empty (forced cuts: the scheduler's link-1 tensors, nothing
  over link 2): ``OUT/device`` on the device, ``OUT/edge`` (a plain plan) on a ``splitc serve`` process of
  edge server j, no cloud process.
* ``cloud`` - forced cuts (link-1 tensors = link-2 tensors): ``OUT/edge`` is a pure relay (no edge nodes)
  served by ``splitc serve OUT/edge --upstream`` on edge server j, ``OUT/cloud`` by the cloud server.
* ``full`` - the scheduler's three-tier cut: device half, relaying edge half, cloud half.

A relaying ``splitc serve`` serves one plan, so an edge server is one ``splitc serve`` process per artifact
it serves (each takes requests on ``slots`` threads); the cloud is one process
per cloud plan. Links: each device has its own device-edge netem proxy at the uplink b1 the schedule gave
its task (and the scenario's RTT); each relaying process reaches the cloud through its own edge-cloud proxy
at the edge's backbone B_e^2 (the scenario makes B_i^2 = B_e^2, so the schedule gives a cloud task the whole
backbone and never runs two on one edge at once: the proxy's rate is exactly the task's b2).

Writes bench/results/schedule_real.md and schedule_real.json.

    python bench/schedule_real.py [--quick] [--repeat 3] [--policy splitc|deepar|ilp] [--slowdown 5]
                                  [--plan-only] [--keep DIR]

A full run (3 rounds) takes about a minute, ``--quick`` (half the samples, arrivals compressed, 1 round)
about 20 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
INPUT = "image"
SIZE = 128
WIDTHS = (8, 96, 192, 384)  # stem channels, then three stages of two 3x3 convolutions
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
READY_TIMEOUT_S = 150.0  # servers healthy, device processes loaded and warmed up
REQUEST_TIMEOUT_S = 10.0


# ---------------------------------------------------------------------------------------------- model
def build_model(path: Path) -> Path:
    """A seeded-weight CNN whose stem shrinks the 3x128x128 image to 8x32x32 (32 KB): the stem is worth
    running on the device before the uplink, the convolutions after it on a faster tier."""
    import onnx

    from splitc.testing import zoo

    b = zoo._Builder(seed=11)
    x = b.input(INPUT, [1, 3, SIZE, SIZE])
    x = b.maxpool(b.conv_relu(x, 3, WIDTHS[0], 3, "stem"), "stem/pool", k=4, stride=4)
    cin = WIDTHS[0]
    for stage, width in enumerate(WIDTHS[1:], 1):
        x = b.conv_relu(x, cin, width, 3, f"stage{stage}a")
        x = b.conv_relu(x, width, width, 3, f"stage{stage}b")
        cin = width
        if stage < len(WIDTHS) - 1:
            x = b.maxpool(x, f"stage{stage}/pool")
    b.output(b.head(x, cin, 10), [1, 10])
    onnx.save(b.model("patchnet"), path)
    return path


class Slowed:
    """A cost model ``factor`` times slower than ``base`` (the emulated device)."""

    def __init__(self, base, factor: float) -> None:
        self.base, self.factor = base, float(factor)
        self.name = f"{base.name}x{factor:g}"

    def node_ms(self, node) -> float:
        return self.factor * self.base.node_ms(node)

    def describe(self) -> dict:
        return {"kind": "scaled", "factor": self.factor, "base": self.base.describe()}


# ------------------------------------------------------------------------------------------- scenario
def scenario_data(model: Path, quick: bool) -> dict:
    """8 devices in two bursts 10 s apart (time and samples halved with --quick), 2 edge servers of 2 slots."""
    #          arrival_s, samples, reachable edges
    devices = [(0.5, 40, ["edge0"]), (0.6, 40, ["edge0"]), (0.7, 30, ["edge0"]), (0.8, 60, ["edge0"]),
               (0.9, 20, ["edge0"]), (10.0, 40, ["edge1"]), (10.1, 40, ["edge1"]), (10.2, 30, ["edge1"])]
    scale, per = (0.5, 0.5) if quick else (1.0, 1.0)
    return {"cloud": {"target": "host"},
            "links": {"device_edge_rtt_ms": 2.0, "edge_cloud_rtt_ms": 6.0},
            "edges": [{"name": f"edge{k}", "target": "host", "slots": 2, "uplink_mbps": 90.0,
                       "backbone_mbps": 100.0} for k in range(2)],
            "devices": [{"name": f"dev{i}", "model": str(model), "target": "host", "edges": reach,
                         "samples": max(4, round(n * per)), "arrival_s": round(t * scale, 3),
                         "max_uplink_mbps": 30.0, "max_backbone_mbps": 100.0}
                        for i, (t, n, reach) in enumerate(devices)]}


def emulated(scenario, slowdown: float):
    """``scenario`` with every device ``slowdown`` times slower than its target's cost model."""
    from splitc.partition.tier_problem import TierProblem
    from splitc.schedule.scenario import Scenario

    @dataclass
    class SlowDevices(Scenario):
        slowdown: float = 1.0

        def problem(self, i: int, edge: int | None) -> TierProblem:
            base = super().problem(i, edge)
            key = ("slowed", id(base), self.slowdown)
            if key not in self._cache:
                node_ms = base.node_ms.copy()
                node_ms[0] *= self.slowdown
                self._cache[key] = (TierProblem(**{**base.__dict__, "node_ms": node_ms}), base)
            return self._cache[key][0]

    return SlowDevices(**{f.name: getattr(scenario, f.name) for f in fields(Scenario)}, slowdown=slowdown)


def _rates(p) -> tuple[float, float]:
    """The bandwidths the scheduler priced the placement at (an unused link: unlimited)."""
    from splitc.schedule.scenario import USES

    return (p.b1 if USES[p.mode][1] else math.inf), (p.b2 if USES[p.mode][2] else math.inf)


def plan_task(scn, p) -> dict:
    """The per-sample assignment, cuts and predicted time of one placement."""
    from splitc.partition.tiers import evaluate_tiers

    b1, b2 = _rates(p)
    ms, tier = scn.sample_plan(p.task, p.mode, p.edge, b1, b2)
    if p.tier is not None:  # DeePar's policy runs the partition it ranked at the full bandwidths
        tier = p.tier
        ms = scn.priced(p.task, p.edge, tier, b1, b2)
    problem = scn.problem(p.task, p.edge)
    priced = evaluate_tiers(problem.with_links(scn.links(min(b1, 1e18), min(b2, 1e18))), tier)
    names = problem.value_names
    cuts = [[names[v] for v in up] for up in priced.up_values]
    return {"tier": np.asarray(tier), "cuts": cuts, "sample_ms": float(ms),
            "compute_ms": [float(c) for c in priced.compute_ms],
            "transfer_ms": [float(t) for t in priced.transfer_ms],
            "up_bytes": [int(b) for b in priced.up_bytes]}


# ------------------------------------------------------------------------------------------ artifacts
def compile_artifact(model: Path, scn, p, plan: dict, slowdown: float, out: Path) -> dict:
    """Compile the three-tier artifacts that send exactly the scheduler's cuts (raw float32 on the wire)."""
    from splitc.cost.resolve import cost_model_for
    from splitc.tiered import compile_tiers

    host = cost_model_for("host")
    d = scn.devices[p.task]
    b1 = p.b1 if p.b1 > 0 else d.max_uplink
    b2 = p.b2 if p.b2 > 0 else d.max_backbone
    split = compile_tiers(str(model), tiers=(Slowed(host, slowdown), host, host),
                          links=((b1, scn.rtt_device_edge_ms), (b2, scn.rtt_edge_cloud_ms)), bits=32,
                          cuts=(plan["cuts"][0], plan["cuts"][1]))
    split.save(out)
    same = bool(np.array_equal(split.tier, plan["tier"]))
    return {"name": out.name, "dir": str(out), "counts": [int(c) for c in np.bincount(split.tier, minlength=3)],
            "same_assignment": same, "cuts": plan["cuts"], "relay": (out / "edge" / "relay.json").is_file(),
            "cloud": (out / "cloud").is_dir()}


# ------------------------------------------------------------------------------------------ processes
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Links:
    """Every netem proxy on one event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.proxies = []

    def add(self, port: int, rate: float, rtt_ms: float) -> int:
        from splitc.runtime.netem import Netem

        netem = Netem(("127.0.0.1", port), rate=rate, rtt_ms=rtt_ms)
        asyncio.run_coroutine_threadsafe(netem.start(), self.loop).result(10)
        self.proxies.append(netem)
        return netem.port

    def close(self) -> None:
        for netem in self.proxies:
            with contextlib.suppress(Exception):  # best effort at shutdown
                asyncio.run_coroutine_threadsafe(netem.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Processes:
    """Subprocesses started here, each in its own session; all of them are ended by ``close``."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, args: list[str]) -> subprocess.Popen:
        env = {**os.environ, **THREAD_ENV, "PYTHONPATH": str(ROOT)}
        with open(self.logs / f"{name}.log", "w") as log:
            proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT,
                                    start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def close(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for _, proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(5)


def serve(procs: Processes, name: str, directory: str, port: int, threads: int, upstream: str | None = None):
    args = [sys.executable, "-m", "splitc.cli", "serve", directory, "--port", str(port), "--threads", str(threads)]
    if upstream:
        args += ["--upstream", upstream, "--upstream-timeout", str(REQUEST_TIMEOUT_S)]
    return procs.start(name, args)


def wait_healthy(procs: Processes, ports: dict[str, int], deadline: float) -> None:
    import httpx

    pending = dict(ports)
    while pending:
        for name, port in list(pending.items()):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                    del pending[name]
            except httpx.HTTPError:
                pass
        dead = [n for n, p in procs.procs if p.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead[0]} exited early (see its log in {procs.logs})")
        if pending and time.time() > deadline:
            raise RuntimeError(f"not healthy in time: {', '.join(pending)}")
        time.sleep(0.2)


# --------------------------------------------------------------------------------------- device process
def make_infer(spec: dict):
    """``(infer, close)`` for one device: ``infer(x)`` runs a sample in the task's mode and returns its timing."""
    slow = spec["slowdown"] - 1.0
    if spec["mode"] == "device":
        from splitc.runtime.cloud_service import open_session

        session = open_session(Path(spec["model"]), 1)

        def infer(x):
            t = time.perf_counter()
            session.run(None, {INPUT: x})
            device_ms = (time.perf_counter() - t) * 1e3
            time.sleep(slow * device_ms / 1e3)  # the emulated device's compute, stretched
            return {"device_ms": device_ms}
        return infer, lambda: None
    from splitc.runtime import EdgeClient

    client = EdgeClient(spec["device_dir"], spec["url"], timeout=REQUEST_TIMEOUT_S, retries=1, threads=1)

    def infer(x):
        r = client.infer({INPUT: x})
        time.sleep(slow * r.edge_ms / 1e3)
        server = sum(v for v in r.server.values() if np.isfinite(v) and v >= 0)  # decode + half + encode
        return {"device_ms": r.edge_ms, "network_ms": r.network_ms, "server_ms": server, "half_ms": r.cloud_ms,
                "encode_ms": r.encode_ms, "decode_ms": r.decode_ms, "bytes_up": r.bytes_up, "fallback": r.fallback}
    return infer, client.close


def images_for(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((4, 1, 3, SIZE, SIZE), dtype=np.float32)


def solo(spec: dict, samples: int) -> float:
    """Mean ms per sample of one device running alone (after 2 warm-up samples), in this process."""
    infer, close = make_infer(spec)
    images = images_for(0)
    try:
        for k in range(2):
            infer(images[k])
        t = time.perf_counter()
        for k in range(samples):
            infer(images[k % len(images)])
        return (time.perf_counter() - t) * 1e3 / samples
    finally:
        close()


def worker(spec_path: str) -> None:
    """One device: load, warm up, wait for the start signal and the scheduled start, run N samples."""
    spec = json.loads(Path(spec_path).read_text())
    images = images_for(spec["seed"])
    infer, close = make_infer(spec)
    for k in range(2):
        infer(images[k])  # warm-up: sessions, HTTP connections, the servers' sessions
    Path(spec["ready"]).write_text("ready")
    for round_ in range(spec["rounds"]):
        go, give_up = Path(f"{spec['go']}{round_}.json"), time.time() + 2 * READY_TIMEOUT_S
        while not go.is_file():
            if time.time() > give_up:  # the benchmark went away
                close()
                return
            time.sleep(0.01)
        t0 = json.loads(go.read_text())["t0"]
        time.sleep(max(0.0, t0 + spec["start_s"] - time.time()))
        samples, error = [], None
        began = time.time() - t0
        try:
            for k in range(spec["samples"]):
                a = time.time() - t0
                info = infer(images[k % len(images)])
                samples.append({"start_s": a, "end_s": time.time() - t0, **info})
        except Exception as exc:  # noqa: BLE001 - recorded in the results
            error = f"{type(exc).__name__}: {exc}"
        end = time.time() - t0
        Path(f"{spec['result']}{round_}.json").write_text(json.dumps(
            {"began_s": began, "end_s": end, "error": error, "samples": samples}))
    close()


# ---------------------------------------------------------------------------------------- measurement
def compute_check(model: Path, runs: int = 30) -> dict:
    """The model alone, 1 thread, in this process: measured median vs the host cost model."""
    import onnx

    from splitc.partition.tier_problem import TierProblem
    from splitc.runtime.cloud_service import open_session
    from splitc.schedule.models import graph_of

    session = open_session(model, 1)
    x = np.random.default_rng(0).random((1, 3, SIZE, SIZE), dtype=np.float32)
    for _ in range(5):
        session.run(None, {INPUT: x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, {INPUT: x})
        times.append((time.perf_counter() - t) * 1e3)
    problem = TierProblem.from_graph(graph_of(onnx.load(model)), ["host"], [])
    return {"predicted_ms": float(problem.node_ms[0].sum()), "median_ms": float(np.median(times)),
            "p10_ms": float(np.percentile(times, 10)), "p90_ms": float(np.percentile(times, 90)), "runs": runs}


def _mean(samples: list[dict], key: str) -> float | None:
    return float(np.mean([x[key] for x in samples])) if samples and key in samples[0] else None


def run(args) -> dict:
    from splitc.schedule.policies import check_feasible, run_policy
    from splitc.schedule.scenario import parse_scenario

    wall0 = time.time()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="splitc-schedule-real-"))
    for sub in ("artifacts", "logs", "tasks"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    model = build_model(work / "patchnet.onnx")
    load_before = os.getloadavg()
    compute = compute_check(model)
    print(f"model alone: predicted {compute['predicted_ms']:.2f} ms, measured median {compute['median_ms']:.2f} ms "
          f"(p10 {compute['p10_ms']:.2f}, p90 {compute['p90_ms']:.2f})", flush=True)

    data = scenario_data(model, args.quick)
    scn = emulated(parse_scenario(data), args.slowdown)
    schedule = run_policy(scn, args.policy)
    check_feasible(scn, schedule.placements)
    plans = {p.task: plan_task(scn, p) for p in schedule.placements}
    for p in schedule.placements:
        d, plan = scn.devices[p.task], plans[p.task]
        assert abs(d.samples * plan["sample_ms"] / 1e3 - (p.end - p.start)) < 1e-6 * max(1.0, p.end - p.start), \
            "the placement's duration is N x the per-sample prediction"
        print(f"{d.name}: {p.mode:6s} {'' if p.edge is None else scn.edges[p.edge].name:5s} arrival {d.arrival_s:6.2f} "
              f"start {p.start:6.2f} end {p.end:6.2f}  {plan['sample_ms']:.2f} ms/sample, "
              f"b1 {p.b1 * 8 / 1e6:.0f} Mbps, b2 {p.b2 * 8 / 1e6:.0f} Mbps, cuts {plan['cuts']}", flush=True)

    if args.plan_only:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        return {}
    artifacts: dict[tuple, dict] = {}
    for p in schedule.placements:
        if p.mode == "device":
            continue
        plan = plans[p.task]
        key = (tuple(plan["cuts"][0]), tuple(plan["cuts"][1]))
        if key not in artifacts:
            artifacts[key] = compile_artifact(model, scn, p, plan, args.slowdown,
                                              work / "artifacts" / f"a{len(artifacts)}")
        plan["artifact"] = key

    procs, links = Processes(work / "logs"), None
    try:
        links = Links()
        ports: dict[str, int] = {}
        cloud_port: dict[tuple, int] = {}
        for key, art in artifacts.items():  # one cloud process per cloud plan
            if art["cloud"]:
                name = f"cloud-{Path(art['dir']).name}"
                ports[name] = cloud_port[key] = free_port()
                serve(procs, name, str(Path(art["dir"]) / "cloud"), ports[name], threads=8)
        edge_port: dict[tuple, int] = {}
        for p in schedule.placements:  # one process per (edge server, artifact it serves)
            if p.mode == "device":
                continue
            key = plans[p.task]["artifact"]
            if (p.edge, key) in edge_port:
                continue
            art, edge = artifacts[key], scn.edges[p.edge]
            name = f"{edge.name}-{Path(art['dir']).name}"
            ports[name] = edge_port[p.edge, key] = free_port()
            upstream = None
            if art["cloud"]:
                backbone = links.add(cloud_port[key], edge.backbone, scn.rtt_edge_cloud_ms)
                upstream = f"http://127.0.0.1:{backbone}"
            serve(procs, name, str(Path(art["dir"]) / "edge"), ports[name], threads=edge.slots, upstream=upstream)
        wait_healthy(procs, ports, time.time() + READY_TIMEOUT_S)
        print(f"servers up: {', '.join(ports)}", flush=True)

        alone: dict[tuple, float] = {}  # each (mode, artifact, b1) once, one device at a time
        for p in schedule.placements:
            key = (p.mode, plans[p.task].get("artifact"), p.b1)
            if key in alone:
                continue
            spec = {"mode": p.mode, "model": str(model), "slowdown": args.slowdown}
            if p.mode != "device":
                art = artifacts[key[1]]
                port = edge_port[p.edge, key[1]]
                spec.update(device_dir=str(Path(art["dir"]) / "device"),
                            url=f"http://127.0.0.1:{links.add(port, p.b1, scn.rtt_device_edge_ms)}")
            alone[key] = solo(spec, args.solo)
            print(f"alone: {p.mode} {'' if key[1] is None else artifacts[key[1]]['name']} "
                  f"{alone[key]:.1f} ms/sample", flush=True)

        tasks = work / "tasks"
        specs = {}
        for p in schedule.placements:
            d, plan = scn.devices[p.task], plans[p.task]
            spec = {"mode": p.mode, "model": str(model), "samples": d.samples, "start_s": p.start,
                    "slowdown": args.slowdown, "seed": p.task, "rounds": args.repeat, "go": str(tasks / "go"),
                    "ready": str(tasks / f"{d.name}.ready"), "result": str(tasks / f"{d.name}.result")}
            if p.mode != "device":
                art = artifacts[plan["artifact"]]
                uplink = links.add(edge_port[p.edge, plan["artifact"]], p.b1, scn.rtt_device_edge_ms)
                spec.update(device_dir=str(Path(art["dir"]) / "device"), url=f"http://127.0.0.1:{uplink}")
            (tasks / f"{d.name}.spec.json").write_text(json.dumps(spec))
            specs[p.task] = spec
            procs.start(d.name, [sys.executable, str(Path(__file__).resolve()), "--worker",
                                 str(tasks / f"{d.name}.spec.json")])
        deadline = time.time() + READY_TIMEOUT_S
        while not all(Path(s["ready"]).is_file() for s in specs.values()):
            dead = [n for n, pr in procs.procs if pr.poll() is not None]
            if dead:
                raise RuntimeError(f"{dead[0]} exited before it was ready (see {work / 'logs' / dead[0]}.log)")
            if time.time() > deadline:
                raise RuntimeError("the device processes were not ready in time")
            time.sleep(0.1)
        makespan = max(p.end for p in schedule.placements)
        rounds, load_start, run_s = [], [], []
        for round_ in range(args.repeat):
            t0 = time.time() + 1.0
            load_start.append(os.getloadavg()[0])
            Path(f"{tasks / 'go'}{round_}.json").write_text(json.dumps({"t0": t0}))
            print(f"round {round_ + 1}/{args.repeat}: running the schedule", flush=True)
            results = {i: Path(f"{s['result']}{round_}.json") for i, s in specs.items()}
            deadline = t0 + 3 * makespan + 60
            while not all(r.is_file() for r in results.values()):
                done = {scn.devices[i].name for i, r in results.items() if r.is_file()}
                dead = [n for n, pr in procs.procs if pr.poll() is not None and n not in done]
                if dead:
                    raise RuntimeError(f"{dead[0]} exited during the run (see {work / 'logs' / dead[0]}.log)")
                if time.time() > deadline:
                    raise RuntimeError("the run did not finish in time")
                time.sleep(0.1)
            run_s.append(time.time() - t0)
            rounds.append({i: json.loads(r.read_text()) for i, r in results.items()})
        load_end = os.getloadavg()
    finally:
        procs.close()
        if links is not None:
            links.close()

    rows = []
    for p in schedule.placements:
        d, plan = scn.devices[p.task], plans[p.task]
        got = [r[p.task] for r in rounds]
        s = [x for g in got for x in g["samples"]]
        delays = [g["end_s"] - d.arrival_s for g in got]
        measured = float(np.mean(delays))
        predicted = p.end - d.arrival_s
        done = [len(g["samples"]) for g in got]
        rows.append({"device": d.name, "mode": p.mode, "edge": None if p.edge is None else scn.edges[p.edge].name,
                     "samples": d.samples, "done": min(done), "errors": [g["error"] for g in got if g["error"]],
                     "arrival_s": d.arrival_s, "uplink_mbps": p.b1 * 8 / 1e6, "backbone_mbps": p.b2 * 8 / 1e6,
                     "cuts": plan["cuts"],
                     "predicted": {"start_s": p.start, "end_s": p.end, "delay_s": predicted,
                                   "sample_ms": plan["sample_ms"], "compute_ms": plan["compute_ms"],
                                   "transfer_ms": plan["transfer_ms"], "up_bytes": plan["up_bytes"]},
                     "measured": {"start_s": float(np.mean([g["began_s"] for g in got])),
                                  "delay_s": measured, "delays_s": delays,
                                  "sample_ms": float(np.mean([(g["end_s"] - g["began_s"]) * 1e3 / max(1, n)
                                                              for g, n in zip(got, done)])),
                                  **{key: _mean(s, key) for key in ("device_ms", "network_ms", "server_ms",
                                                                    "bytes_up")},
                                  "fallbacks": sum(bool(x.get("fallback")) for x in s),
                                  "alone_sample_ms": alone[p.mode, plan.get("artifact"), p.b1]},
                     "abs_error_s": abs(measured - predicted), "rel_error": abs(measured - predicted) / predicted})
    pred = np.array([r["predicted"]["delay_s"] for r in rows])
    meas = np.array([r["measured"]["delay_s"] for r in rows])
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    for d in data["devices"]:
        d["model"] = model.name  # built by build_model
    return {"policy": schedule.policy, "quick": args.quick, "slowdown": args.slowdown, "solo": args.solo,
            "scenario": data,
            "model": {"name": "patchnet", "input": [1, 3, SIZE, SIZE], "widths": list(WIDTHS), **compute},
            "artifacts": [{k: v for k, v in a.items() if k != "dir"} for a in artifacts.values()],
            "processes": [n for n, _ in procs.procs], "tasks": rows,
            "total": {"predicted_s": float(pred.sum()), "measured_s": float(meas.sum()),
                      "measured_per_round_s": [float(sum(r[i]["end_s"] - scn.devices[i].arrival_s for i in r))
                                               for r in rounds],
                      "mae_s": float(np.mean(np.abs(meas - pred))),
                      "mre": float(np.mean(np.abs(meas - pred) / pred)),
                      "bias_s": float(np.mean(meas - pred))},
            "host": {"cpus": os.cpu_count(), "platform": platform.platform(),
                     "loadavg_before": load_before, "loadavg_at_start": load_start, "loadavg_at_end": load_end},
            "repeat": args.repeat, "run_s": run_s, "wall_s": time.time() - wall0}


# --------------------------------------------------------------------------------------------- report
def mode_rows(res: dict) -> list[str]:
    rows = []
    for mode in ("device", "edge", "cloud", "full", "edge-only", "cloud-only"):
        mine = [r for r in res["tasks"] if r["mode"] == mode]
        if mine:
            pred, alone, run = (float(np.mean([r[side][key] for r in mine])) for side, key in (
                ("predicted", "sample_ms"), ("measured", "alone_sample_ms"), ("measured", "sample_ms")))
            rows.append(f"| {mode} | {len(mine)} | {pred:.1f} | {alone:.1f} | {run:.1f} |")
    return rows


def report(res: dict) -> str:
    t, m = res["total"], res["model"]
    h = res["host"]
    rounds_note = f" (mean of {res['repeat']}, range)" if res["repeat"] > 1 else ""
    n_dev = len(res["tasks"])
    lines = [
        "# A schedule run for real: predicted vs measured task delays", "",
        f"{n_dev} device processes, 2 edge servers (2 slots each) and one cloud on this machine "
        f"({h['cpus']} CPU cores, shared), following the schedule of **{res['policy']}** "
        f"({'--quick, ' if res['quick'] else ''}{res['repeat']} round{'s' if res['repeat'] > 1 else ''} of the "
        "same schedule; `python bench/schedule_real.py`). Delay = finish of the "
        "task's last sample - its arrival; predicted = the schedule's (per-sample optimum of the three-tier "
        "partitioner at the task's allocated bandwidths x N_i, after the scheduled start). 'Measured alone': the "
        f"same chain (mode, artifact, link) run by one device with nothing else of this benchmark running "
        f"({res['solo']} samples, before the schedule starts).", "",
        "| device | mode | edge | N | arrival s | b1 Mbps | predicted start s | measured start s | "
        "predicted ms/sample | measured alone ms/sample | measured ms/sample | predicted delay s | "
        f"measured delay s{rounds_note} | error |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in res["tasks"]:
        p, q = r["predicted"], r["measured"]
        err = (q["delay_s"] - p["delay_s"]) / p["delay_s"]
        spread = f" ({min(q['delays_s']):.2f}-{max(q['delays_s']):.2f})" if len(q["delays_s"]) > 1 else ""
        note = "" if r["done"] == r["samples"] and not r["errors"] else \
            f" (only {r['done']} done: {r['errors'][0] if r['errors'] else ''})"
        lines.append(f"| {r['device']} | {r['mode']} | {r['edge'] or '-'} | {r['samples']} | {r['arrival_s']:.2f} | "
                     f"{r['uplink_mbps']:.0f} | {p['start_s']:.2f} | {q['start_s']:.2f} | {p['sample_ms']:.1f} | "
                     f"{q['alone_sample_ms']:.1f} | {q['sample_ms']:.1f} | {p['delay_s']:.2f} | "
                     f"{q['delay_s']:.2f}{spread}{note} | {err * 100:+.0f}% |")
    per_round = ", ".join(f"{x:.2f}" for x in t["measured_per_round_s"])
    lines += ["", f"Total delay: predicted {t['predicted_s']:.2f} s, measured {t['measured_s']:.2f} s "
              f"({(t['measured_s'] / t['predicted_s'] - 1) * 100:+.0f}%; per round: {per_round} s). Mean absolute "
              f"error {t['mae_s']:.2f} s per task, mean relative error {t['mre'] * 100:.0f}%, mean signed error "
              f"{t['bias_s']:+.2f} s (per task, on the mean over the rounds). Each round ran for "
              f"{', '.join(f'{x:.1f}' for x in res['run_s'])} s; the whole benchmark (compile, start-up, "
              f"{res['repeat']} round{'s' if res['repeat'] > 1 else ''}) took {res['wall_s']:.0f} s. Load average "
              f"(1 min) before the benchmark / at each round's start / at the end: {h['loadavg_before'][0]:.1f} / "
              f"{' '.join(f'{x:.1f}' for x in h['loadavg_at_start'])} / {h['loadavg_at_end'][0]:.1f}.", "",
              "Per mode (means over the tasks in that mode): the prediction, one task alone, and the tasks in "
              "the schedule's run. Alone minus predicted is what the partitioner's pricing misses even without "
              "contention (cost model, per-request overhead, the emulated links); the run minus alone is what "
              "the tasks' sharing of this machine adds.", "",
              "| mode | tasks | predicted ms/sample | measured alone ms/sample | measured in the run ms/sample |",
              "|---|---:|---:|---:|---:|", *mode_rows(res), "",
              "Where a sample's time went (means over the task's samples in every round). Predicted: the "
              "device's compute, the links (round trips and raw float32 bytes) and the edge and cloud compute. "
              "Measured by the device's EdgeClient: device = its own half, times the slowdown; network = request "
              "to reply minus the server's time; server = the edge server's time (for a relaying edge, its own "
              "work plus the whole upstream exchange with the cloud); other = the rest of the sample (codec, "
              "Python, sleep granularity).", "",
              "| device | mode | pred. device ms | pred. links ms | pred. edge+cloud ms | meas. device ms | "
              "meas. network ms | meas. server ms | meas. other ms | bytes up |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    k = res["slowdown"]
    for r in res["tasks"]:
        p, q = r["predicted"], r["measured"]
        dev = q["device_ms"] * k
        if q["network_ms"] is None:
            net = server = up = "-"
            other = q["sample_ms"] - dev
        else:
            net, server, up = f"{q['network_ms']:.1f}", f"{q['server_ms']:.1f}", f"{q['bytes_up']:.0f}"
            other = q["sample_ms"] - dev - q["network_ms"] - q["server_ms"]
        lines.append(f"| {r['device']} | {r['mode']} | {p['compute_ms'][0]:.1f} | {sum(p['transfer_ms']):.1f} | "
                     f"{sum(p['compute_ms'][1:]):.1f} | {dev:.1f} | {net} | {server} | {other:.1f} | {up} |")
    lines += ["", "Artifacts (three-tier compiles forced to the scheduler's cuts; nodes on device / edge / cloud) "
              "and the `splitc serve` processes that ran them:", "",
              "| artifact | link-1 cut | link-2 cut | nodes | same assignment as the scheduler's | processes |",
              "|---|---|---|---|---|---|"]
    for a in res["artifacts"]:
        served = [n for n in res["processes"] if n.endswith("-" + a["name"])]
        lines.append(f"| {a['name']} | {', '.join(a['cuts'][0]) or '-'} | {', '.join(a['cuts'][1]) or '-'} | "
                     f"{' / '.join(map(str, a['counts']))} | {'yes' if a['same_assignment'] else 'no'} | "
                     f"{', '.join(served)} |")
    lines += ["", f"The model alone (1 onnxruntime thread, measured in the benchmark process before the run): "
              f"host cost model {m['predicted_ms']:.2f} ms, measured median {m['median_ms']:.2f} ms "
              f"(p10 {m['p10_ms']:.2f}, p90 {m['p90_ms']:.2f}).", ""]
    lines += METHOD
    return "\n".join(lines) + "\n"


METHOD = [
    "## Method", "",
    "Model: `patchnet`, built by the script with seeded weights: a 3x3 stem convolution and a 4x4 max-pool take "
    "the 3x128x128 image (196 KB) to 8x32x32 (32 KB), then three stages of two 3x3 convolutions (96, 192, 384 "
    "channels), global pooling and a 10-way classifier. Every tier is priced by the `host` target's calibrated "
    "roofline; the device is emulated as `--slowdown` (default 5) times slower: the scheduler prices device "
    "nodes at 5x the host cost, and each device process sleeps 4x the device compute it has just measured. "
    "Links: 30 Mbps per device (B_i^1) and 90 Mbps per edge (B_e^1) device-edge, 2 ms RTT; 100 Mbps edge-cloud "
    "(B_i^2 = B_e^2), 6 ms RTT. Tensors cross as raw float32 (`--bits 32`), as the scheduler prices them.", "",
    "Modes and processes. `device`: the device process runs the whole model with onnxruntime, no server. "
    "`edge`: a three-tier compile forced to the scheduler's cuts with nothing over link 2 (`OUT/edge` is a plain "
    "plan), served by `splitc serve OUT/edge`. `cloud`: the edge computes nothing: `splitc serve OUT/edge "
    "--upstream` relays the device's frames to `splitc serve OUT/cloud`. `full`: device, relaying edge half and "
    "cloud half. A relaying server serves one plan, so an edge server is one `splitc serve` process per "
    "artifact it serves (`--threads` = its slots); each cloud plan has one cloud process. Every process uses "
    "1 onnxruntime intra-op thread. Each device has its own netem proxy (`splitc.runtime.netem`) at the uplink "
    "b1 its task was allocated; each relaying process reaches the cloud through its own proxy at B_e^2. The "
    "device processes load, warm up (2 inferences through their chain), then wait for a common t0 and their "
    "task's scheduled start, run their N_i samples back to back and record the finish.", "",
    "Sources of error. (1) CPU: the host has 2 cores, shared by the cloud, the edge servers, 8 device "
    "processes, the proxies and other jobs on the machine; the scheduler assumes every tier computes in "
    "parallel at full speed, so concurrent tasks slow each other down here, and the emulated device's "
    "slowdown multiplies whatever contention its own compute meets. (2) The host cost model is a roofline "
    "fitted per op type on an idle machine; the line above compares it with this model alone. (3) Per-request "
    "overhead the partitioner does not price: HTTP, the wire codec, Python, the relay's second HTTP exchange, "
    "the netem proxy's event loop. (4) Bandwidth shares are enforced per device (each uplink proxy runs at "
    "the task's b1) and per relaying process on the backbone; the schedule never lets two cloud tasks share "
    "one edge's backbone. (5) The schedule is computed once from the predictions and followed as is: every task "
    "starts at its scheduled time even when the task it was meant to follow on the same edge is still running, "
    "so tasks that run late overlap more than the schedule intends (an edge server then queues requests beyond "
    "its slots).",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="half the samples, arrivals compressed by half")
    parser.add_argument("--policy", default="splitc", help="splitc, deepar, ilp, device-only, edge-only, cloud-only")
    parser.add_argument("--slowdown", type=float, default=5.0, help="the emulated device is this much slower")
    parser.add_argument("--keep", help="work directory to keep (default: a temporary one)")
    parser.add_argument("--results", default=str(RESULTS), help="where schedule_real.md/json go")
    parser.add_argument("--repeat", type=int, help="rounds of the schedule (default 3, 1 with --quick)")
    parser.add_argument("--solo", type=int, default=20, help="samples per mode run alone before the schedule")
    parser.add_argument("--plan-only", action="store_true", help="print the schedule and stop")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.worker)
    if args.slowdown < 1:
        parser.error("--slowdown must be at least 1")
    args.repeat = args.repeat or (1 if args.quick else 3)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    res = run(args)
    if args.plan_only:
        return
    out = Path(args.results)
    out.mkdir(parents=True, exist_ok=True)
    stem = "schedule_real"
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1, default=float))
    text = report(res)
    (out / f"{stem}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
