"""``splitc inspect`` and ``splitc targets``: read-only reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from splitc.cli.common import (
    _shapes,
    app,
    console,
)


@app.command("inspect")
def inspect_command(
    model: Path = typer.Argument(..., help="The ONNX model to inspect."),
    input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", help="NAME=1x3x224x224 (repeatable)."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of tables."),
    limit: int = typer.Option(20, "--limit", help="Cut-vertex rows shown (0: all; --json lists all)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also show each cut vertex's producer node."),
) -> None:
    """Show node count, FLOPs, cut vertices with their sizes, and atomic or custom ops."""
    from splitc.cli.inspect_report import inspect_model, print_inspect_report

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
    from splitc.cli.inspect_report import print_targets
    from splitc.targets import TARGETS

    if as_json:
        print(json.dumps([t.to_dict() for t in TARGETS.values()], indent=2))
    else:
        print_targets(console, verbose)
