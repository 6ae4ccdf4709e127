"""What the CLI prints for bandwidth-range compiles and remote runs."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from splitc.cli.report import width_text
from splitc.errors import ParseError


def range_summary(adaptive, out: Path) -> dict:
    """The headline of a bandwidth-range compile, for ``--json``."""
    index = adaptive.index
    return {"output": str(out), "range_Bps": index["range_Bps"], "breakpoints_Bps": index["breakpoints_Bps"],
            "plans": index["plans"]}


def print_range_report(console: Console, adaptive, out: Path, typed: str | None = None, verbose: bool = False) -> None:
    """The plans of a bandwidth range; ``typed`` (the --bw text) sets the units bandwidths are shown in."""
    from splitc.cli.report import _names, _size, rate_as_typed, show, table

    index = adaptive.index
    lo, hi = index["range_Bps"]
    low_text, _, high_text = (typed or "").partition("..")
    span = f"{low_text}..{high_text}" if typed else f"{rate_as_typed(lo)}..{rate_as_typed(hi)}"
    columns = ["plan", "from", "to", "cut", "bits", "up", "down", "ms at from", "ms at to"]
    if verbose:
        columns[3:3] = ["kind"]
    count = index["feasible_options"]
    result = table(f"Plans for {span} ({count} feasible option{'s' if count != 1 else ''}, {index['rtt_ms']:g} ms RTT)",
                   columns, right=("from", "to", "bits", "up", "down", "ms at from", "ms at to"))
    for plan in index["plans"]:
        at_lo, at_hi = plan["predicted_ms"]
        start, end = plan["interval_Bps"]
        row = [plan["id"], low_text if start == lo and typed else rate_as_typed(start, typed),
               high_text if end == hi and typed else rate_as_typed(end, typed),
               _names(plan["cut"]) if plan["cut"] else "(edge-only)", width_text(plan["bits"], plan.get("jpeg_quality")),
               _size(plan["sent_bytes"]), _size(plan["returned_bytes"]), f"{at_lo:.2f}", f"{at_hi:.2f}"]
        if verbose:
            row[3:3] = [plan["kind"]]
        result.add_row(*row)
    show(console, result)


def print_serving(console: Console, out: Path, host: str, port: int, tls: bool, token: bool) -> None:
    """What ``splitc serve`` serves and where (one line per plan)."""
    from splitc.cli.report import rate_as_typed
    from splitc.runtime.plans import PlanSet

    plans = PlanSet(out)
    scheme = "https" if tls else "http"
    shown = f"[{host}]" if ":" in host else host
    console.print(f"serving {out} on {scheme}://{shown}:{port} (POST /v1/infer, GET /v1/plans, /healthz, /metrics)"
                  + (", bearer token required" if token else ""), highlight=False)
    for entry in plans.entries:
        cut = ", ".join(c["tensor"] for c in entry.plan.get("cut", [])) or "nothing (edge-only)"
        lo, hi = entry.interval
        span = "" if (lo, hi) == (0.0, float("inf")) else f" for {rate_as_typed(lo)}..{rate_as_typed(hi)}"
        console.print(f"  plan {entry.id}{span}: {entry.plan['kind']}, cut {cut}", highlight=False)


def print_timing(console: Console, result) -> None:
    """The timing breakdown of a remote run."""
    from splitc.cli.report import _size, show, table

    columns = ["edge ms", "encode ms", "network ms", "cloud ms", "decode ms", "total ms", "up", "down"]
    timing = table(f"Remote run: plan {result.plan_id}" + (" (FALLBACK: ran locally)" if result.fallback else ""),
                   columns, right=tuple(columns))
    timing.add_row(*(f"{v:.2f}" for v in (result.edge_ms, result.encode_ms, result.network_ms, result.cloud_ms,
                                          result.decode_ms, result.total_ms)),
                   _size(result.bytes_up), _size(result.bytes_down))
    show(console, timing)
    if result.attempts > 1:
        console.print(f"{result.attempts} attempts", highlight=False)
    if result.error:
        console.print(f"[yellow]cloud unavailable:[/] {result.error}", highlight=False)


def print_repeated(console: Console, timings: list[dict], warmup: int) -> None:
    """Median and p90 of each timing column over repeated runs (after ``warmup`` untimed runs)."""
    import numpy as np

    from splitc.cli.report import show, table

    keys = [k for k in ("edge_ms", "encode_ms", "network_ms", "cloud_ms", "decode_ms", "total_ms")
            if all(k in t for t in timings)]
    result = table(f"{len(timings)} runs after {warmup} warm-up", ["", *(k.replace("_ms", " ms") for k in keys)],
                   right=tuple(k.replace("_ms", " ms") for k in keys))
    for label, q in (("median", 50), ("p90", 90)):
        result.add_row(label, *(f"{np.percentile([t[k] for t in timings], q):.2f}" for k in keys))
    show(console, result)
    fallbacks = sum(bool(t.get("fallback")) for t in timings)
    if fallbacks:
        console.print(f"{fallbacks} of {len(timings)} runs fell back to the local cloud half", highlight=False)


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
