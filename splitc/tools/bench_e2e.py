"""End-to-end benchmark: real requests through the netem proxy to a real cloud server.

For each bandwidth, five ways to classify an image are timed over ``requests``
requests (median and p90):

* **splitc**: the plan for that bandwidth (the bandwidths are compiled as one
  range, ``splitc.adaptive``: one calibration, the plan whose interval holds
  the bandwidth; the accuracy bound is checked on ``calib``), run by
  ``EdgeClient`` against ``splitc serve``.
* **Origin2Cloud**: the raw uint8 image (one byte per value, an 8-bit
  cloud-only plan without entropy coding) sent to the same server.
* **PNG2Cloud** / **JPEG2Cloud** (quality 90): the image compressed on the
  edge (Pillow), POSTed through the proxy to the server's ``/v1/probe``; the
  cloud's decode and whole-model time are measured here and added.
* **edge-only**: the whole model on the edge, no network.

Device emulation: all compute runs on this machine. Each half's measured time
is scaled by the ratio of the target's predicted time for that half to this
host's profiled time for it (``Emulation``: ``edge_ratio``, ``cloud_ratio``);
image codecs and the wire codec are not scaled. Both the host-measured and
the emulated totals are reported.
"""

# Over 400 lines on purpose: one benchmark harness whose steps (emulation, compile, accuracy, timed
# runs through netem, tables) share the same run state.

from __future__ import annotations

import hashlib
import io
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort

import splitc
from splitc.adaptive import compile_range
from splitc.partition.solve import forced_partition
from splitc.cli.report import width_text
from splitc.runtime import EdgeClient, Pipeline, PlanSet
from splitc.runtime.netem import NetemThread
from splitc.runtime.server import ServerThread
from splitc.units import format_bandwidth

METHODS = ("splitc", "Origin2Cloud", "PNG2Cloud", "JPEG2Cloud", "edge-only")


@dataclass
class BenchConfig:
    """What to benchmark (bandwidths in bytes/s, RTT in ms)."""

    model: Path | onnx.ModelProto
    target: str
    cloud: str
    bandwidths: list[float]
    rtt_ms: float
    calib: Path | None
    test: Path | None
    max_drop: float = 0.01
    requests: int = 20
    out: Path = Path("bench-out")
    name: str | None = None
    metric: str = "auto"
    bits: str | int = "auto"
    test_limit: int = 64
    host_profile: Path | None = None  # a ``splitc profile`` of the model on this machine (made when None)
    profile_runs: int = 5
    edge_precision: str = "fp32"  # of splitc's plans; the edge-only baseline stays float32


@dataclass
class Timing:
    """Per-request totals (ms) of one method at one bandwidth."""

    emulated: list[float] = field(default_factory=list)
    host: list[float] = field(default_factory=list)
    up_bytes: list[int] = field(default_factory=list)
    detail: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {"median_ms": _pct(self.emulated, 50), "p90_ms": _pct(self.emulated, 90),
                "host_median_ms": _pct(self.host, 50), "host_p90_ms": _pct(self.host, 90),
                "up_bytes": float(np.median(self.up_bytes)) if self.up_bytes else 0.0, **self.detail}


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else 0.0


def load_data(path: Path, name: str, limit: int) -> tuple[np.ndarray, np.ndarray | None]:
    """Inputs (N, ...) of the model's first input, and labels when the file has them."""
    with np.load(path, allow_pickle=False) as data:
        images = np.asarray(data[name] if name in data else data[data.files[0]], np.float32)[:limit]
        labels = np.asarray(data["labels"])[:limit] if "labels" in data else None
    return images, labels


def _session(model) -> ort.InferenceSession:
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


