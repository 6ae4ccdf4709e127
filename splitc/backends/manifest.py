"""The plan manifest, ``plan.json``: what each half computes and why (see docs/plan.md)."""

from __future__ import annotations

from splitc._version import __version__
import onnx
from onnx import helper
from splitc.ir.graph import Graph
from splitc.cost.model import CostTable
from splitc.partition.solve import Partition
from splitc.passes.qdq import encoding_for

SCHEMA = "splitc.plan/1"


def tensor_entry(graph: Graph, name: str) -> dict:
    value = graph.values[name]
    return {
        "name": name,
        "shape": list(value.shape) if value.shape is not None else None,
        "dtype": str(value.dtype) if value.dtype is not None else None,
    }


def codebook_files(choice) -> dict:
    """File name (under ``codebooks/``) of each cut tensor's static codebook."""
    return {f"{index}.bin": book for index, (tensor, book) in enumerate(sorted(choice.codebooks.items()))}


def _codebook_names(choice) -> dict[str, str]:
    names = sorted(choice.codebooks) if choice is not None else []
    return {tensor: f"codebooks/{index}.bin" for index, tensor in enumerate(names)}


def _cut_entry(graph: Graph, name: str, cloud_nodes: set[str], choice, books: dict[str, str]) -> dict:
    value = graph.values[name]
    enc = next((e for e in choice.encodings if e.tensor == name), None) if choice is not None else None
    bits = enc.bits if enc is not None else 32
    entry = {
        "tensor": name,
        "shape": list(value.shape),
        "dtype": str(value.dtype),
        "bytes": value.nbytes,
        "producer": value.producer.name if value.producer is not None else None,
        "consumers": [c.name for c in value.consumers if c.name in cloud_nodes],
        "bits": bits,
        "axis": enc.axis if enc is not None else None,
        "wire": enc.wire_names() if enc is not None else [name],
        "codec": {"name": "array"} if (enc or encoding_for(name, 32, None, "none", value.dtype)).exact_array
        else _codec_entry(enc, books),
        "predicted_bytes": value.nbytes,
        "predicted_drop": 0.0,
    }
    if choice is not None:
        share = value.nbytes / max(1, sum(graph.values[t].nbytes for t in choice.option.cut))
        entry["predicted_bytes"] = choice.option.sent_bytes * share
        entry["predicted_drop"] = choice.option.drop
    return entry


def _codec_entry(enc, books: dict[str, str]) -> dict:
    if enc is None or enc.bits == 32:
        return {"name": "none"}
    if enc.bits == 16 or enc.codec == "none":
        return {"name": "none"}
    if enc.codec == "jpeg":
        return {"name": "jpeg", "quality": enc.quality}
    entry = {"name": "huffman"}
    if enc.tensor in books:
        entry["codebook"] = books[enc.tensor]
    return entry


def _io(info: onnx.ValueInfoProto) -> dict:
    tensor = info.type.tensor_type
    return {
        "name": info.name,
        "shape": [d.dim_value for d in tensor.shape.dim],
        "dtype": str(helper.tensor_dtype_to_np_dtype(tensor.elem_type)),
    }


def _half_entry(model: onnx.ModelProto, target: str, cost_model: dict, file: str, data_nodes: int) -> dict:
    return {
        "target": target,
        "cost_model": cost_model,
        "file": file,
        "nodes": data_nodes,
        "inputs": [_io(i) for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}],
        "outputs": [_io(o) for o in model.graph.output],
    }


def _predicted(part: Partition, choice, link: dict) -> dict:
    predicted = {
        "edge_ms": part.edge_ms,
        "transfer_ms": part.transfer_ms,
        "cloud_ms": part.cloud_ms,
        "total_ms": part.total_ms,
        "up_bytes": part.up_bytes,
        "down_bytes": part.down_bytes,
    }
    if choice is not None and choice.option.cut:
        option = choice.option
        predicted["transfer_ms"] = option.transfer_ms(link["bandwidth_Bps"], link["rtt_ms"])
        predicted["total_ms"] = option.total_ms(link["bandwidth_Bps"], link["rtt_ms"])
        predicted["up_bytes"] = option.sent_bytes
    return predicted


