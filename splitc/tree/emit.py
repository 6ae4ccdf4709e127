"""Writing a model tree: ``tree.json``, the blocks, and one standard plan per entry point.

Layout of ``OUT`` (docs/plan.md, "Model-tree output"):

* ``tree.json``: the forks, the blocks and their variants (files, edge ms),
  every measured option per (fork, path), the edge-only bounds, the chain, the
  solved policy and the expected latencies (format ``splitc-model-tree-output``);
* ``blocks/<block>_<variant>.onnx``: each block variant, stored once however
  many branches of the tree run it;
* ``plans.json`` + ``plans/<fork>-<label>/``: one standard plan per entry point
  (a fork and a width the policy can offload with), so that ``splitc serve
  OUT`` serves every entry point unchanged. Its ``cloud.onnx`` is the base
  model's suffix from the fork with the dequantizer at its input; its
  ``edge.onnx`` is a *pass-through*: it reads the fork's tensors and outputs
  the wire tensors (the quantizer, or the tensors themselves at 32 bits), so
  the edge runs the blocks of its branch and only this last step from the
  plan. The suffix on disk is also what the edge runs locally when the cloud
  fails (``TreeClient(fallback="local")``). Entry points are written for the
  widths the policy reaches only; each holds its own copy of the suffix's
  weights (the server loads a plan directory as a whole).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from splitc import __version__
from splitc.backends import onnx_backend as emit
from splitc.backends.output import write_directory
from splitc.errors import SplitcError
from splitc.joint import Choice
from splitc.partition.select import Option
from splitc.passes import qdq
from splitc.passes.base import PassManager
from splitc.tree.markov import BandwidthChain, TransferTimes
from splitc.tree.measure import OptionRecord, Tables, spec_from_tables
from splitc.tree.policy import TreePolicy
from splitc.tree.spec import TreeSpec, Variant

__all__ = ["FORMAT", "TreeOutput", "entry_id", "entry_points", "read_tree", "save_tree", "tree_json"]

FORMAT = "splitc-model-tree-output"
PLANS_SCHEMA = "splitc.plans/1"


def entry_id(fork: int, label: str) -> str:
    """The plan id of an entry point: ``f2-b8`` is fork 2 at 8 bits."""
    return f"f{fork}-{label}"


def entry_points(tree) -> list[tuple[int, str]]:
    """(fork, label) of every offload the policy can reach, in fork order."""
    return sorted({(leaf.fork, leaf.label) for leaf in tree.policy.leaves() if leaf.option is not None},
                  key=lambda e: (e[0], int(e[1][1:])))


def _record(tree, fork: int, label: str) -> OptionRecord:
    base = (0,) * fork
    return next(o for o in tree.tables.options[(fork, base)] if o.label == label)


def _io(values) -> list[dict]:
    out = []
    for info in values:
        tensor = info.type.tensor_type
        out.append({"name": info.name, "shape": [d.dim_value for d in tensor.shape.dim],
                    "dtype": str(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))})
    return out


def passthrough(graph, tensors, encodings, name: str) -> onnx.ModelProto:
    """An edge half that reads ``tensors`` and outputs their wire tensors (quantized where the width says)."""
    half = emit.emit_half(graph, emit.HalfSpec([], list(tensors), list(tensors)), name)
    result = PassManager([qdq.InsertQuantize(list(encodings))])(half)
    if not result.modified:
        emit.check_half(result.model)
    return result.model


def entry_split(tree, fork: int, label: str):
    """The ``CompiledSplit`` of one entry point, its edge half replaced by the pass-through."""
    analysis, cand = tree.analysis, tree.forks[fork]
    graph, record = analysis.graph, _record(tree, fork, label)
    encodings = [qdq.encoding_for(t, record.bits, None, "huffman", graph.values[t].dtype) for t in cand.tensors]
    part = analysis.partition_for(list(cand.tensors))
    drop = record.drop or 0.0
    option = Option(tuple(cand.tensors), record.bits, 0.0, part.cloud_ms, record.nbytes, part.down_bytes, drop,
                    part.kind, (record.bound or 0.0) - drop)
    books = tree.tables.books.get((fork, record.bits), {})
    choice = Choice(option, [option], encodings, dict(books), None, True, tree.options.max_drop)
    split = analysis.split(choice=choice)
    edge = passthrough(graph, cand.tensors, encodings, f"{graph.name}_{entry_id(fork, label)}_send")
    split.edge_model = edge
    split.plan["edge"].update(inputs=_io(edge.graph.input), outputs=_io(edge.graph.output), nodes=0,
                              passes=[{"name": "insert-quantize", "modified": record.bits <= 8}])
    split.plan["tree"] = {"fork": fork, "label": label, "bits": record.bits,
                          "edge_half": "pass-through: the fork's tensors in, the wire tensors out"}
    return split


def _chain_json(tree) -> dict:
    chain = tree.chain
    return {"classes": chain.num_classes, "class_rule": tree.options.class_rule, "step_s": chain.step_s,
            "edges_Bps": chain.edges.tolist(),
            "bandwidth_Bps": chain.bandwidth.tolist(), "mean_Bps": chain.mean_bandwidth.tolist(),
            "matrix": chain.matrix.tolist(), "counts": chain.counts.tolist(), "stationary": chain.stationary.tolist(),
            "transfer_ms": chain.transfer.to_json() if chain.transfer is not None else {},
            "traces": [{"source": Path(t.source).name, "mean_bps": t.mean_rate_bps, "period_ms": t.period_ms}
                       for t in tree.traces]}


def _blocks_json(tree) -> list[dict]:
    out = []
    for i, variants in enumerate(tree.blocks):
        base = variants[0].model
        out.append({"name": f"b{i}", "inputs": _io(base.graph.input), "outputs": _io(base.graph.output),
                    "variants": [{"name": v.name, "file": f"blocks/b{i}_{v.name}.onnx", "edge_ms": v.edge_ms}
                                 for v in variants]})
    return out


def tree_json(tree, entries: list[tuple[int, str]]) -> dict:
    """The contents of tree.json (docs/plan.md, "Model-tree output")."""
    graph, tables, leaf = tree.analysis.graph, tree.tables, tree.fixed.leaf
    forks = [{"fork": i, "tensors": list(f.tensors), "prefix_ms": f.prefix_ms, "cloud_ms": f.cloud_ms,
              "entry_points": {label: entry_id(fork, label) for fork, label in entries if fork == i}}
             for i, f in enumerate(tree.forks)]
    return {
        "format": FORMAT, "version": 1, "splitc_version": __version__,
        "model": {"name": graph.name, "sha256": graph.sha256, "bytes": graph.model.ByteSize(),
                  "inputs": [{"name": v.name, "shape": list(v.shape), "dtype": str(v.dtype)} for v in graph.inputs],
                  "outputs": [{"name": v.name, "shape": list(v.shape), "dtype": str(v.dtype)} for v in graph.outputs]},
        "targets": {"edge": tree.analysis.models[0].name, "cloud": tree.analysis.models[1].name},
        "rtt_ms": tree.rtt_ms, "max_drop": tree.options.max_drop,
        "calibration": {"metric": tables.metric, "samples": tables.samples, "labelled": tables.labelled,
                        "confidence": tables.confidence, "float_score": tables.float_score,
                        "fork_candidates": tree.candidates},
        "forks": forks, "blocks": _blocks_json(tree),
        "options": [{"fork": f, "path": list(p), "options": [o.to_json() for o in opts]}
                    for (f, p), opts in sorted(tables.options.items())],
        "edge_only": [{"path": list(p), "drop": d, "bound": b} for p, (d, b) in sorted(tables.edge.items())],
        "chain": _chain_json(tree),
        "policy": json.loads(tree.policy.to_json()),
        "expected_ms": {"tree": tree.policy.mean_ms, "tree_per_class": tree.policy.expected_ms.tolist(),
                        "fixed_plan": tree.fixed_ms, "fixed_plan_bandwidth_Bps": tree.mean_bandwidth,
                        "fixed_plan_leaf": {"fork": leaf.fork, "path": list(leaf.path), "label": leaf.label}},
    }


def _plans_index(tree, entries, splits) -> dict:
    graph = tree.analysis.graph
    plans = []
    for (fork, label), split in zip(entries, splits):
        record = _record(tree, fork, label)
        plans.append({"id": entry_id(fork, label), "dir": f"plans/{entry_id(fork, label)}",
                      "interval_Bps": [0.0, math.inf], "kind": split.plan["kind"], "fork": fork,
                      "cut": list(tree.forks[fork].tensors), "bits": record.bits, "sent_bytes": record.nbytes})
    return {"schema": PLANS_SCHEMA, "splitc_version": __version__,
            "model": {"name": graph.name, "sha256": graph.sha256},
            "targets": {"edge": tree.analysis.models[0].name, "cloud": tree.analysis.models[1].name},
            "rtt_ms": tree.rtt_ms, "max_drop": tree.options.max_drop, "tree": "tree.json", "plans": plans}


def save_tree(tree, out_dir: str | Path) -> dict:
    """Write the tree's output directory atomically; returns its bytes on disk by part."""
    entries = entry_points(tree)
    splits = [entry_split(tree, fork, label) for fork, label in entries]
    sizes: dict[str, int] = {}

    def fill(tmp: Path) -> None:
        (tmp / "blocks").mkdir()
        for i, variants in enumerate(tree.blocks):
            for variant in variants:
                emit.save_half(variant.model, tmp / "blocks" / f"b{i}_{variant.name}.onnx")
        for (fork, label), split in zip(entries, splits):
            split.save(tmp / "plans" / entry_id(fork, label))
        (tmp / "plans.json").write_text(json.dumps(_plans_index(tree, entries, splits), indent=2) + "\n")
        (tmp / "tree.json").write_text(json.dumps(tree_json(tree, entries), indent=1) + "\n")
        sizes.update(disk_bytes(tmp))

    write_directory(out_dir, fill)
    return sizes


