"""The ``splitc`` command line: a thin layer over the Python API.

``splitc MODEL ...`` is the same as ``splitc compile MODEL ...``.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from splitc.errors import SplitcError
from splitc.units import parse_fraction, parse_shape

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Compile ONNX models into edge and cloud halves for split inference.\n\n"
    "splitc MODEL [options] is short for splitc compile MODEL [options].",
)
console = Console()
errors = Console(stderr=True)
COMMANDS = {"compile", "inspect", "targets", "run", "profile"}


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
    target: str = typer.Option("jetson-tx2", "--target", "-t", help="Edge device (see `splitc targets`)."),
    cloud: str = typer.Option("t4", "--cloud", "-c", help="Cloud device (see `splitc targets`)."),
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
    metric: str = typer.Option("auto", "--metric", help="Accuracy metric: auto, top1 (classifiers) or rel-l2."),
    per_channel: bool = typer.Option(False, "--per-channel", help="Quantize with a min/max per channel."),
    preprocess: Optional[str] = typer.Option(
        None, "--preprocess", help="For a --calib folder of images: mean=a/b/c,std=a/b/c,layout=nchw|nhwc,scale=255."
    ),
) -> None:
    """Split MODEL between an edge device and the cloud and write the halves to -o."""
    from splitc.api import compile as compile_model
    from splitc.report import compile_summary, print_compile_report

    quiet = as_json or not console.is_terminal
    with _progress(quiet) as step, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        split = compile_model(
            model, target=target, cloud=cloud, bandwidth=bw, rtt=rtt,
            input_shapes=_shapes(input_shape), cut=_cut(cut), progress=step,
            bits=_bits(bits), codec=codec, calib=calib, max_drop=parse_fraction(max_drop), metric=metric,
            per_channel=per_channel, cache_dir=out if out.is_dir() else None, preprocess=preprocess,
        )
        step("writing the output directory")
        split.save(out)
    for warning in caught:
        errors.print(f"[yellow]warning:[/] {warning.message}", highlight=False, soft_wrap=True)
    from splitc.profiling.command import cost_warnings

    for line in cost_warnings(split.plan):
        errors.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps(compile_summary(split, out), indent=2))
    else:
        print_compile_report(console, split, out)


@app.command("inspect")
def inspect_command(
    model: Path = typer.Argument(..., help="The ONNX model to inspect."),
    input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", help="NAME=1x3x224x224 (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
) -> None:
    """Show node count, FLOPs, cut vertices with their sizes, and atomic or custom ops."""
    from splitc.report import inspect_model, print_inspect_report

    info = inspect_model(model, _shapes(input_shape))
    if as_json:
        print(json.dumps(info, indent=2))
    else:
        print_inspect_report(console, info)


@app.command("targets")
def targets_command(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List the built-in device targets and the figures behind them."""
    from splitc.report import print_targets
    from splitc.targets import TARGETS

    if as_json:
        print(json.dumps([t.to_dict() for t in TARGETS.values()], indent=2))
    else:
        print_targets(console)


@app.command("run")
def run_command(
    out: Path = typer.Argument(..., help="A splitc output directory."),
    input: List[str] = typer.Option(..., "--input", "-i", help="NAME=file.npy, or file.npy for a one-input model."),
    local: bool = typer.Option(True, "--local", help="Run both halves in this process."),
    save: Optional[Path] = typer.Option(None, "--save", help="Write the outputs to this .npz file."),
) -> None:
    """Run a compiled split on .npy inputs, edge half then cloud half."""
    from splitc.report import print_outputs, read_inputs
    from splitc.runtime import Pipeline

    pipeline = Pipeline(out)
    feeds = read_inputs(input, [i["name"] for i in pipeline.plan["model"]["inputs"]])
    outputs = pipeline.run(feeds)
    if save is not None:
        import numpy as np

        np.savez(save, **outputs)
    print_outputs(console, outputs)


@app.command("profile")
def profile_command(
    model: Path = typer.Argument(..., help="The ONNX model to measure on this machine."),
    out: Path = typer.Option(..., "--output", "-o", help="The profile to write (a .json file)."),
    runs: int = typer.Option(50, "--runs", help="Timed runs per measurement (medians and p10/p90 over them)."),
    warmup: int = typer.Option(5, "--warmup", help="Untimed runs before each measurement."),
    threads: int = typer.Option(0, "--threads", help="onnxruntime intra-op threads (0: its default; 1 is steadiest)."),
    min_time: float = typer.Option(0.25, "--min-time", help="Each timing also lasts at least this many seconds."),
    input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", help="NAME=1x3x224x224 (repeatable)."),
    provider: str = typer.Option("CPUExecutionProvider", "--provider", help="onnxruntime execution provider."),
    name: Optional[str] = typer.Option(None, "--name", help="Device name recorded in the profile (default: file stem)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Measure MODEL with onnxruntime here; --target/--cloud accept the profile it writes."""
    from splitc.profiling.command import run_profile

    quiet = as_json or not errors.is_terminal
    summary = run_profile(model, out, errors, quiet, runs=runs, warmup=warmup, threads=threads, min_seconds=min_time,
                          input_shapes=_shapes(input_shape), provider=provider, name=name)
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
        if not self.quiet:
            self.status = errors.status("starting")
            self.status.__enter__()
        return self.update

    def update(self, stage: str) -> None:
        if self.status is not None:
            self.status.update(stage)

    def __exit__(self, *exc) -> None:
        if self.status is not None:
            self.status.__exit__(*exc)


def _user_errors() -> tuple[type[Exception], ...]:
    from splitc.runtime.pipeline import InputError, PlanError

    return (SplitcError, PlanError, InputError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``splitc`` console script; user errors exit with code 2."""
    import click

    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] not in COMMANDS and not args[0].startswith("-"):
        args.insert(0, "compile")
    try:
        result = app(args=args, prog_name="splitc", standalone_mode=False)
    except _user_errors() as exc:
        errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True, markup=True)
        return 2
    except click.ClickException as exc:
        exc.show()
        return 2
    except click.exceptions.Abort:
        errors.print("aborted")
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
