"""Write an output directory atomically: build it aside, then rename it into place.

Every directory splitc writes holds a marker, ``.splitc-output.json``: the schema
``splitc.output/1`` and the list of the files splitc wrote there. An existing
output directory is replaced only when it is empty, or when its marker is valid
and the directory holds nothing but the files the marker lists (some may be
gone). Anything else - a ``plan.json`` from elsewhere, a user's file beside a
real output - makes the write fail with a ``SplitcError`` and nothing is deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from splitc.errors import SplitcError

MARKER = ".splitc-output.json"
MARKER_SCHEMA = "splitc.output/1"


def write_directory(out_dir: str | Path, fill: Callable[[Path], None]) -> Path:
    """Call ``fill(tmp)`` on a fresh directory beside ``out_dir``, then swap it in.

    An existing ``out_dir`` is replaced only if it is empty or provably an
    earlier splitc output (see the module docstring); if ``fill`` fails
    nothing is left behind.
    """
    out = Path(out_dir)
    _check_replaceable(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    except OSError as exc:
        raise SplitcError(f"cannot write the output directory {out}: {exc.strerror or exc} "
                          f"(in {out.parent})") from exc
    try:
        fill(tmp)
        write_marker(tmp)
        os.chmod(tmp, 0o755)
        if out.exists():
            _check_replaceable(out)  # again: it may have changed while fill ran
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except PermissionError as exc:
        raise SplitcError(f"cannot write the output directory {out}: {exc.strerror or exc}") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def write_marker(directory: Path) -> None:
    """Record every file under ``directory`` in its marker."""
    files = sorted(_files(directory) - {MARKER})
    (directory / MARKER).write_text(json.dumps({"schema": MARKER_SCHEMA, "files": files}, indent=1) + "\n")


def _files(directory: Path) -> set[str]:
    """Relative POSIX paths of everything under ``directory`` but directories (links and the like included)."""
    found = set()
    for root, dirs, names in os.walk(directory):
        base = Path(root)
        for name in names + [d for d in dirs if (base / d).is_symlink()]:
            found.add((base / name).relative_to(directory).as_posix())
    return found


def _listed_files(out: Path) -> set[str] | None:
    """The files the marker of ``out`` lists, or None without a valid marker."""
    try:
        marker = json.loads((out / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("schema") != MARKER_SCHEMA:
        return None
    files = marker.get("files")
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
        return None
    return set(files)


def _check_replaceable(out: Path) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise SplitcError(f"output {out} exists and is not a directory")
    if not out.is_dir():
        return
    try:
        present = _files(out)
        empty_dirs = [d for d in out.rglob("*") if d.is_dir() and not d.is_symlink() and not any(d.iterdir())]
    except OSError as exc:
        raise SplitcError(f"cannot read the output directory {out}: {exc.strerror or exc}") from exc
    if not present and not empty_dirs:
        return  # empty
    listed = _listed_files(out)
    if listed is None:
        raise SplitcError(f"output directory {out} is not empty and is not a splitc output (no valid {MARKER}); "
                          f"choose another -o")
    extra = sorted((present - {MARKER}) - listed) + sorted(d.relative_to(out).as_posix() for d in empty_dirs)
    if extra:
        raise SplitcError(f"output directory {out} holds {extra[0]!r}, which splitc did not write; "
                          f"nothing was replaced (choose another -o or move the file)")
