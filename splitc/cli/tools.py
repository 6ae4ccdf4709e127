"""``splitc schedule``, ``splitc bench`` and ``splitc profile``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from splitc.cli.common import (
    _shapes,
    app,
    console,
    errors,
)
from splitc.targets import DEFAULT_CLOUD, DEFAULT_EDGE
from splitc.units import parse_fraction


@app.command("schedule")
def schedule_command(
    scenario: Path = typer.Argument(..., help="Scenario JSON (docs/three-tier.md)."),
    policy: str = typer.Option("all", "--policy", help="splitc, splitc-greedy, deepar, ilp, device-only, edge-only, cloud-only or all."),
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
