"""Bandwidth, time and shape strings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from splitc.errors import ParseError
from splitc.units import format_bandwidth, parse_bandwidth, parse_shape, parse_time_ms


@pytest.mark.parametrize(
    "text, bytes_per_s",
    [("300KBps", 300e3), ("1MBps", 1e6), ("5Mbps", 625e3), ("1.5Gbps", 187.5e6), ("500kbps", 62.5e3),
     ("8bps", 1.0), ("2 MB/s", 2e6), ("100Kbps", 12.5e3)],
)
def test_bandwidth(text: str, bytes_per_s: float) -> None:
    assert parse_bandwidth(text) == pytest.approx(bytes_per_s)


@pytest.mark.parametrize("text", ["5", "5Mb", "fast", "-1Mbps", "0Mbps", "5Mbpss", "Mbps", ""])
def test_bad_bandwidth(text: str) -> None:
    with pytest.raises(ParseError, match="bad bandwidth"):
        parse_bandwidth(text)


@given(st.floats(min_value=1e-3, max_value=1e12, allow_nan=False), st.sampled_from(["", "k", "M", "G"]))
def test_bits_are_an_eighth_of_bytes(number: float, prefix: str) -> None:
    text = f"{number:.6g}"
    assert parse_bandwidth(f"{text}{prefix}bps") * 8 == pytest.approx(parse_bandwidth(f"{text}{prefix}Bps"))


def test_format_round_trip() -> None:
    assert format_bandwidth(parse_bandwidth("5Mbps")) == "5 Mbps"


@pytest.mark.parametrize("text, ms", [("20ms", 20.0), ("0.1s", 100.0), ("500us", 0.5), ("0ms", 0.0)])
def test_time(text: str, ms: float) -> None:
    assert parse_time_ms(text) == pytest.approx(ms)


@pytest.mark.parametrize("text", ["20", "fast", "-3ms", "3 min"])
def test_bad_time(text: str) -> None:
    with pytest.raises(ParseError, match="bad time"):
        parse_time_ms(text)


def test_shape() -> None:
    assert parse_shape("input=1x3x224x224") == ("input", (1, 3, 224, 224))
    assert parse_shape("gpu_0/data_0=1X3X8X8") == ("gpu_0/data_0", (1, 3, 8, 8))


@pytest.mark.parametrize("text", ["input", "=1x3", "input=1xax3", "input=1x0x3", "input="])
def test_bad_shape(text: str) -> None:
    with pytest.raises(ParseError, match="bad shape"):
        parse_shape(text)