def _selection(choice, link: dict) -> dict | None:
    """How the (cut, bits) pair was chosen: the bound, whether it was checked, the runners-up."""
    if choice is None:
        return None
    from splitc.partition.select import option_summary

    bw, rtt = link["bandwidth_Bps"], link["rtt_ms"]
    return {
        "max_drop": choice.max_drop,
        "metric": choice.table.metric if choice.table is not None else None,
        "accuracy_checked": choice.checked,
        "float_score": choice.table.float_score if choice.table is not None else None,
        "confidence": choice.table.confidence if choice.table is not None else None,
        "samples": choice.table.samples if choice.table is not None else None,
        "chosen": _certified(option_summary(choice.option, bw, rtt), choice),
        "runners_up": [_certified(option_summary(o, bw, rtt), choice, o) for o in choice.ranked[1:6]],
    }


def _certified(summary: dict, choice, option=None) -> dict:
    """An option's summary plus its certified bound (None when nothing was measured) and bytes sent back."""
    option = option or choice.option
    summary["drop_bound"] = option.drop + option.drop_se if choice.checked else None
    summary["returned_bytes"] = option.returned_bytes
    if "variant" in option.extra:  # a compressed compile: the edge variant the option runs (docs/compression.md)
        summary["variant"] = option.extra["variant"]
    return summary


def _costs(graph: Graph, costs: CostTable, cloud_nodes: set[str]) -> dict:
    by_name = costs.as_dict()
    nodes = {}
    for node in graph.data_nodes:
        side = "cloud" if node.name in cloud_nodes else "edge"
        nodes[node.name] = {"op_type": node.op_type, "side": side, "flops": node.flops, **by_name[node.name]}
    tensors = {}
    for value in graph.values.values():
        if value.is_constant or not (value.consumers or value.is_graph_output):
            continue
        tensors[value.name] = {
            "bytes": value.nbytes,
            "producer": value.producer.name if value.producer is not None else None,
            "consumers": [c.name for c in value.consumers],
            "graph_output": value.is_graph_output,
        }
    return {"nodes": nodes, "tensors": tensors}


def build_manifest(
    *,
    graph: Graph,
    part: Partition,
    edge: tuple[onnx.ModelProto, str, dict],
    cloud: tuple[onnx.ModelProto, str, dict] | None,
    costs: CostTable,
    link: dict,
    baselines: dict,
    alternatives: list[Partition],
    cut_vertices: list[str],
    solve_ms: float,
    forced: bool,
    cloud_target: str,
    choice=None,
) -> dict:
    """Assemble the manifest; every number in it can be re-checked from ``costs``."""
    cloud_nodes = set(part.cloud_nodes)
    books = _codebook_names(choice)
    return {
        "schema": SCHEMA,
        "splitc_version": __version__,
        "model": {
            "name": graph.name,
            "sha256": graph.sha256,
            "nodes": len(graph.nodes),
            "data_nodes": len(graph.data_nodes),
            "flops": float(sum(n.flops for n in graph.data_nodes)),
            "inputs": [tensor_entry(graph, v.name) for v in graph.inputs],
            "outputs": [tensor_entry(graph, v.name) for v in graph.outputs],
            "shapes": graph.shape_report.to_json() if getattr(graph, "shape_report", None) is not None else None,
        },
        "targets": {"edge": edge[1], "cloud": cloud_target},
        "link": link,
        "kind": part.kind,
        "forced": forced,
        "edge": _half_entry(edge[0], edge[1], edge[2], "edge.onnx", len(part.edge_nodes)),
        "cloud": _half_entry(cloud[0], cloud[1], cloud[2], "cloud.onnx", len(part.cloud_nodes)) if cloud else None,
        "cut": [_cut_entry(graph, t, cloud_nodes, choice, books) for t in part.cut_values],
        "selection": _selection(choice, link),
        "returned": [{"tensor": t, "bytes": graph.values[t].nbytes} for t in part.returned_values],
        "predicted": _predicted(part, choice, link),
        "baselines": baselines,
        "alternatives": [p.to_dict() for p in alternatives],
        "cut_vertices": cut_vertices,
        "solve_ms": solve_ms,
        "costs": _costs(graph, costs, cloud_nodes),
    }
