"""What every command shares: the typer app, the consoles, option parsers, warnings and the progress line."""

from __future__ import annotations

import time

import typer
from rich.console import Console

from splitc.errors import SplitcError
from splitc.units import parse_shape

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Compile ONNX models into edge and cloud halves for split inference.\n\n"
    "splitc MODEL [options] is short for splitc compile MODEL [options]. splitc --version prints the version.",
)
console = Console()
errors = Console(stderr=True)
COMMANDS = {"compile", "inspect", "targets", "run", "profile", "serve", "netem", "bench", "schedule", "tree"}
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


def _print_warnings(caught) -> None:
    """Each warning as one ``warning:`` line (never Python's file:line form)."""
    seen = set()
    for warning in caught:
        text = str(warning.message)
        if text not in seen:
            seen.add(text)
            errors.print(f"[yellow]warning:[/] {text}", highlight=False, soft_wrap=True, markup=True)


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
