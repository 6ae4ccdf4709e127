"""The ``splitc profile`` command's body, and the warnings ``splitc compile`` prints about profiles."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from splitc.profiling.measure import profile_model
from splitc.cost.schema import ProfileError
from splitc.profiling.timing import CLOCKS


class RichReporter:
    """A rich progress bar per stage (on stderr)."""

    def __init__(self, console: Console) -> None:
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=False)
        self.task = None

    def __enter__(self) -> "RichReporter":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def stage(self, description: str, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[-1].total)
        self.task = self.progress.add_task(description, total=max(total, 1))

    def advance(self, steps: int = 1) -> None:
        if self.task is not None:
            self.progress.advance(self.task, steps)


def write_profile(document: dict, out: Path) -> None:
    """Write the profile atomically (a temporary file beside it, then rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{out.name}.", dir=out.parent)
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        json.dump(document, stream, indent=1)
        stream.write("\n")
    os.replace(tmp, out)


def run_profile(model: Path, out: Path, console: Console, quiet: bool, *, runs: int, warmup: int, threads: int,
                min_seconds: float, clock: str, input_shapes: dict, provider: str, name: str | None) -> dict:
    """Profile ``model`` here and write the profile to ``out``; returns a short summary."""
    if not str(out).lower().endswith(".json"):
        raise ProfileError(f"profile output {out}: the file name must end in .json (that is how --target knows it)")
    if runs < 1 or warmup < 0 or threads < 0 or min_seconds < 0:
        raise ProfileError("profile: --runs must be at least 1; --warmup, --threads and --min-time at least 0")
    if clock not in CLOCKS:
        raise ProfileError(f"profile: --clock must be one of {', '.join(CLOCKS)}, not {clock!r}")
    config = dict(runs=runs, threads=threads, warmup=warmup, input_shapes=input_shapes, provider=provider,
                  name=name or out.stem, min_seconds=min_seconds, clock=clock)
    if quiet:
        document = profile_model(model, **config)
    else:
        with RichReporter(console) as reporter:
            document = profile_model(model, reporter=reporter, **config)
    write_profile(document, out)
    return {
        "output": str(out), "model": document["model"]["name"], "nodes": len(document["nodes"]),
        "cut_vertices": len(document["segments"]["cut_vertices"]),
        "whole_model_ms": document["whole_model"]["median_ms"],
        "cpu": document["machine"]["cpu"], "matmul_gflops": document["machine"]["matmul_gflops"],
        "copy_gbps": document["machine"]["copy_gbps"],
    }


def cost_warnings(plan: dict) -> list[str]:
    """One line per half whose profile lacked nodes (they were priced by the host roofline)."""
    lines = []
    for side in ("edge", "cloud"):
        model = (plan.get(side) or {}).get("cost_model", {})
        missing = model.get("fallback_nodes") or []
        if missing:
            shown = ", ".join(missing[:3]) + (f" (+{len(missing) - 3})" if len(missing) > 3 else "")
            lines.append(f"{side} profile {model['profile']['path']} has no times for {len(missing)} node(s) "
                         f"({shown}); they use the host-calibrated roofline")
    return lines
