"""What ``splitc inspect`` and ``splitc targets`` report: a model's structure and the built-in targets."""

from __future__ import annotations

from collections import Counter

import numpy as np
from rich.console import Console
from rich.markup import escape

from splitc.cli.report import _size, show, table

CONTROL_FLOW = ("If", "Loop", "Scan")


def inspect_model(model, input_shapes=None) -> dict:
    """Structure of a model as splitc sees it: sizes, FLOPs, cut vertices, atomic and custom ops."""
    from splitc.cost.model import CostTable
    from splitc.frontend import import_model
    from splitc.partition.cut_vertices import find_cut_vertices
    from splitc.partition.problem import problem_from_graph
    from splitc.passes.dce import DeadCodeElimination

    graph = DeadCodeElimination()(import_model(model, input_shapes)).graph
    data = graph.data_nodes
    zeros = np.zeros(len(data))
    costs = CostTable([n.name for n in data], zeros, zeros)
    problem = problem_from_graph(graph, costs, bandwidth=1.0, rtt_ms=0.0)
    cuts = [graph.values[problem.value_names[i]] for i in find_cut_vertices(problem)]
    weights = [v for v in graph.values.values() if v.is_initializer]
    weights += [v for n in graph.nodes if n.op_type == "Constant" for v in n.outputs if v.shape is not None]
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
        "shapes": graph.shape_report.to_json() if graph.shape_report is not None else None,
    }


def print_inspect_report(console: Console, info: dict, limit: int = 20, verbose: bool = False) -> None:
    """The model's structure; at most ``limit`` cut-vertex rows (0: all)."""
    console.print(
        f"[bold]{info['model']}[/]: {info['data_nodes']} nodes ({info['constant_nodes']} constant), "
        f"{info['flops'] / 1e9:.3f} GFLOPs, weights {_size(info['weight_bytes'])}", highlight=False
    )
    console.print("ops: " + ", ".join(f"{op} x{count}" for op, count in info["op_types"].items()), highlight=False)
    cuts = info["cut_vertices"]
    shown = cuts if limit <= 0 else cuts[:limit]
    result = table(f"{len(cuts)} cut vertices (every input-to-output path crosses them)",
                   ["#", "tensor", "shape", "size"] + (["producer"] if verbose else []), right=("#", "size"))
    for rank, cut in enumerate(shown, 1):
        result.add_row(str(rank), cut["tensor"], "x".join(map(str, cut["shape"])), _size(cut["bytes"]),
                       *([cut["producer"]] if verbose else []))
    show(console, result)
    if len(shown) < len(cuts):
        console.print(f"... {len(cuts) - len(shown)} more cut vertices (--limit 0 shows all, --json lists them)",
                      highlight=False)
    _print_shapes(console, info.get("shapes"))
    for key, label in (("atomic_ops", "atomic (never cut inside)"), ("custom_ops", "custom-domain ops")):
        if info[key]:
            console.print(f"{label}: " + ", ".join(f"{o['node']} ({o['op_type']})" for o in info[key]),
                          highlight=False)


def _print_shapes(console: Console, shapes: dict | None) -> None:
    """Which method resolved the shapes, and the tensors that never cross (their shape depends on data)."""
    if not shapes:
        return
    counts = ", ".join(f"{method} {count}" for method, count in shapes["methods"].items())
    console.print(f"shapes resolved by: {counts}", highlight=False)
    if shapes.get("synthetic_inputs"):
        fills = "; ".join(f"{name}: {fill}" for name, fill in shapes["synthetic_inputs"].items())
        console.print(f"synthetic inputs of the execution run: {fills}", highlight=False)
    dependent = shapes.get("data_dependent") or {}
    if dependent:
        console.print(f"{len(dependent)} data-dependent tensors (never cut: their shape depends on input values):",
                      highlight=False)
        for name, why in list(dependent.items())[:10]:
            console.print(f"  {escape(name)}: {escape(why)}", highlight=False, soft_wrap=True)
        if len(dependent) > 10:
            console.print(f"  ... {len(dependent) - 10} more (--json lists them)", highlight=False)


def print_targets(console: Console, verbose: bool = False) -> None:
    """The built-in targets; ``verbose`` adds each device's description and the source of its figures."""
    from splitc.targets import TARGETS

    columns = ["name", "role", "GFLOP/s", "FP16 GFLOP/s", "INT8 GOP/s", "mem GB/s", "effic.", "overhead µs"]
    result = table("Built-in targets (roofline cost model)", columns,
                   right=("GFLOP/s", "FP16 GFLOP/s", "INT8 GOP/s", "mem GB/s", "effic.", "overhead µs"))
    for t in TARGETS.values():
        fp16 = f"{t.fp16_flops / 1e9:g}" if t.fp16_flops else "—"
        int8 = f"{t.int8_ops / 1e9:g}" if t.int8_ops else "—"
        result.add_row(t.name, t.role, f"{t.peak_flops / 1e9:g}", fp16, int8, f"{t.mem_bw / 1e9:g}",
                       f"{t.efficiency:g}", f"{t.overhead_us:g}")
    show(console, result)
    if not verbose:
        console.print("--verbose adds each device's description and the source of its figures", highlight=False)
        return
    for t in TARGETS.values():
        console.print(f"[bold]{t.name}[/]: {escape(t.description)}", highlight=False)
        console.print(f"  source: {escape(t.source)}", highlight=False)
