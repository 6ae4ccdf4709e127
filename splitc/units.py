"""Parsing of bandwidth, time and shape strings given on the command line."""

from __future__ import annotations

import math
import re

from splitc.errors import ParseError

_RATE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([kKmMgGtT]?)(bps|Bps|B/s|b/s)\s*$")
_TIME = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(us|µs|ms|s)\s*$")
_PREFIX = {"": 1.0, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}
_TIME_UNIT = {"us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1e3}


def parse_bandwidth(text: str) -> float:
    """Parse a rate such as ``5Mbps`` or ``300KBps`` into bytes per second.

    A lower-case ``b`` counts bits and an upper-case ``B`` counts bytes, so
    ``500kbps`` is 62,500 B/s and ``300KBps`` is 300,000 B/s. Prefixes are
    decimal (k = 1000) and their case does not matter.
    """
    match = _RATE.match(str(text))
    if not match:
        raise ParseError(
            f"bad bandwidth {text!r}: expected a number and a unit such as 5Mbps, 300KBps or 1.5Gbps"
        )
    number, prefix, unit = match.groups()
    value = float(number) * _PREFIX[prefix.lower()]
    if unit[0] == "b":
        value /= 8.0
    if not math.isfinite(value):
        raise ParseError(f"bad bandwidth {text!r}: it must be a finite number")
    if value <= 0:
        raise ParseError(f"bad bandwidth {text!r}: it must be greater than zero")
    return value


def parse_time_ms(text: str) -> float:
    """Parse a duration such as ``20ms``, ``0.5s`` or ``800us`` into milliseconds."""
    match = _TIME.match(str(text))
    if not match:
        raise ParseError(f"bad time {text!r}: expected a number and a unit such as 20ms, 0.1s or 500us")
    number, unit = match.groups()
    value = float(number) * _TIME_UNIT[unit]
    if not math.isfinite(value):
        raise ParseError(f"bad time {text!r}: it must be a finite number")
    return value


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """Parse ``NAME=1x3x224x224`` into ``("NAME", (1, 3, 224, 224))``."""
    name, sep, dims = str(text).rpartition("=")
    if not sep or not name or not dims:
        raise ParseError(f"bad shape {text!r}: expected NAME=1x3x224x224")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x"))
    except ValueError as exc:
        raise ParseError(f"bad shape {text!r}: dimensions must be whole numbers joined by 'x'") from exc
    if any(d <= 0 for d in shape):
        raise ParseError(f"bad shape {text!r}: dimensions must be positive")
    return name, shape


def format_bandwidth(bytes_per_s: float) -> str:
    """Format bytes per second as a human-readable bit rate, e.g. ``5 Mbps``."""
    bits = bytes_per_s * 8
    for unit, scale in (("Gbps", 1e9), ("Mbps", 1e6), ("kbps", 1e3)):
        if bits >= scale:
            return f"{bits / scale:g} {unit}"
    return f"{bits:g} bps"


def parse_fraction(text: str | float) -> float:
    """Parse ``1%`` or ``0.01`` into a fraction."""
    if not isinstance(text, str):
        value = float(text)
        if not 0.0 <= value <= 1.0:  # also refuses NaN
            raise ParseError(f"bad fraction {text!r}: it must be between 0 and 1")
        return value
    raw = text.strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError as exc:
        raise ParseError(f"bad fraction {text!r}: expected a percentage such as 1% or a number such as 0.01") from exc
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ParseError(f"bad fraction {text!r}: it must be between 0% and 100%")
    return value
