"""Tables and summaries printed by the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from splitc.errors import SplitcError

def _size(nbytes: float | None) -> str:
    if nbytes is None:
        return "—"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(round(nbytes))} B"


NAME_COLUMNS = ("tensor", "cut", "file", "name", "plan", "producer", "device", "source")  # take the width the other columns leave


def table(title: str | None, columns: list[str], right: tuple[str, ...] = ()) -> Table:
    """A compact table that wraps long cells instead of cutting them (names and numbers are copied by users).

    The title is printed by ``show`` on its own line (a table's title would wrap to the table's width).
    """
    result = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    result.splitc_title = title
    for column in columns:
        result.add_column(column, overflow="fold", justify="right" if column in right else "left")
    return result


def show(console: Console, result: Table) -> None:
    """Print ``result`` with its title above it."""
    _fit(console, result)
    title = getattr(result, "splitc_title", None)
    if title:
        console.print(f"[bold]{escape(title)}[/]", highlight=False, soft_wrap=True)
    console.print(result)


def _fit(console: Console, result: Table) -> None:
    """Numbers keep their width; names take what is left, whole when it fits (folded, never cut, when not)."""
    from rich.text import Text

    def width(cell) -> int:
        text = cell if isinstance(cell, Text) else Text.from_markup(str(cell))
        return max((Text(line).cell_len for line in text.plain.split("\n")), default=0)

    natural, header_words = [], []
    for column in result.columns:
        natural.append(max([width(c) for c in column._cells] + [len(column.header)]))
        header_words.append(max(len(w) for w in str(column.header).split() or [""]))
    room = console.width - (2 * len(result.columns) + 1)
    if sum(natural) <= room:
        return
    cells = [max(width(c) for c in column._cells) if column._cells else 0 for column in result.columns]
    names = [i for i, c in enumerate(result.columns) if c.header in NAME_COLUMNS]
    fixed = [max(f, len(c.header)) for f, c in zip(cells, result.columns)]  # headers whole when there is room
    left = room - sum(w for i, w in enumerate(fixed) if i not in names)
    if left < sum(natural[i] for i in names):  # wrap headers at spaces before folding a name
        fixed = [max(f, h) for f, h in zip(cells, header_words)]
        left = room - sum(w for i, w in enumerate(fixed) if i not in names)
    for i, column in enumerate(result.columns):
        if i in names:
            column.width = max(8, min(natural[i], left // max(1, len(names))))
        else:
            column.width = fixed[i]


def _names(names: list[str]) -> str:
    """Every name, one per line (wrapped, never cut)."""
    return "\n".join(names) if names else "—"


KIND_TEXT = {"split": "edge + cloud", "edge-only": "edge-only (nothing is sent)",
             "cloud-only": "cloud-only (the input is sent)"}


def rate_as_typed(bytes_per_s: float, typed: str | None = None) -> str:
    """A bandwidth in the family the user typed (``KBps``/``MBps`` for bytes, ``kbps``/``Mbps`` for bits)."""
    in_bytes = typed is not None and "B" in typed.replace("bps", "").replace("b/s", "")
    value = bytes_per_s if in_bytes else bytes_per_s * 8
    units = (("GBps", 1e9), ("MBps", 1e6), ("KBps", 1e3), ("Bps", 1.0)) if in_bytes else \
        (("Gbps", 1e9), ("Mbps", 1e6), ("kbps", 1e3), ("bps", 1.0))
    for unit, scale in units:
        if value >= scale or scale == 1.0:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}{units[-1][0]}"


def compile_summary(split, out: Path) -> dict:
    """The headline numbers of a compile, for ``--json``."""
    plan = split.plan
    return {
        "output": str(out),
        "kind": plan["kind"],
        "cut": [c["tensor"] for c in plan["cut"]],
        "predicted": plan["predicted"],
        "baselines": plan["baselines"],
        "solve_ms": plan["solve_ms"],
    }


def print_compile_report(console: Console, split, out: Path, verbose: bool = False,
                         link_text: tuple[str, str] | None = None) -> None:
    """The chosen split, the candidates, the predicted latency (``link_text``: the link as the user typed it)."""
    plan = split.plan
    link = plan["link"]
    bw, rtt = link_text or (rate_as_typed(link["bandwidth_Bps"]), f"{link['rtt_ms']:g}ms")
    console.print(
        f"[bold]{plan['model']['name']}[/]: {plan['model']['data_nodes']} nodes, "
        f"edge [cyan]{plan['targets']['edge']}[/], cloud [cyan]{plan['targets']['cloud']}[/], "
        f"link {bw} / {rtt} RTT", highlight=False
    )
    forced = " (forced with --cut)" if plan["forced"] else ""
    console.print(f"[bold]Chosen split:[/] {KIND_TEXT.get(plan['kind'], plan['kind'])}{forced}", highlight=False)
    if plan["cut"]:
        columns = ["tensor", "shape", "bits", "codec", "raw", "sent"] + (["dtype", "producer"] if verbose else [])
        cut = table(None, columns, right=("bits", "raw", "sent"))
        for entry in plan["cut"]:
            row = [entry["tensor"], "x".join(map(str, entry["shape"])), str(entry["bits"]), _codec_text(entry["codec"]),
                   _size(entry["bytes"]), _size(entry["predicted_bytes"])]
            if verbose:
                row += [entry["dtype"], entry["producer"] or "(model input)"]
            cut.add_row(*row)
        show(console, cut)
    if plan.get("selection"):
        show(console, _selection_table(plan, verbose))
    else:
        show(console, _alternatives_table(plan, verbose))
    if plan["edge"].get("compression"):
        from splitc.compress.report import print_compression

        print_compression(console, plan["edge"]["compression"], table, show)
    show(console, _breakdown_table(plan))
    if verbose:
        _print_passes(console, plan)


def _print_passes(console: Console, plan: dict) -> None:
    """The transforms each half went through (``--verbose``), with the reason of each that did not apply."""
    for side in ("edge", "cloud"):
        for entry in (plan.get(side) or {}).get("passes") or []:
            status = "applied" if entry["applied"] else f"not applied: {entry.get('reason', '')}"
            console.print(f"{side} pass {entry['name']}: {status}", highlight=False, soft_wrap=True)


def _alternatives_table(plan: dict, verbose: bool = False) -> Table:
    columns = ["#", "kind", "cut", "up", "down", "total ms", "vs chosen"]
    if verbose:
        columns[5:5] = ["edge ms", "transfer ms", "cloud ms"]
    result = table("Best split per segment between cut vertices", columns,
                   right=("#", "up", "down", "edge ms", "transfer ms", "cloud ms", "total ms", "vs chosen"))
    chosen = plan["predicted"]["total_ms"]
    for rank, alt in enumerate(plan["alternatives"], 1):
        row = [str(rank), alt["kind"], _names(alt["cut"]), _size(alt.get("up_bytes")), _size(alt.get("down_bytes"))]
        if verbose:
            row += [f"{alt['edge_ms']:.2f}", f"{alt['transfer_ms']:.2f}", f"{alt['cloud_ms']:.2f}"]
        row += [f"{alt['total_ms']:.2f}", f"{alt['total_ms'] / chosen:.2f}x" if chosen else "—"]
        result.add_row(*row)
    return result


def drop_texts(option: dict, checked: bool) -> tuple[str, str]:
    """(measured drop, certified bound) as shown: ``not measured`` without calibration, ``exact`` when known exact."""
    if not checked:
        return "not measured", "not measured"
    bound = option.get("drop_bound")
    if bound is None:
        bound = option["drop"] + option.get("drop_se", 0.0)
    if option["drop"] == 0 and bound == 0:
        return "0", "exact"
    return f"{option['drop']:.2%}", f"{max(bound, 0.0):.2%}"


def _selection_table(plan: dict, verbose: bool = False) -> Table:
    sel = plan["selection"]
    checked = sel["accuracy_checked"]
    if checked:
        level = sel.get("confidence") or 0.95
        samples = f", {sel['samples']} samples" if sel.get("samples") else ""
        title = f"Candidates: certified drop bound ≤ {sel['max_drop']:.2%} ({level:.0%} confidence{samples})"
    else:
        title = "Candidates (accuracy NOT checked: no --calib data)"
    columns = ["#", "cut", "bits", "up", "down", "drop", "bound", "total ms"]
    options = [sel["chosen"], *sel["runners_up"]]
    variants = any("variant" in o for o in options)  # a compressed compile names each option's edge variant
    if variants:
        columns[2:2] = ["variant"]
    if verbose:
        columns[1:1] = ["kind"]
        columns += ["edge ms", "transfer ms", "cloud ms"]
    result = table(title, columns, right=("#", "bits", "up", "down", "drop", "bound", "total ms", "edge ms",
                                          "transfer ms", "cloud ms"))
    for rank, option in enumerate(options, 1):
        drop, bound = drop_texts(option, checked)
        cut = _names(option["cut"]) if option["cut"] else "(edge-only)"
        row = [str(rank), cut, width_text(option["bits"], option.get("jpeg_quality")), _size(option["bytes"]),
               _size(option.get("returned_bytes", 0.0)), drop, bound, f"{option['total_ms']:.2f}"]
        if variants:
            row[2:2] = [option.get("variant", "base")]
        if verbose:
            row[1:1] = [option["kind"]]
            row += [f"{option['edge_ms']:.2f}", f"{option['transfer_ms']:.2f}", f"{option['cloud_ms']:.2f}"]
        result.add_row(*row, style="bold" if rank == 1 else "")
    return result


def _breakdown_table(plan: dict) -> Table:
    result = table("Predicted latency", ["plan", "edge ms", "transfer ms", "cloud ms", "total ms", "speed-up"],
                   right=("edge ms", "transfer ms", "cloud ms", "total ms", "speed-up"))
    p = plan["predicted"]
    result.add_row("[bold]chosen[/]", f"{p['edge_ms']:.2f}", f"{p['transfer_ms']:.2f}", f"{p['cloud_ms']:.2f}",
                   f"[bold]{p['total_ms']:.2f}[/]", "")
    for label, key in (("edge-only", "edge_only_ms"), ("cloud-only (raw float32)", "cloud_only_ms")):
        total = plan["baselines"][key]
        faster = f"{total / p['total_ms']:.2f}x" if p["total_ms"] else "—"
        result.add_row(label, "", "", "", f"{total:.2f}", faster)
    return result


def print_deployment(console: Console, out: Path, files: list[tuple[str, int]] | None = None) -> None:
    """The files written with their sizes, and what goes where."""
    out = Path(out)
    files = files if files is not None else written_files(out)
    listing = table(f"Wrote {out}/ ({_size(sum(size for _, size in files))})", ["file", "size"], right=("size",))
    for name, size in files:
        listing.add_row(name, _size(size))
    show(console, listing)
    names = {name.split("/")[0] for name, _ in files}
    books = ["codebooks/"] if "codebooks" in names else []
    if "plans.json" in names:
        device = server = [f"{out}/ (plans.json, plans/)"]
    else:
        device = [n for n in ("edge.onnx", "edge.so", "plan.json") if n in names] + books
        server = [n for n in ("cloud.onnx", "cloud.so", "plan.json") if n in names] + books
    has_cloud = "plans.json" in names or any(n.startswith("cloud.") for n in names)
    lines = ["[bold]Deploy[/]", f"  on the device, with {', '.join(device)}:",
             "    pip install splitc",
             "    (to embed the runtime alone: --no-deps, plus numpy, onnxruntime, httpx)"]
    if has_cloud:
        lines += [f"    splitc run {out} --input x.npy --cloud http://SERVER:8000",
                  f"  on the server, with {', '.join(server)}:", "    pip install splitc",
                  f"    splitc serve {out} --host 0.0.0.0 --port 8000"]
    else:
        lines += [f"    splitc run {out} --input x.npy    (edge-only: no server)"]
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


def written_files(out: Path) -> list[tuple[str, int]]:
    """Every file under ``out`` (relative path, bytes), sorted."""
    out = Path(out)
    return sorted((p.relative_to(out).as_posix(), p.stat().st_size) for p in out.rglob("*")
                  if p.is_file() and not p.name.startswith("."))


def read_inputs(specs: list[str], names: list[str]) -> dict[str, np.ndarray]:
    """Parse ``NAME=file.npy`` (or a bare ``file.npy`` for a one-input model)."""
    feeds = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep:
            if len(names) != 1:
                raise SplitcError(f"--input {spec!r}: the model has several inputs; use NAME=file.npy")
            name, file = names[0], spec
        path = Path(file)
        if not path.is_file():
            raise SplitcError(f"--input {spec!r}: no such file {path}")
        try:
            feeds[name] = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise SplitcError(f"--input {spec!r}: {path} is not a .npy array ({exc})") from exc
    return feeds


def print_outputs(console: Console, outputs: dict[str, np.ndarray]) -> None:
    result = table("Outputs", ["name", "shape", "dtype", "min", "max", "argmax"], right=("min", "max", "argmax"))
    for name, array in outputs.items():
        flat = array.reshape(-1)
        result.add_row(name, "x".join(map(str, array.shape)), str(array.dtype), f"{flat.min():.4g}",
                       f"{flat.max():.4g}", str(int(flat.argmax())))
    show(console, result)


def _codec_text(codec: dict) -> str:
    """``huffman``, ``none``, or ``jpeg q90``."""
    return width_text(0, codec["quality"]) if codec.get("name") == "jpeg" else codec.get("name", "none")


def width_text(bits: int, jpeg_quality: int | None = 0) -> str:
    """How a cut is sent: its bits, or ``jpeg q90``."""
    return f"jpeg q{jpeg_quality}" if jpeg_quality else str(bits)


def skipped_line(calibration: bytes | str | dict | None) -> str | None:
    """How many (cut, width) candidates calibration did not run, and why (None when it ran them all)."""
    if calibration is None:
        return None
    data = json.loads(calibration) if isinstance(calibration, (bytes, str)) else calibration
    entries = data.get("entries", {})
    reasons = {
        "pruned": "slower than edge-only or raw float32 at every bandwidth even at their smallest frame",
        "above_feasible": "slower everywhere than an option already within the bound",
        "dominated_by": "no smaller than a narrower width that passed",
    }
    counts = dict.fromkeys(reasons, 0)
    for entry in entries.values():
        for reason in reasons:
            if entry.get(reason) not in (None, False):
                counts[reason] += 1
                break
    measured = sum(1 for e in entries.values() if e.get("drop") is not None)
    skipped = sum(counts.values())
    if not skipped:
        return f"calibration measured all {measured} (cut, width) candidates"
    parts = "; ".join(f"{n} {reasons[r]}" for r, n in counts.items() if n)
    return f"calibration measured {measured} (cut, width) candidates and skipped {skipped}: {parts}"
