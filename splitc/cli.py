"""The ``splitc`` command line: a thin layer over the Python API.

``splitc MODEL ...`` is the same as ``splitc compile MODEL ...``.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from splitc.errors import SplitcError
from splitc.targets import DEFAULT_CLOUD, DEFAULT_EDGE
from splitc.units import parse_fraction, parse_shape

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Compile ONNX models into edge and cloud halves for split inference.\n\n"
    "splitc MODEL [options] is short for splitc compile MODEL [options]. splitc --version prints the version.",
)
console = Console()
errors = Console(stderr=True)
COMMANDS = {"compile", "inspect", "targets", "run", "profile", "serve", "netem", "bench", "schedule"}
STARTED = time.monotonic()  # reset by main(): the wall time of the whole command is printed at its end


def _wall_time() -> str:
    seconds = time.monotonic() - STARTED
    return f"{seconds * 1e3:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _shapes(specs: list[str] | None) -> dict[str, tuple[int, ...]]:
    return dict(parse_shape(spec) for spec in specs or [])


def _bits(text: str) -> str | int:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError as exc:
        raise SplitcError(f"--bits must be auto, 1..8, 16 or 32, not {text!r}") from exc


def _cut(text: str | None) -> list[str] | None:
    if text is None:
        return None
    if text.strip().lower() in ("none", "edge-only", ""):
        return []
    return [t.strip() for t in text.split(",") if t.strip()]


@app.command("compile")
def compile_command(
    model: Path = typer.Argument(..., help="The ONNX model to split."),
    target: str = typer.Option(DEFAULT_EDGE, "--target", "-t", help="Edge device (see `splitc targets`)."),
    cloud: str = typer.Option(DEFAULT_CLOUD, "--cloud", "-c", help="Cloud device (see `splitc targets`)."),
    bw: str = typer.Option("5Mbps", "--bw", help="Link bandwidth: 300KBps, 5Mbps, 1.5Gbps (b = bits, B = bytes)."),
    rtt: str = typer.Option("20ms", "--rtt", help="Round-trip time of the link: 20ms, 0.1s."),
    input_shape: Optional[List[str]] = typer.Option(
        None, "--input-shape", help="Fix an input's shape: NAME=1x3x224x224 (repeatable)."
    ),
    cut: Optional[str] = typer.Option(
        None, "--cut", help="Force the tensors to send: T1[,T2...]; 'none' runs everything on the edge."
    ),
    out: Path = typer.Option(Path("out"), "--output", "-o", help="Output directory (replaced atomically)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan summary as JSON instead of tables."),
    bits: str = typer.Option("auto", "--bits", help="Bits per element of the cut tensor: auto, 1..8, 16 or 32 (raw)."),
    codec: str = typer.Option("huffman", "--codec", help="Entropy coder for quantized cuts: huffman or none."),
    calib: Optional[Path] = typer.Option(
        None, "--calib", help="Calibration data: .npz keyed by input names, optionally with 'labels'."
    ),
    max_drop: str = typer.Option("1%", "--max-drop", help="Largest accepted accuracy drop: 1% or 0.01."),
    confidence: str = typer.Option(
        "95%", "--confidence", help="Level of the certified upper bound on the drop that must be within --max-drop."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show secondary columns (kind, per-side times)."),
    metric: str = typer.Option("auto", "--metric", help="Accuracy metric: auto, top1 (classifiers) or rel-l2."),
    per_channel: bool = typer.Option(False, "--per-channel", help="Quantize with a min/max per channel."),
    edge_precision: str = typer.Option(
        "fp32", "--edge-precision", help="fp32, or fp16: the edge half in float16 (targets with an FP16 rate)."
    ),
    jpeg: bool = typer.Option(
        True, "--jpeg/--no-jpeg",
        help="With --bits auto and --calib: also try JPEG (quality 50/75/85/90/95) on image-shaped cut tensors.",
    ),
    preprocess: Optional[str] = typer.Option(
        None, "--preprocess", help="Image preprocessing, stored in plan.json and applied by splitc run: "
        "mean=a/b/c,std=a/b/c,layout=nchw|nhwc,scale=255, or none (pixels / 255). Required with a --calib folder."
    ),
    emit_fallback: bool = typer.Option(
        False, "--emit-fallback", help="Mark the plan fallback: true (ship cloud.onnx to the edge for --fallback local)."
    ),
    backend: str = typer.Option("onnx", "--backend", help="Emit the halves as onnx (.onnx) or tvm (.so builds)."),
    tvm_fallback: Optional[str] = typer.Option(
        None, "--tvm-fallback", help="With --backend tvm: 'onnx' emits a half TVM cannot import as ONNX instead."
    ),
) -> None:
    """Split MODEL between an edge device and the cloud and write the halves to -o.

    A range --bw LOW..HIGH (300KBps..50Mbps) writes every plan that is optimal somewhere in it.
    """
    from splitc.api import compile as compile_model
    from splitc.report import compile_summary, print_compile_report, print_deployment, skipped_line

    quiet = as_json or not console.is_terminal
    level = parse_fraction(confidence)
    if backend == "tvm":  # fail before compiling: TVM missing, or a --bw range (not supported with TVM)
        from splitc.backends.tvm.build import require_tvm

        require_tvm()
        if ".." in bw:
            raise SplitcError("--backend tvm takes a single --bw rate, not a range")
        if edge_precision != "fp32":
            raise SplitcError("--backend tvm builds float32 halves; use --edge-precision fp32 (or --backend onnx)")
    if ".." in bw:
        from splitc.adaptive import compile_range
        from splitc.stitch_report import print_range_report, range_summary

        with _progress(quiet) as step, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UserWarning)
            result = compile_range(
                model, bw, target=target, cloud=cloud, rtt=rtt, input_shapes=_shapes(input_shape), progress=step,
                bits=_bits(bits), codec=codec, calib=calib, max_drop=parse_fraction(max_drop), metric=metric,
                per_channel=per_channel, cache_dir=out if out.is_dir() else None, preprocess=preprocess,
                emit_fallback=emit_fallback, jpeg=jpeg, edge_precision=edge_precision, confidence=level,
            )
            step("writing the output directory")
            result.save(out)
        _print_warnings(caught)
        if as_json:
            print(json.dumps(range_summary(result, out), indent=2))
            return
        print_range_report(console, result, out, typed=bw, verbose=verbose)
        line = skipped_line(result.calibration)
        if line:
            console.print(line, highlight=False)
        if result.plot_path is not None:
            console.print(f"latency vs bandwidth plot: {result.plot_path}", highlight=False)
        else:
            errors.print(f"[yellow]warning:[/] no latency plot: {result.plot_missing}", highlight=False)
        print_deployment(console, out)
        console.print(f"done in {_wall_time()}", highlight=False)
        return
    with _progress(quiet) as step, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        split = compile_model(
            model, target=target, cloud=cloud, bandwidth=bw, rtt=rtt,
            input_shapes=_shapes(input_shape), cut=_cut(cut), progress=step,
            bits=_bits(bits), codec=codec, calib=calib, max_drop=parse_fraction(max_drop), metric=metric,
            per_channel=per_channel, cache_dir=out if out.is_dir() else None, preprocess=preprocess, jpeg=jpeg,
            edge_precision=edge_precision, confidence=level,
        )
        step("writing the output directory")
        if emit_fallback:
            split.plan["fallback"] = True
        split.save(out, backend=backend, tvm_fallback=tvm_fallback)
    _print_warnings(caught)
    from splitc.profiling.command import cost_warnings

    for line in cost_warnings(split.plan):
        errors.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps(compile_summary(split, out), indent=2))
        return
    print_compile_report(console, split, out, verbose=verbose, link_text=(bw, rtt))
    line = skipped_line(split.files.get("calibration.json"))
    if line:
        console.print(line, highlight=False)
    print_deployment(console, out)
    console.print(f"done in {_wall_time()} (partitioning {split.plan['solve_ms']:.0f} ms)", highlight=False)


def _print_warnings(caught) -> None:
    """Each warning as one ``warning:`` line (never Python's file:line form)."""
    seen = set()
    for warning in caught:
        text = str(warning.message)
        if text not in seen:
            seen.add(text)
            errors.print(f"[yellow]warning:[/] {text}", highlight=False, soft_wrap=True, markup=True)


@app.command("inspect")
def inspect_command(
    model: Path = typer.Argument(..., help="The ONNX model to inspect."),
    input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", help="NAME=1x3x224x224 (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    limit: int = typer.Option(20, "--limit", help="Cut-vertex rows shown (0: all; --json lists all)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show each cut vertex's producer node."),
) -> None:
    """Show node count, FLOPs, cut vertices with their sizes, and atomic or custom ops."""
    from splitc.report import inspect_model, print_inspect_report

    info = inspect_model(model, _shapes(input_shape))
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        print_inspect_report(console, info, limit, verbose)


@app.command("targets")
def targets_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show each device and the source of its figures."),
) -> None:
    """List the built-in device targets and the figures behind them."""
    from splitc.report import print_targets
    from splitc.targets import TARGETS

    if as_json:
        print(json.dumps([t.to_dict() for t in TARGETS.values()], indent=2))
    else:
        print_targets(console, verbose)


@app.command("run")
def run_command(
    out: Path = typer.Argument(..., help="A splitc output directory."),
    input: List[str] = typer.Option(..., "--input", "-i", help="NAME=file.npy, or file.npy for a one-input model."),
    local: bool = typer.Option(True, "--local", help="Run both halves in this process (the default without --cloud)."),
    save: Optional[Path] = typer.Option(None, "--save", help="Write the outputs to this .npz file."),
    cloud_url: Optional[str] = typer.Option(None, "--cloud", help="Run the cloud half on this splitc serve URL."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="File holding the server's bearer token."),
    fallback: Optional[str] = typer.Option(None, "--fallback", help="'local': run the cloud half here if the cloud fails."),
    timeout: float = typer.Option(10.0, "--timeout", help="Seconds to wait for the cloud per attempt."),
    retries: int = typer.Option(2, "--retries", help="Retries after a network error, timeout or 5xx reply."),
    repeat: int = typer.Option(1, "--repeat", min=1, help="Timed runs; with more than one, median and p90."),
    warmup: int = typer.Option(1, "--warmup", min=0, help="Untimed runs first (codec kernels, sessions, "
                                                            "connections warm up)."),
) -> None:
    """Run a compiled split on .npy (or image) inputs: here, or edge half here and cloud half on --cloud."""
    import time

    from splitc.report import print_outputs
    from splitc.runtime import EdgeClient, Pipeline
    from splitc.stitch_report import print_repeated, print_timing, read_token

    if cloud_url is None and (out / "plans.json").is_file():
        fallback = "local"  # a bandwidth-range output without a server: its first plan, all here
    if cloud_url is None and fallback is None:
        pipeline = Pipeline(out)
        feeds = _run_inputs(input, pipeline.plan["edge"]["inputs"])
        for _ in range(warmup):
            pipeline.run(feeds)
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            outputs = pipeline.run(feeds)
            times.append((time.perf_counter() - start) * 1e3)
        if repeat > 1:
            print_repeated(console, [{"total_ms": t} for t in times], warmup)
    else:
        with EdgeClient(out, cloud_url, token=read_token(token_file), timeout=timeout, retries=retries,
                        fallback=fallback) as client:
            feeds = _run_inputs(input, client.input_specs)
            for _ in range(warmup):
                client.infer(feeds)
            results = [client.infer(feeds) for _ in range(repeat)]
        result = results[-1]
        outputs = result.outputs
        print_timing(console, result)
        if repeat > 1:
            print_repeated(console, [r.timing() for r in results], warmup)
    if save is not None:
        import numpy as np

        np.savez(save, **outputs)
    print_outputs(console, outputs)


def _run_inputs(specs: list[str], inputs: list[dict]) -> dict:
    """``--input`` values: .npy arrays, or image files (their paths: the runtime loads and prepares them
    as the plan's ``preprocess`` says)."""
    from splitc.report import read_inputs
    from splitc.runtime.image_input import is_image

    names = [i["name"] for i in inputs]
    feeds = read_inputs([s for s in specs if not is_image(s.partition("=")[2] or s)], names)
    for spec in (s for s in specs if is_image(s.partition("=")[2] or s)):
        name, sep, file = spec.partition("=")
        name, file = (name, file) if sep else (names[0], spec)
        shape = next((i for i in inputs if i["name"] == name), None)
        if shape is None:
            raise SplitcError(f"--input {spec!r}: the model has no input {name!r}")
        if not Path(file).is_file():
            raise SplitcError(f"--input {spec!r}: no such file {file}")
        feeds[name] = file
    return feeds


@app.command("serve")
def serve_command(
    out: Path = typer.Argument(..., help="A splitc output directory (one plan or a bandwidth range)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind (0.0.0.0 to accept remote clients)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    token_file: Optional[Path] = typer.Option(None, "--token-file", help="Require this bearer token (file content)."),
    tls_cert: Optional[Path] = typer.Option(None, "--tls-cert", help="TLS certificate (PEM); needs --tls-key."),
    tls_key: Optional[Path] = typer.Option(None, "--tls-key", help="TLS private key (PEM)."),
    max_body: str = typer.Option("64MB", "--max-body", help="Largest accepted request body: 64MB, 512KB."),
    threads: int = typer.Option(0, "--threads", help="Requests run at once (0: one per core)."),
    reply_bits: int = typer.Option(32, "--reply-bits", help="Float outputs on the wire: 32 (exact) or 16."),
    engine: str = typer.Option("uvicorn", "--engine", help="uvicorn (one process) or ray (Ray Serve: "
                               "docs/scaling.md)."),
    replicas: int = typer.Option(1, "--replicas", help="ray: replicas per plan."),
    autoscale: Optional[str] = typer.Option(None, "--autoscale", help="ray: MIN..MAX replicas per plan, by load."),
    batch_max: int = typer.Option(1, "--batch-max", help="ray: requests per onnxruntime call (1: no batching)."),
    batch_wait_ms: float = typer.Option(5.0, "--batch-wait-ms", help="ray: longest wait to fill a batch (ms)."),
    address: Optional[str] = typer.Option(None, "--address", help="ray: join this cluster (HOST:PORT or auto)."),
) -> None:
    """Serve the cloud halves of OUT over HTTP (POST /v1/infer, GET /v1/plans, /healthz, /metrics)."""
    from splitc.runtime.server import serve
    from splitc.stitch_report import parse_size, print_serving, read_token

    if engine == "ray":
        return _serve_ray(out, host, port, token_file, tls_cert, tls_key, max_body, reply_bits, replicas, autoscale,
                          batch_max, batch_wait_ms, address)
    if engine != "uvicorn":
        raise SplitcError(f"--engine must be uvicorn or ray, not {engine!r}")
    print_serving(errors, out, host, port, tls_cert is not None, token_file is not None)
    serve(out, host, port, read_token(token_file), str(tls_cert) if tls_cert else None,
          str(tls_key) if tls_key else None, parse_size(max_body), threads or None, reply_bits)


def _serve_ray(out, host, port, token_file, tls_cert, tls_key, max_body, reply_bits, replicas, autoscale, batch_max,
               batch_wait_ms, address) -> None:
    """``splitc serve --engine ray`` (splitc/runtime/ray_engine.py); its errors are one line, exit 2."""
    from splitc.runtime import ray_engine
    from splitc.stitch_report import parse_size, print_serving, read_token

    try:
        ray_engine.require_ray()
        options = ray_engine.RayOptions(replicas=replicas, batch_max=batch_max, batch_wait_ms=batch_wait_ms,
                                        address=address,
                                        autoscale=ray_engine.parse_autoscale(autoscale) if autoscale else None)
        if autoscale and replicas != 1:
            raise ray_engine.EngineError("give --replicas or --autoscale, not both")
        options.check()
        if address:
            ray_engine.check_address(address, options.connect_timeout_s)
        print_serving(errors, out, host, port, tls_cert is not None, token_file is not None)
        ray_engine.serve_ray(out, host, port, read_token(token_file), str(tls_cert) if tls_cert else None,
                             str(tls_key) if tls_key else None, parse_size(max_body), reply_bits, options,
                             announce=lambda line: errors.print(line, highlight=False))
    except ray_engine.EngineError as exc:
        raise SplitcError(str(exc)) from None


@app.command("netem")
def netem_command(
    listen: str = typer.Option("127.0.0.1:9001", "--listen", help="HOST:PORT the proxy accepts on."),
    to: str = typer.Option("127.0.0.1:8000", "--to", help="HOST:PORT it forwards to."),
    bw: Optional[str] = typer.Option(None, "--bw", help="Rate of each direction: 5Mbps, 300KBps (default: unlimited)."),
    rtt: str = typer.Option("0ms", "--rtt", help="Round-trip time added: 40ms (half each way)."),
) -> None:
    """A user-space TCP proxy that emulates a link: token-bucket rate and delay per direction."""
    from splitc.runtime.netem import run
    from splitc.stitch_report import parse_host_port
    from splitc.units import parse_bandwidth, parse_time_ms

    rate = parse_bandwidth(bw) if bw else None
    errors.print(f"netem: {listen} -> {to}, {bw or 'unlimited'}, {rtt} RTT (Ctrl-C stops)")
    run(parse_host_port(listen), parse_host_port(to), rate, parse_time_ms(rtt))


@app.command("schedule")
def schedule_command(
    scenario: Path = typer.Argument(..., help="Scenario JSON (docs/three-tier.md)."),
    policy: str = typer.Option("all", "--policy", help="splitc, deepar, ilp, device-only, edge-only, cloud-only or all."),
    ilp_limit: float = typer.Option(60.0, "--ilp-limit", help="CBC time limit in seconds."),
    as_json: bool = typer.Option(False, "--json", help="Print the schedules as JSON."),
) -> None:
    """Schedule many devices' tasks on edge servers and the cloud (three-tier split per task)."""
    from splitc.schedule.policies import run_policy
    from splitc.schedule.scenario import load_scenario

    scn = load_scenario(scenario)
    names = ["device-only", "edge-only", "cloud-only", "deepar", "splitc", "ilp"] if policy == "all" else [policy]
    results = [run_policy(scn, name, ilp_limit) for name in names]
    if as_json:
        console.print_json(json.dumps({"warnings": scn.warnings, "schedules": [r.to_dict(scn) for r in results]}))
        return
    for warning in scn.warnings:
        errors.print(f"warning: {warning}")
    for r in results:
        flag = "" if r.optimal is None else (" (optimal)" if r.optimal else f" ({r.note})")
        console.print(f"{r.policy:14s} total {r.total_s:10.2f} s   mean {r.mean_s:8.3f} s{flag}")


@app.command("bench")
def bench_command(
    model: Path = typer.Argument(..., help="The ONNX model to benchmark end to end."),
    target: str = typer.Option(DEFAULT_EDGE, "--target", "-t", help="Edge device to emulate."),
    cloud: str = typer.Option(DEFAULT_CLOUD, "--cloud", "-c", help="Cloud device to emulate."),
    bw: str = typer.Option("300KBps,1MBps,5Mbps", "--bw", help="Bandwidths to measure, comma-separated."),
    rtt: str = typer.Option("20ms", "--rtt", help="Round-trip time of the emulated link."),
    calib: Optional[Path] = typer.Option(None, "--calib", help="Calibration data (.npz) for the compile."),
    test: Optional[Path] = typer.Option(None, "--test", help="Held-out data (.npz) for accuracy (default: --calib)."),
    max_drop: str = typer.Option("1%", "--max-drop", help="Accuracy bound of the compile."),
    requests: int = typer.Option(20, "--requests", help="Timed requests per configuration."),
    out: Path = typer.Option(Path("bench-out"), "--output", "-o", help="Folder for the plans, table and plot."),
    host_profile: Optional[Path] = typer.Option(
        None, "--host-profile", help="`splitc profile` of MODEL on this machine, for the device emulation "
        "(default: measured now and kept in the output folder)."),
    edge_precision: str = typer.Option("fp32", "--edge-precision", help="fp32 or fp16: splitc's edge halves."),
) -> None:
    """Measure splitc's plan against Origin2Cloud, PNG2Cloud, JPEG2Cloud and edge-only through netem."""
    from splitc.tools.bench_e2e import BenchConfig, run_bench
    from splitc.units import parse_bandwidth, parse_time_ms

    config = BenchConfig(model, target, cloud, sorted(parse_bandwidth(b) for b in bw.split(",") if b.strip()),
                         parse_time_ms(rtt), calib, test or calib, parse_fraction(max_drop), requests, out,
                         host_profile=host_profile, edge_precision=edge_precision)
    report = run_bench(config, progress=lambda line: errors.print(line, highlight=False))
    print(report)


@app.command("profile")
def profile_command(
    model: Path = typer.Argument(..., help="The ONNX model to measure on this machine."),
    out: Path = typer.Option(..., "--output", "-o", help="The profile to write (a .json file)."),
    runs: int = typer.Option(50, "--runs", help="Timed runs per measurement (medians and p10/p90 over them)."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed runs before each measurement."),
    threads: int = typer.Option(0, "--threads", help="onnxruntime intra-op threads (0: its default; 1 is steadiest)."),
    min_time: float = typer.Option(0.25, "--min-time", help="Each timing also lasts at least this many seconds."),
    clock: str = typer.Option("auto", "--clock", help="auto (cpu with --threads 1, else wall), wall or cpu."),
    input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", help="NAME=1x3x224x224 (repeatable)."),
    provider: str = typer.Option("CPUExecutionProvider", "--provider", help="onnxruntime execution provider."),
    name: Optional[str] = typer.Option(None, "--name", help="Device name recorded in the profile (default: file stem)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Measure MODEL with onnxruntime here; --target/--cloud accept the profile it writes."""
    from splitc.profiling.command import run_profile

    quiet = as_json or not errors.is_terminal
    summary = run_profile(model, out, errors, quiet, runs=runs, warmup=warmup, threads=threads, min_seconds=min_time,
                          clock=clock, input_shapes=_shapes(input_shape), provider=provider, name=name)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        console.print(f"profiled [bold]{summary['model']}[/]: {summary['nodes']} nodes, {summary['cut_vertices']} "
                      f"cut vertices, whole model {summary['whole_model_ms']:.3f} ms on {summary['cpu']} "
                      f"({summary['matmul_gflops']:.1f} GFLOP/s, {summary['copy_gbps']:.1f} GB/s); wrote [green]{out}[/]")


class _progress:
    """A rich status line that names the current stage (silent when not a terminal)."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.status = None

    def __enter__(self):
        from splitc.calibration import calibrate

        self.hook = calibrate.reporting(self.calibration)
        self.hook.__enter__()
        if not self.quiet:
            self.status = errors.status("starting")
            self.status.__enter__()
        return self.update

    def update(self, stage: str) -> None:
        if self.status is not None:
            self.status.update(stage)

    def calibration(self, done: int, total: int, elapsed_s: float) -> None:
        """Calibration's count of cuts measured, with the time left at the rate so far."""
        left = elapsed_s / done * (total - done) if done else 0.0
        self.update(f"calibrating: {done}/{total} candidate cuts measured, about {left:.0f} s left")

    def __exit__(self, *exc) -> None:
        if self.status is not None:
            self.status.__exit__(*exc)
        self.hook.__exit__(*exc)


def _user_errors() -> tuple[type[Exception], ...]:
    from splitc.runtime.pipeline import InputError, PlanError

    from splitc.runtime.client import CloudError
    from splitc.runtime.tvm_half import TvmHalfError

    return (SplitcError, PlanError, InputError, FileNotFoundError, CloudError, TvmHalfError)


def _usage_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """Usage-error and abort classes: typer's own (typer >= 0.26 vendors click), else click's."""
    usage = tuple(c for c in (getattr(typer, "TyperException", None),) if c is not None)
    aborts = tuple(c for c in (getattr(typer, "Abort", None),) if c is not None)
    try:
        import click
    except ImportError:
        return usage, aborts
    return usage + (click.ClickException,), aborts + (click.exceptions.Abort,)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``splitc`` console script; user errors exit with code 2."""
    usage_errors, aborts = _usage_errors()
    global STARTED
    STARTED = time.monotonic()
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("--version", "-V", "version"):
        from splitc import __version__

        print(f"splitc {__version__}")
        return 0
    if args and args[0] not in COMMANDS and not args[0].startswith("-"):
        args.insert(0, "compile")
    try:
        result = app(args=args, prog_name="splitc", standalone_mode=False)
    except _user_errors() as exc:
        from rich.markup import escape  # messages may hold brackets: pip install 'splitc[tvm]'

        errors.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True, markup=True)
        return 2
    except aborts:
        errors.print("aborted")
        return 1
    except usage_errors as exc:
        show = getattr(exc, "show", None)
        if show is None:
            errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        else:
            show()
        return 2
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
