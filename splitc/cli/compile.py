"""``splitc compile`` (and ``splitc MODEL``): split a model and write its halves."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import List, Optional

import typer

from splitc.cli.common import (
    _bits,
    _cut,
    _print_warnings,
    _progress,
    _shapes,
    _wall_time,
    app,
    console,
    errors,
)
from splitc.errors import SplitcError
from splitc.options import DEFAULTS, CompileOptions
from splitc.units import parse_fraction


@app.command("compile")
# Over 60 lines on purpose: typer declares every flag as a parameter; the body is a few lines.
def compile_command(
    model: Path = typer.Argument(..., help="The ONNX model to split."),
    target: str = typer.Option(DEFAULTS.target, "--target", "-t", help="Edge device (see `splitc targets`)."),
    cloud: str = typer.Option(DEFAULTS.cloud, "--cloud", "-c", help="Cloud device (see `splitc targets`)."),
    bw: str = typer.Option(DEFAULTS.bandwidth, "--bw", help="Link bandwidth: 300KBps, 5Mbps, 1.5Gbps (b = bits, B = bytes)."),
    rtt: str = typer.Option(DEFAULTS.rtt, "--rtt", help="Round-trip time of the link: 20ms, 0.1s."),
    input_shape: Optional[List[str]] = typer.Option(
        None, "--input-shape", help="Fix an input's shape: NAME=1x3x224x224 (repeatable)."
    ),
    cut: Optional[str] = typer.Option(
        None, "--cut", help="Force the tensors to send: T1[,T2...]; 'none' runs everything on the edge."
    ),
    out: Path = typer.Option(Path("out"), "--output", "-o", help="Output directory (replaced atomically)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan summary as JSON instead of tables."),
    bits: str = typer.Option(str(DEFAULTS.bits), "--bits", help="Bits per element of the cut tensor: auto, 1..8, 16 or 32 (raw)."),
    codec: str = typer.Option(DEFAULTS.codec, "--codec", help="Entropy coder for quantized cuts: huffman or none."),
    calib: Optional[Path] = typer.Option(
        None, "--calib", help="Calibration data: .npz keyed by input names, optionally with 'labels'."
    ),
    max_drop: str = typer.Option(f"{DEFAULTS.max_drop:.0%}", "--max-drop", help="Largest accepted accuracy drop: 1% or 0.01."),
    confidence: str = typer.Option(
        f"{DEFAULTS.confidence:.0%}", "--confidence", help="Level of the certified upper bound on the drop that must be within --max-drop."
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show secondary columns (kind, per-side times)."),
    metric: str = typer.Option(DEFAULTS.metric, "--metric", help="Accuracy metric: auto, top1 (classifiers) or rel-l2."),
    per_channel: bool = typer.Option(False, "--per-channel", help="Quantize with a min/max per channel."),
    edge_precision: str = typer.Option(
        DEFAULTS.edge_precision, "--edge-precision", help="fp32, or fp16: the edge half in float16 (targets with an FP16 rate)."
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
    compress: str = typer.Option(
        "none", "--compress", help="Edge rewrites the compile may choose among, measured on --calib: auto, none, or a "
        "list of bottleneck,lowrank,prune,int8,fp16 (docs/compression.md).",
    ),
    tiers: Optional[str] = typer.Option(
        None, "--tiers", help="Three tiers DEVICE,EDGE,CLOUD (targets): split across device, edge server and cloud."
    ),
    link: Optional[List[str]] = typer.Option(
        None, "--link", help="With --tiers: device-edge=20Mbps/5ms and edge-cloud=200Mbps/30ms (repeatable)."
    ),
) -> None:
    """Split MODEL between an edge device and the cloud and write the halves to -o.

    A range --bw LOW..HIGH (300KBps..50Mbps) writes every plan that is optimal somewhere in it.
    """
    rewrites = _compress(compress, tiers is not None or bool(link), bw)
    if tiers is not None or link:  # three tiers: splitc/cli/tiers.py
        from splitc.cli.tiers import tiers_command
        return tiers_command(**locals())
    options = CompileOptions(
        target=target, cloud=cloud, bandwidth=bw, rtt=rtt, input_shapes=_shapes(input_shape), cut=_cut(cut),
        bits=_bits(bits), codec=codec, calib=calib, max_drop=parse_fraction(max_drop),
        confidence=parse_fraction(confidence), metric=metric, per_channel=per_channel,
        cache_dir=out if out.is_dir() else None, preprocess=preprocess, jpeg=jpeg, edge_precision=edge_precision,
        emit_fallback=emit_fallback, compress=rewrites,
    )
    if backend == "tvm":  # fail before compiling: TVM missing, or a --bw range (not supported with TVM)
        _check_tvm(options)
    quiet = as_json or not console.is_terminal
    if ".." in bw:
        _compile_range(model, options, out, quiet, as_json, verbose)
    else:
        _compile_one(model, options, out, quiet, as_json, verbose, backend, tvm_fallback)


def _compress(value: str, tiers: bool, bw: str) -> tuple[str, ...]:
    """The ``--compress`` names; refused with three tiers or a --bw range, which compile one variant."""
    from splitc.compress.names import parse_compress

    names = parse_compress(value)
    if names and tiers:
        raise SplitcError("--compress does not apply with --tiers")
    if names and ".." in bw:
        raise SplitcError("--compress takes a single --bw rate, not a range")
    return names


def _check_tvm(options: CompileOptions) -> None:
    from splitc.backends.tvm.build import require_tvm

    require_tvm()
    if ".." in str(options.bandwidth):
        raise SplitcError("--backend tvm takes a single --bw rate, not a range")
    if options.edge_precision != "fp32":
        raise SplitcError("--backend tvm builds float32 halves; use --edge-precision fp32 (or --backend onnx)")


def _compile_range(model: Path, options: CompileOptions, out: Path, quiet: bool, as_json: bool,
                   verbose: bool) -> None:
    from splitc.adaptive import compile_range
    from splitc.cli.report import print_deployment, skipped_line
    from splitc.cli.stitch_report import print_range_report, range_summary

    with _progress(quiet) as step, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        result = compile_range(model, str(options.bandwidth), options, progress=step)
        step("writing the output directory")
        result.save(out)
    _print_warnings(caught)
    if as_json:
        print(json.dumps(range_summary(result, out), indent=2))
        return
    print_range_report(console, result, out, typed=str(options.bandwidth), verbose=verbose)
    line = skipped_line(result.calibration)
    if line:
        console.print(line, highlight=False)
    if result.plot_path is not None:
        console.print(f"latency vs bandwidth plot: {result.plot_path}", highlight=False)
    else:
        errors.print(f"[yellow]warning:[/] no latency plot: {result.plot_missing}", highlight=False)
    print_deployment(console, out)
    console.print(f"done in {_wall_time()}", highlight=False)


def _compile_one(model: Path, options: CompileOptions, out: Path, quiet: bool, as_json: bool, verbose: bool,
                 backend: str, tvm_fallback: str | None) -> None:
    from splitc.api import compile as compile_model
    from splitc.cli.report import compile_summary, print_compile_report, print_deployment, skipped_line
    from splitc.profiling.command import cost_warnings

    with _progress(quiet) as step, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        split = compile_model(model, options, progress=step)
        step("writing the output directory")
        split.save(out, backend=backend, tvm_fallback=tvm_fallback)
    _print_warnings(caught)
    for line in cost_warnings(split.plan):
        errors.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps(compile_summary(split, out), indent=2))
        return
    print_compile_report(console, split, out, verbose=verbose, link_text=(str(options.bandwidth), str(options.rtt)))
    line = skipped_line(split.files.get("calibration.json"))
    if line:
        console.print(line, highlight=False)
    print_deployment(console, out)
    console.print(f"done in {_wall_time()} (partitioning {split.plan['solve_ms']:.0f} ms)", highlight=False)
