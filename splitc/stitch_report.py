"""What the CLI prints for bandwidth-range compiles and remote runs."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.table import Table

from splitc.errors import ParseError
from splitc.report import width_text
from splitc.units import format_bandwidth


def range_summary(adaptive, out: Path) -> dict:
    """The headline of a bandwidth-range compile, for ``--json``."""
    index = adaptive.index
    return {"output": str(out), "range_Bps": index["range_Bps"], "breakpoints_Bps": index["breakpoints_Bps"],
            "plans": index["plans"]}


def print_range_report(console: Console, adaptive, out: Path) -> None:
    index = adaptive.index
    lo, hi = index["range_Bps"]
    table = Table(title=f"Plans for {format_bandwidth(lo)} .. {format_bandwidth(hi)} "
                        f"({index['feasible_options']} feasible options, {index['rtt_ms']:g} ms RTT)")
    for column in ("plan", "from", "to", "kind", "cut", "bits", "bytes", "ms at from", "ms at to"):
        table.add_column(column, justify="left" if column in ("plan", "kind", "cut") else "right")
    for plan in index["plans"]:
        cut = ", ".join(plan["cut"][:2]) + (" ..." if len(plan["cut"]) > 2 else "") or "—"
        at_lo, at_hi = plan["predicted_ms"]
        width = width_text(plan["bits"], plan.get("jpeg_quality"))
        table.add_row(plan["id"], format_bandwidth(plan["interval_Bps"][0]), format_bandwidth(plan["interval_Bps"][1]),
                      plan["kind"], cut, width, f"{plan['sent_bytes']:.0f}", f"{at_lo:.2f}", f"{at_hi:.2f}")
    console.print(table)
    console.print(f"wrote [green]{out}[/] (plans.json and plans/<id>/)")


def print_timing(console: Console, result) -> None:
    """The timing breakdown of a remote run."""
    table = Table(title=f"Remote run: plan {result.plan_id}" + (" (FALLBACK: ran locally)" if result.fallback else ""))
    for column in ("edge ms", "encode ms", "network ms", "cloud ms", "decode ms", "total ms", "bytes up",
                   "bytes down", "attempts"):
        table.add_column(column, justify="right")
    table.add_row(*(f"{v:.2f}" for v in (result.edge_ms, result.encode_ms, result.network_ms, result.cloud_ms,
                                         result.decode_ms, result.total_ms)),
                  str(result.bytes_up), str(result.bytes_down), str(result.attempts))
    console.print(table)
    if result.error:
        console.print(f"[yellow]cloud unavailable:[/] {result.error}", highlight=False)


def read_token(path: Path | None) -> str | None:
    """The bearer token in a file (surrounding whitespace removed), or None."""
    if path is None:
        return None
    token = Path(path).read_text().strip()
    if not token:
        raise ValueError(f"{path}: the token file is empty")
    return token


_SIZE_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 2**10, "MIB": 2**20, "GIB": 2**30}


def parse_size(text: str) -> int:
    """``64MB`` → 64,000,000 bytes (KB/MB/GB decimal, KiB/MiB/GiB binary, a bare number is bytes)."""
    raw = str(text).strip()
    number = raw.rstrip("KMGiBkmgib")
    unit = raw[len(number):].strip().upper()
    try:
        value = float(number) * _SIZE_UNITS[unit]
    except (ValueError, KeyError) as exc:
        raise ParseError(f"bad size {text!r}: expected a number and a unit such as 64MB or 512KiB") from exc
    if value < 1:
        raise ParseError(f"bad size {text!r}: it must be at least 1 byte")
    return int(value)


def parse_host_port(text: str) -> tuple[str, int]:
    """``127.0.0.1:9001`` → ``("127.0.0.1", 9001)``."""
    host, sep, port = str(text).rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ParseError(f"bad address {text!r}: expected HOST:PORT such as 127.0.0.1:9001")
    return host.strip("[]"), int(port)
