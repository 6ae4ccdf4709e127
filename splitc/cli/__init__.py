"""The ``splitc`` command line: a thin layer over the Python API.

``splitc MODEL ...`` is the same as ``splitc compile MODEL ...``. Each command lives in its own module
(``compile``, ``info``, ``run``, ``serve``, ``tools``), registered on the one typer ``app`` of ``common``;
``report`` and ``stitch_report`` print what the commands return.
"""

from __future__ import annotations

import sys
import time

import typer

from splitc.cli import common
from splitc.cli import compile as _compile  # noqa: F401  (registers the command)
from splitc.cli import info as _info  # noqa: F401
from splitc.cli import run as _run  # noqa: F401
from splitc.cli import serve as _serve  # noqa: F401
from splitc.cli import tools as _tools  # noqa: F401
from splitc.cli import tree as _tree  # noqa: F401
from splitc.cli.common import COMMANDS, app, errors
from splitc.errors import SplitcError

__all__ = ["app", "main"]


def _user_errors() -> tuple[type[Exception], ...]:
    from splitc.runtime.client import CloudError
    from splitc.runtime.pipeline import InputError, PlanError
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
    common.STARTED = time.monotonic()
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
        from rich.markup import (
            escape,  # messages may hold brackets: pip install 'splitc[tvm]'
        )

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