class Emulation:
    """Target/host time ratios per half: the cost model's target prediction over this host's measured profile.

    The host side comes from ``splitc profile`` run here on the model (per-node
    times and the measured prefix/suffix segment at every cut vertex), so a
    half's host prediction is what that half measured when run alone; the
    emulated time is then ``measured x target_predicted / host_profiled``.
    """

    def __init__(self, model, target: str, cloud: str, profile: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.host = splitc.analyse(model, target=str(profile), cloud=str(profile))
            self.device = splitc.analyse(model, target=target, cloud=cloud)  # float32: the whole-model baselines
        self.inputs = [v.name for v in self.host.graph.inputs if v.consumers]

    def _times(self, analysis, cut: list[str]) -> tuple[float, float]:
        part = forced_partition(analysis.problem, cut)
        return part.edge_ms, part.cloud_ms

    def plan_ratios(self, plan: dict) -> tuple[float, float]:
        """(edge, cloud) ratios of ``plan``'s halves: its predicted times over the host's for the same cut."""
        cut = [c["tensor"] for c in plan["cut"]]
        host_edge, host_cloud = self._times(self.host, cut)
        predicted = plan["predicted"]
        return (_ratio(predicted["edge_ms"], host_edge), _ratio(predicted["cloud_ms"], host_cloud))

    def whole_ratios(self) -> tuple[float, float]:
        """(edge, cloud) ratios of the whole model: edge-only on the target, cloud-only on the cloud."""
        host_whole = self._times(self.host, [])[0]
        return (_ratio(self._times(self.device, [])[0], host_whole),
                _ratio(self._times(self.device, self.inputs)[1], host_whole))


def _ratio(predicted: float, host: float) -> float:
    return predicted / host if host > 0 else 1.0


def host_profile(model: onnx.ModelProto, path: Path, runs: int, progress) -> Path:
    """``splitc profile`` of ``model`` on this machine, reused from ``path`` when it matches the model."""
    from splitc.profiling.command import write_profile
    from splitc.profiling.measure import profile_model

    digest = hashlib.sha256(model.SerializeToString()).hexdigest()
    stamp = path.with_suffix(".sha256")
    if path.exists() and stamp.exists() and stamp.read_text() == digest:
        return path
    progress(f"profiling {model.graph.name} on this machine (host side of the device emulation)")
    write_profile(profile_model(model, runs=runs, warmup=2, min_seconds=0.0, name="host"), path)
    stamp.write_text(digest)
    return path


def to_uint8(image: np.ndarray) -> np.ndarray:
    """An input in [0, 1] (C, H, W) as an 8-bit picture (H, W) or (H, W, 3)."""
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return pixels[0] if pixels.shape[0] == 1 else pixels.transpose(1, 2, 0)


def from_uint8(pixels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    array = pixels.astype(np.float32) / 255.0
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return array.reshape(shape)


def compress(image: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    options = {"quality": 90} if fmt == "JPEG" else {}
    Image.fromarray(to_uint8(image)).save(buffer, fmt, **options)
    return buffer.getvalue()


def decompress(data: bytes, shape: tuple[int, ...]) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as picture:
        return from_uint8(np.asarray(picture), shape)


def score(outputs: list[np.ndarray], reference: list[np.ndarray], labels: np.ndarray | None) -> dict:
    """Top-1 accuracy (with labels), top-1 agreement with the float model, mean relative L2 error."""
    top = np.array([int(np.argmax(o)) for o in outputs])
    ref = np.array([int(np.argmax(r)) for r in reference])
    rel = [float(np.linalg.norm(o - r) / max(np.linalg.norm(r), 1e-30)) for o, r in zip(outputs, reference)]
    result = {"agreement": float(np.mean(top == ref)), "rel_l2": float(np.mean(rel))}
    if labels is not None:
        result["accuracy"] = float(np.mean(top == labels))
    return result


class Bench:
    """One model: its plans, data and reference outputs, and the measurements."""

    def __init__(self, config: BenchConfig, progress) -> None:
        self.config, self.progress = config, progress
        self.model = config.model if isinstance(config.model, onnx.ModelProto) else onnx.load(str(config.model))
        self.name = config.name or (Path(config.model).name if isinstance(config.model, (str, Path))
                                    else self.model.graph.name)  # the file the user named, not the graph's name
        self.session = _session(self.model)
        first = self.session.get_inputs()[0]
        self.input_name, self.shape = first.name, tuple(first.shape)
        self.images, self.labels = load_data(config.test, self.input_name, config.test_limit)
        self.reference = [self._whole(x[None]) for x in self.images]
        config.out.mkdir(parents=True, exist_ok=True)
        profile = config.host_profile or host_profile(self.model, config.out / "host-profile.json",
                                                      config.profile_runs, progress)
        self.emulation = Emulation(self.model, config.target, config.cloud, profile)
        self.whole_ratios = self.emulation.whole_ratios()

    def _whole(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: x})[0]

    def compile_plans(self) -> tuple[Path, list[Path]]:
        cfg, out = self.config, self.config.out
        origin = out / "origin"
        splitc.compile(self.model, target=cfg.target, cloud=cfg.cloud, cut=[self.input_name], bits=8,
                       codec="none").save(origin)
        lo, hi = min(cfg.bandwidths), max(cfg.bandwidths)
        self.progress(f"{self.name}: compiling {format_bandwidth(lo)} .. {format_bandwidth(hi)} (one calibration)")
        options = splitc.CompileOptions(target=cfg.target, cloud=cfg.cloud, bandwidth=lo, rtt=cfg.rtt_ms,
                                        bits=cfg.bits, calib=cfg.calib, max_drop=cfg.max_drop, metric=cfg.metric,
                                        edge_precision=cfg.edge_precision)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if lo == hi:
                splitc.compile(self.model, options).save(out / "plans")
            else:
                compile_range(self.model, (lo, hi * (1 + 1e-9)), options).save(out / "plans")
        plans = PlanSet(out / "plans")
        return origin, [plans.for_bandwidth(bandwidth).dir for bandwidth in cfg.bandwidths]

    def accuracy(self, origin: Path, dirs: list[Path]) -> dict:
        def run_plan(directory: Path) -> list[np.ndarray]:
            pipeline = Pipeline(directory)
            return [pipeline.run({self.input_name: x[None]})[next(iter(pipeline.output_names))] for x in self.images]

        result = {"Origin2Cloud": score(run_plan(origin), self.reference, self.labels),
                  "edge-only": score(self.reference, self.reference, self.labels)}
        for fmt, method in (("PNG", "PNG2Cloud"), ("JPEG", "JPEG2Cloud")):
            outputs = [self._whole(decompress(compress(x, fmt), (1, *x.shape))) for x in self.images]
            result[method] = score(outputs, self.reference, self.labels)
        for index, directory in enumerate(dirs):
            result[f"splitc-{index}"] = score(run_plan(directory), self.reference, self.labels)
        return result

    def time_client(self, directory: Path, url: str) -> Timing:
        plan = json.loads((directory / "plan.json").read_text())
        edge_ratio, cloud_ratio = self.emulation.plan_ratios(plan)
        timing = Timing(detail={"edge_ratio": edge_ratio, "cloud_ratio": cloud_ratio, "kind": plan["kind"],
                                "cut": [c["tensor"] for c in plan["cut"]], "bits": [c["bits"] for c in plan["cut"]],
                                "codec": [c["codec"] for c in plan["cut"]]})
        with EdgeClient(directory, url, timeout=60, retries=0) as client:
            for i in range(self.config.requests + 2):
                r = client.infer({self.input_name: self.images[i % len(self.images)][None]})
                if i < 2:
                    continue  # warm-up: connection set-up, first-run allocations
                server = r.server.get("decode_ms", 0.0) + r.server.get("encode_ms", 0.0)
                timing.emulated.append(r.edge_ms * edge_ratio + r.encode_ms + r.network_ms + server
                                       + r.cloud_ms * cloud_ratio + r.decode_ms)
                timing.host.append(r.total_ms)
                timing.up_bytes.append(r.bytes_up)
        return timing

    def time_image(self, fmt: str, http: httpx.Client, url: str) -> Timing:
        cloud_ratio = self.whole_ratios[1]
        timing = Timing(detail={"cloud_ratio": cloud_ratio})
        for i in range(self.config.requests + 2):
            x = self.images[i % len(self.images)]
            t0 = time.perf_counter()
            data = compress(x, fmt)
            t1 = time.perf_counter()
            http.post(url + "/v1/probe", content=data).raise_for_status()
            t2 = time.perf_counter()
            decoded = decompress(data, (1, *x.shape))
            t3 = time.perf_counter()
            self._whole(decoded)
            t4 = time.perf_counter()
            if i >= 2:
                timing.emulated.append(((t3 - t0) + (t4 - t3) * cloud_ratio) * 1e3)
                timing.host.append((t4 - t0) * 1e3)
                timing.up_bytes.append(len(data))
        return timing

    def time_edge_only(self) -> Timing:
        timing = Timing(detail={"edge_ratio": self.whole_ratios[0]})
        for i in range(self.config.requests + 2):
            t0 = time.perf_counter()
            self._whole(self.images[i % len(self.images)][None])
            elapsed = (time.perf_counter() - t0) * 1e3
            if i >= 2:
                timing.emulated.append(elapsed * self.whole_ratios[0])
                timing.host.append(elapsed)
                timing.up_bytes.append(0)
        return timing

    def time_at(self, bandwidth: float, origin_url: str, plan_url: str | None, plan_dir: Path) -> dict:
        """All methods at one bandwidth (``*_url`` are the proxies in front of the servers)."""
        timings = {"Origin2Cloud": self.time_client(self.config.out / "origin", origin_url)}
        with httpx.Client(timeout=120) as http:
            timings["PNG2Cloud"] = self.time_image("PNG", http, origin_url)
            timings["JPEG2Cloud"] = self.time_image("JPEG", http, origin_url)
        timings["edge-only"] = self.time_edge_only()
        timings["splitc"] = self.time_client(plan_dir, plan_url or origin_url)
        return {method: timings[method].summary() for method in METHODS}


def run_model_bench(config: BenchConfig, progress=print) -> dict:
    """Measure one model at every bandwidth; returns the results as a dict (see ``markdown``)."""
    config.out.mkdir(parents=True, exist_ok=True)
    bench = Bench(config, progress)
    origin, dirs = bench.compile_plans()
    progress(f"{bench.name}: measuring accuracy on {len(bench.images)} held-out inputs")
    accuracy = bench.accuracy(origin, dirs)
    rows = []
    with ServerThread(origin, threads=1) as origin_server:
        for bandwidth, directory in zip(config.bandwidths, dirs):
            progress(f"{bench.name}: {config.requests} requests per method at {format_bandwidth(bandwidth)}")
            rows.append(_measure_bandwidth(bench, bandwidth, origin_server, directory))
    return {"model": bench.name, "target": config.target, "cloud": config.cloud, "rtt_ms": config.rtt_ms,
            "edge_precision": config.edge_precision,
            "max_drop": config.max_drop, "requests": config.requests, "test_inputs": len(bench.images),
            "whole_model_ratios": bench.whole_ratios, "accuracy": accuracy, "rows": rows}


def _measure_bandwidth(bench: Bench, bandwidth: float, origin_server: ServerThread, directory: Path) -> dict:
    rtt = bench.config.rtt_ms
    plan = json.loads((directory / "plan.json").read_text())
    with NetemThread(("127.0.0.1", origin_server.port), rate=bandwidth, rtt_ms=rtt) as origin_proxy:
        origin_url = f"http://127.0.0.1:{origin_proxy.port}"
        if plan.get("cloud") is None:
            return {"bandwidth_Bps": bandwidth, **bench.time_at(bandwidth, origin_url, None, directory)}
        with ServerThread(directory, threads=1) as server:
            with NetemThread(("127.0.0.1", server.port), rate=bandwidth, rtt_ms=rtt) as proxy:
                plan_url = f"http://127.0.0.1:{proxy.port}"
                return {"bandwidth_Bps": bandwidth, **bench.time_at(bandwidth, origin_url, plan_url, directory)}


def markdown(result: dict) -> str:
    """One model's results as markdown: a table per bandwidth, speed-ups of splitc as ratios."""
    precision = " in fp16" if result.get("edge_precision") == "fp16" else ""
    lines = [f"### {result['model']} (edge {result['target']}{precision}, cloud {result['cloud']}, "
             f"RTT {result['rtt_ms']:g} ms, {result['requests']} requests per cell, "
             f"accuracy bound {result['max_drop']:.0%})", ""]
    acc = result["accuracy"]
    for index, row in enumerate(result["rows"]):
        lines += [f"**{format_bandwidth(row['bandwidth_Bps'])}** ({row['bandwidth_Bps'] / 1e3:g} KB/s) — splitc plan: "
                  f"{_plan_text(row['splitc'])}", "",
                  "| method | emulated median ms | emulated p90 ms | host median ms | host p90 ms | bytes up | "
                  "top-1 agreement | accuracy | splitc speed-up |", "|---|---|---|---|---|---|---|---|---|"]
        for method in METHODS:
            cell, score_ = row[method], acc[f"splitc-{index}" if method == "splitc" else method]
            speedup = cell["median_ms"] / row["splitc"]["median_ms"] if row["splitc"]["median_ms"] else float("nan")
            lines.append(f"| {method} | {cell['median_ms']:.1f} | {cell['p90_ms']:.1f} | {cell['host_median_ms']:.1f} "
                         f"| {cell['host_p90_ms']:.1f} | {cell['up_bytes']:.0f} | {score_['agreement']:.3f} | "
                         f"{score_.get('accuracy', float('nan')):.3f} | {speedup:.2f}x |")
        lines.append("")
    return "\n".join(lines)


def _plan_text(cell: dict) -> str:
    if not cell.get("cut"):
        return f"{cell.get('kind', '?')}"
    spec = (cell.get("codec") or [{}])[0]
    quality = spec["quality"] if spec.get("name") == "jpeg" else 0
    coding = width_text(cell["bits"][0], quality) + ("" if quality else " bits")
    return f"{cell['kind']}, cut {', '.join(cell['cut'][:2])} at {coding}"


def plot(results: list[dict], path: Path) -> None:
    """Latency (emulated median) against bandwidth, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), squeeze=False)
    for ax, result in zip(axes[0], results):
        rows = sorted(result["rows"], key=lambda row: row["bandwidth_Bps"])
        bandwidths = [row["bandwidth_Bps"] / 1e3 for row in rows]
        for method in METHODS:
            ax.plot(bandwidths, [row[method]["median_ms"] for row in rows], marker="o", label=method)
        ax.set(xscale="log", yscale="log", xlabel="bandwidth (KB/s)", ylabel="latency, emulated median (ms)",
               title=f"{result['model']} ({result['target']} → {result['cloud']})")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_bench(config: BenchConfig, progress=print) -> str:
    """``splitc bench``: measure one model; writes e2e.md, e2e.json and e2e.png under ``config.out``."""
    result = run_model_bench(config, progress)
    text = markdown(result)
    (config.out / "e2e.md").write_text(text + "\n")
    (config.out / "e2e.json").write_text(json.dumps(result, indent=1) + "\n")
    try:
        plot([result], config.out / "e2e.png")
    except ImportError:
        progress("no e2e.png: matplotlib is not installed (pip install matplotlib)")
    return text
