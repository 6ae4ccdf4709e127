"""Cut widths as the calibration tables and plans name them: a bit width (an int) or JPEG at a quality."""

from __future__ import annotations


def jpeg_width(quality: int) -> str:
    """The calibration width that names JPEG coding at ``quality`` (bit widths are ints)."""
    return f"jpeg{int(quality)}"


def jpeg_quality(width: int | str) -> int:
    """The JPEG quality a width names (0 for a bit width)."""
    if not isinstance(width, str):
        return 0
    if not width.startswith("jpeg"):
        raise ValueError(f"unknown width {width!r}")
    return int(width[4:])


def width_order(width: int | str) -> tuple[int, int]:
    """Sort key of widths: bit widths ascending, then JPEG qualities ascending."""
    return (1, jpeg_quality(width)) if isinstance(width, str) else (0, int(width))
