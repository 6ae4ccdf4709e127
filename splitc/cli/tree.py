"""``splitc tree``: build a context-aware model tree from traces and write its artifacts."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, Optional

import typer

from splitc.cli.common import (
    _print_warnings,
    _progress,
    _shapes,
    _wall_time,
    app,
    console,
)
from splitc.errors import SplitcError
from splitc.options import DEFAULTS
from splitc.units import parse_fraction, parse_time_ms


def _widths(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(w) for w in text.split(",") if w.strip())
    except ValueError:
        raise SplitcError(f"--bits must list widths such as 32,8,6,4, not {text!r}") from None
    if not widths:
        raise SplitcError("--bits must list at least one width (32,8,6,4)")
    return widths


@app.command("tree")
def tree_command(
    model: Path = typer.Argument(..., help="The ONNX model to build the tree of."),
    trace: List[Path] = typer.Option(..., "--trace", help="A mahimahi uplink trace the chain is fitted from "
                                     "(repeatable)."),
    target: str = typer.Option(DEFAULTS.target, "--target", "-t", help="Edge device (see `splitc targets`)."),
    cloud: str = typer.Option(DEFAULTS.cloud, "--cloud", "-c", help="Cloud device (see `splitc targets`)."),
    calib: Path = typer.Option(..., "--calib", help="Calibration data: .npz keyed by input names, optionally "
                               "with 'labels' (or a folder of images with --preprocess)."),
    max_drop: str = typer.Option(f"{DEFAULTS.max_drop:.0%}", "--max-drop", help="Largest accepted accuracy drop "
                                 "of every composition: 1% or 0.01."),
    confidence: str = typer.Option(f"{DEFAULTS.confidence:.0%}", "--confidence", help="Level of the certified "
                                   "upper bound on the drop."),
    forks: int = typer.Option(6, "--forks", help="Forks (places to offload, the input included): 1..8."),
    classes: int = typer.Option(3, "--classes", help="Bandwidth classes of the Markov chain (at most)."),
    class_rule: str = typer.Option("decision", "--class-rule", help="Where the class edges go: decision (the "
                                   "rates where the best action changes) or quantile."),
    max_candidates: int = typer.Option(8, "--candidates", help="Fork candidates measured among the cut vertices "
                                       "(the input and the smallest tensors over the depth; 0: every one)."),
    step: str = typer.Option("100ms", "--step", help="Step of the chain (and of the rate the edge measures)."),
    rtt: str = typer.Option(DEFAULTS.rtt, "--rtt", help="Round-trip time of the link: 20ms."),
    bits: str = typer.Option("32,8,6,4", "--bits", help="Widths offered at each fork (Huffman-coded below 16)."),
    fp16: bool = typer.Option(True, "--fp16/--no-fp16", help="Float16 block variants where the target has an "
                              "FP16 rate."),
    input_shape: Optional[List[str]] = typer.Option(None, "--input-shape", help="Fix an input's shape: "
                                                    "NAME=1x3x224x224 (repeatable)."),
    preprocess: Optional[str] = typer.Option(None, "--preprocess", help="Image preprocessing for a --calib "
                                             "folder (as splitc compile)."),
    out: Path = typer.Option(..., "--output", "-o", help="Output directory (replaced atomically)."),
) -> None:
    """Build the model tree of MODEL over the links of --trace files and write tree.json, blocks and entry points.

    Serve OUT with `splitc serve OUT`; run the edge with splitc.runtime.tree_client.TreeClient.
    """
    from splitc.tree.build import TreeOptions, build_tree
    from splitc.tree.traces import load_trace

    loaded = [load_trace(path) for path in trace]  # a bad trace: one line naming the file and the line
    options = TreeOptions(calib=calib, target=target, cloud=cloud, rtt=rtt, max_drop=parse_fraction(max_drop),
                          confidence=parse_fraction(confidence), forks=forks, classes=classes,
                          class_rule=class_rule, max_candidates=max_candidates or None,
                          step_s=parse_time_ms(step) / 1e3, widths=_widths(bits), fp16=fp16,
                          input_shapes=_shapes(input_shape), preprocess=preprocess)
    with _progress(not console.is_terminal) as stage, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        tree = build_tree(model, loaded, options, progress=stage)
        stage("writing the output directory")
        sizes = tree.save(out)
    _print_warnings(caught)
    print_tree_report(tree, sizes, out)
    console.print(f"done in {_wall_time()}", highlight=False)


def print_tree_report(tree, sizes: dict, out: Path) -> None:
    """Forks, classes, the policy per class, expected latency against the fixed plan, and bytes on disk."""
    from splitc.cli.report import _size, rate_as_typed, show, table

    forks = table(f"Forks ({len(tree.forks)} of {tree.candidates} candidates)",
                  ["fork", "tensors", "edge prefix ms", "cloud ms", "entry points"],
                  right=("fork", "edge prefix ms", "cloud ms"))
    from splitc.tree.emit import entry_points

    used = entry_points(tree)
    for i, fork in enumerate(tree.forks):
        points = ", ".join(label for f, label in used if f == i) or "-"
        forks.add_row(str(i), ", ".join(fork.tensors), f"{fork.prefix_ms:.2f}", f"{fork.cloud_ms:.3f}", points)
    show(console, forks)
    chain = tree.chain
    classes = table(f"Bandwidth classes (step {chain.step_s * 1e3:g} ms)", ["class", "rates", "representative",
                                                                           "stationary", "tree expected ms"],
                    right=("class", "representative", "stationary", "tree expected ms"))
    bounds = [0.0, *chain.edges.tolist(), float("inf")]
    for k in range(chain.num_classes):
        span = f"{rate_as_typed(bounds[k])}..{'' if k == chain.num_classes - 1 else rate_as_typed(bounds[k + 1])}"
        classes.add_row(str(k), span, rate_as_typed(chain.bandwidth[k]), f"{chain.stationary[k]:.3f}",
                        f"{tree.policy.expected_ms[k]:.2f}")
    show(console, classes)
    policy = table("Policy (decision per class at each reachable fork and path)",
                   ["fork", "path", *(f"class {k}" for k in range(chain.num_classes))], right=("fork",))
    for (fork, path), actions in sorted(tree.policy.nodes.items()):
        names = [tree.blocks[f][v].name for f, v in enumerate(path)]
        policy.add_row(str(fork), "/".join(names) or "-", *(_action_text(tree, fork, a) for a in actions))
    show(console, policy)
    leaf = tree.fixed.leaf
    fixed = "edge-only" if leaf.option is None else f"offload at fork {leaf.fork} ({leaf.label})"
    gain = 1 - tree.policy.mean_ms / tree.fixed_ms if tree.fixed_ms > 0 else 0.0
    console.print(f"expected latency (cost model, stationary start class): tree {tree.policy.mean_ms:.2f} ms, "
                  f"fixed plan for the mean {rate_as_typed(tree.mean_bandwidth)} ({fixed}) {tree.fixed_ms:.2f} ms: "
                  f"{gain:.1%} lower", highlight=False)
    model_bytes = tree.analysis.graph.model.ByteSize()
    console.print(f"bytes on disk: {_size(sizes['total'])} in {out} (blocks {_size(sizes['blocks'])}, entry "
                  f"points {_size(sizes['entry_points'])}); a single plan's halves hold the model once: "
                  f"{_size(model_bytes)}", highlight=False)


def _action_text(tree, fork: int, action) -> str:
    if action.kind == "offload":
        return f"offload {action.label}"
    return f"run {tree.blocks[fork][action.index].name}"
