"""Tables and summaries printed by the CLI."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from splitc.errors import SplitcError
from splitc.units import format_bandwidth

CONTROL_FLOW = ("If", "Loop", "Scan")


def _size(nbytes: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{int(nbytes)} B"


def _names(names: list[str], limit: int = 3) -> str:
    if not names:
        return "—"
    shown = ", ".join(names[:limit])
    return shown + (f" (+{len(names) - limit})" if len(names) > limit else "")


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


def print_compile_report(console: Console, split, out: Path) -> None:
    plan = split.plan
    link = plan["link"]
    console.print(
        f"[bold]{plan['model']['name']}[/]: {plan['model']['data_nodes']} nodes, "
        f"edge [cyan]{plan['targets']['edge']}[/], cloud [cyan]{plan['targets']['cloud']}[/], "
        f"link {format_bandwidth(link['bandwidth_Bps'])} / {link['rtt_ms']:g} ms RTT"
    )
    cut = Table(title=f"Chosen split: {plan['kind']}" + (" (forced)" if plan["forced"] else ""))
    for column in ("tensor", "shape", "dtype", "raw size", "bits", "codec", "on the wire", "producer"):
        cut.add_column(column)
    for entry in plan["cut"]:
        cut.add_row(entry["tensor"], "x".join(map(str, entry["shape"])), entry["dtype"], _size(entry["bytes"]),
                    str(entry["bits"]), _codec_text(entry["codec"]), _size(entry["predicted_bytes"]),
                    entry["producer"] or "(model input)")
    if not plan["cut"]:
        cut.add_row("(nothing is sent)", "", "", "", "")
    console.print(cut)
    if plan.get("selection"):
        console.print(_selection_table(plan))
    else:
        console.print(_alternatives_table(plan))
    console.print(_breakdown_table(plan))
    console.print(f"partitioned in {plan['solve_ms']:.2f} ms; wrote [green]{out}[/]")


def _alternatives_table(plan: dict) -> Table:
    table = Table(title="Best split per segment between cut vertices (top alternatives)")
    for column in ("#", "kind", "cut", "edge ms", "transfer ms", "cloud ms", "total ms", "vs chosen"):
        table.add_column(column, justify="right" if column.endswith("ms") or column in ("#", "vs chosen") else "left")
    chosen = plan["predicted"]["total_ms"]
    for rank, alt in enumerate(plan["alternatives"], 1):
        table.add_row(str(rank), alt["kind"], _names(alt["cut"]), f"{alt['edge_ms']:.2f}", f"{alt['transfer_ms']:.2f}",
                      f"{alt['cloud_ms']:.2f}", f"{alt['total_ms']:.2f}", f"{alt['total_ms'] / chosen:.2f}x")
    return table


def _selection_table(plan: dict) -> Table:
    sel = plan["selection"]
    checked = "measured on calibration data" if sel["accuracy_checked"] else "NOT checked: no calibration data"
    table = Table(title=f"Joint (cut, bits) choice within a {sel['max_drop']:.2%} accuracy drop ({checked})")
    for column in ("#", "kind", "cut", "bits", "bytes", "drop", "edge ms", "transfer ms", "cloud ms", "total ms"):
        table.add_column(column, justify="left" if column in ("kind", "cut") else "right")
    for rank, option in enumerate([sel["chosen"], *sel["runners_up"]], 1):
        drop = f"{option['drop']:.2%} ± {option.get('drop_se', 0.0):.2%}"
        style = "bold" if rank == 1 else ""
        table.add_row(str(rank), option["kind"], _names(option["cut"]), width_text(option["bits"], option.get("jpeg_quality")),
                      _size(option["bytes"]), drop, f"{option['edge_ms']:.2f}", f"{option['transfer_ms']:.2f}",
                      f"{option['cloud_ms']:.2f}", f"{option['total_ms']:.2f}", style=style)
    return table


def _breakdown_table(plan: dict) -> Table:
    table = Table(title="Predicted latency")
    for column in ("plan", "edge ms", "transfer ms", "cloud ms", "total ms", "speed-up of chosen"):
        table.add_column(column, justify="left" if column == "plan" else "right")
    p = plan["predicted"]
    table.add_row("[bold]chosen[/]", f"{p['edge_ms']:.2f}", f"{p['transfer_ms']:.2f}", f"{p['cloud_ms']:.2f}",
                  f"[bold]{p['total_ms']:.2f}[/]", "1.00x")
    for label, key in (("edge-only", "edge_only_ms"), ("cloud-only", "cloud_only_ms")):
        total = plan["baselines"][key]
        table.add_row(label, "", "", "", f"{total:.2f}", f"{total / p['total_ms']:.2f}x")
    return table


def inspect_model(model, input_shapes=None) -> dict:
    """Structure of a model as splitc sees it: sizes, FLOPs, cut vertices, atomic and custom ops."""
    from splitc.frontend import import_model
    from splitc.passes.cost import CostTable
    from splitc.passes.cut_vertices import find_cut_vertices
    from splitc.passes.dce import DeadCodeElimination
    from splitc.passes.problem import problem_from_graph

    graph = DeadCodeElimination()(import_model(model, input_shapes)).graph
    data = graph.data_nodes
    zeros = np.zeros(len(data))
    costs = CostTable([n.name for n in data], zeros, zeros)
    problem = problem_from_graph(graph, costs, bandwidth=1.0, rtt_ms=0.0)
    cuts = [graph.values[problem.value_names[i]] for i in find_cut_vertices(problem)]
    weights = [v for v in graph.values.values() if v.is_initializer]
    return {
        "model": graph.name,
        "sha256": graph.sha256,
        "nodes": len(graph.nodes),
        "data_nodes": len(data),
        "constant_nodes": len(graph.nodes) - len(data),
        "flops": float(sum(n.flops for n in data)),
        "weight_bytes": int(sum(v.nbytes for v in weights)),
        "op_types": dict(Counter(n.op_type for n in data).most_common()),
        "inputs": [{"name": v.name, "shape": list(v.shape), "dtype": str(v.dtype)} for v in graph.inputs],
        "outputs": [{"name": v.name, "shape": list(v.shape or []), "dtype": str(v.dtype)} for v in graph.outputs],
        "cut_vertices": [
            {"tensor": v.name, "shape": list(v.shape), "bytes": v.nbytes, "producer": v.producer.name} for v in cuts
        ],
        "atomic_ops": [{"node": n.name, "op_type": n.op_type} for n in data if n.op_type in CONTROL_FLOW],
        "custom_ops": [{"node": n.name, "op_type": f"{n.domain}.{n.op_type}"} for n in data
                       if n.domain not in ("", "ai.onnx")],
    }


def print_inspect_report(console: Console, info: dict) -> None:
    console.print(
        f"[bold]{info['model']}[/]: {info['data_nodes']} nodes ({info['constant_nodes']} constant), "
        f"{info['flops'] / 1e9:.3f} GFLOPs, weights {_size(info['weight_bytes'])}"
    )
    console.print("ops: " + ", ".join(f"{op} x{count}" for op, count in info["op_types"].items()))
    table = Table(title=f"{len(info['cut_vertices'])} cut vertices (every input-to-output path crosses them)")
    for column in ("#", "tensor", "shape", "size", "producer"):
        table.add_column(column)
    for rank, cut in enumerate(info["cut_vertices"], 1):
        table.add_row(str(rank), cut["tensor"], "x".join(map(str, cut["shape"])), _size(cut["bytes"]), cut["producer"])
    console.print(table)
    for key, label in (("atomic_ops", "atomic (never cut inside)"), ("custom_ops", "custom-domain ops")):
        if info[key]:
            console.print(f"{label}: " + ", ".join(f"{o['node']} ({o['op_type']})" for o in info[key]))


def print_targets(console: Console) -> None:
    from splitc.targets import TARGETS

    table = Table(title="Built-in targets (roofline cost model)")
    for column in ("name", "role", "device", "peak GFLOP/s", "FP16 GFLOP/s", "mem GB/s", "efficiency", "overhead µs",
                   "source"):
        table.add_column(column)
    for t in TARGETS.values():
        fp16 = f"{t.fp16_flops / 1e9:g}" if t.fp16_flops else "—"
        table.add_row(t.name, t.role, t.description, f"{t.peak_flops / 1e9:g}", fp16, f"{t.mem_bw / 1e9:g}",
                      f"{t.efficiency:g}", f"{t.overhead_us:g}", t.source)
    console.print(table)


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
    table = Table(title="Outputs")
    for column in ("name", "shape", "dtype", "min", "max", "argmax"):
        table.add_column(column)
    for name, array in outputs.items():
        flat = array.reshape(-1)
        table.add_row(name, "x".join(map(str, array.shape)), str(array.dtype), f"{flat.min():.4g}",
                      f"{flat.max():.4g}", str(int(flat.argmax())))
    console.print(table)


def _codec_text(codec: dict) -> str:
    """``huffman``, ``none``, or ``jpeg q90``."""
    return width_text(0, codec["quality"]) if codec.get("name") == "jpeg" else codec.get("name", "none")


def width_text(bits: int, jpeg_quality: int | None = 0) -> str:
    """How a cut is sent: its bits, or ``jpeg q90``."""
    return f"jpeg q{jpeg_quality}" if jpeg_quality else str(bits)