def disk_bytes(out: Path) -> dict[str, int]:
    """Bytes on disk of a tree output: blocks, entry points (each plan's files), the rest, and the total."""
    files = [p for p in Path(out).rglob("*") if p.is_file()]
    blocks = sum(p.stat().st_size for p in files if p.parent.name == "blocks")
    plans = sum(p.stat().st_size for p in files if "plans" in p.relative_to(out).parts[:1])
    total = sum(p.stat().st_size for p in files)
    return {"blocks": blocks, "entry_points": plans, "other": total - blocks - plans, "total": total}


@dataclass
class TreeOutput:
    """A tree output read back: its spec (from the measured tables), chain, policy and the raw tree.json."""

    spec: TreeSpec
    chain: BandwidthChain
    policy: TreePolicy
    data: dict


def read_tree(out_dir: str | Path) -> TreeOutput:
    """Read ``OUT/tree.json`` into a ``TreeSpec``, the chain and the policy (``SplitcError`` when malformed)."""
    path = Path(out_dir) / "tree.json"
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"format {data.get('format')!r}, expected {FORMAT!r}")
        tables = Tables(options={(int(n["fork"]), tuple(n["path"])): [OptionRecord.from_json(o) for o in n["options"]]
                                 for n in data["options"]},
                        edge={tuple(e["path"]): (float(e["drop"]), float(e["bound"])) for e in data["edge_only"]})
        blocks = [[Variant(v["name"], float(v["edge_ms"])) for v in b["variants"]] for b in data["blocks"]]
        spec = spec_from_tables([f["cloud_ms"] for f in data["forks"]], blocks, tables, float(data["rtt_ms"]))
        c = data["chain"]
        arrays = [np.array(c[k], float) for k in ("edges_Bps", "bandwidth_Bps", "mean_Bps", "matrix", "counts",
                                                  "stationary")]
        transfer = TransferTimes.from_json(len(arrays[1]), c["transfer_ms"]) if c.get("transfer_ms") else None
        chain = BandwidthChain(float(c["step_s"]), *arrays, transfer)
        policy = TreePolicy.from_json(json.dumps(data["policy"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SplitcError(f"{path}: not a readable model-tree output: {exc}") from exc
    return TreeOutput(spec, chain, policy, data)
