"""``splitc run``: run a compiled split here, or its edge half here and its cloud half on a server."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from splitc.cli.common import (
    app,
    console,
)
from splitc.errors import SplitcError


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

    from splitc.cli.report import print_outputs
    from splitc.cli.stitch_report import print_repeated, print_timing, read_token
    from splitc.runtime import EdgeClient, Pipeline

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
    from splitc.cli.report import read_inputs
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
