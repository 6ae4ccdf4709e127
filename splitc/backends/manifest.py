"""The plan manifest, ``plan.json``: what each half computes and why (see docs/plan.md)."""

from __future__ import annotations

from splitc import __version__
from splitc.backends.onnx_backend import HalfSpec
from splitc.ir.graph import Graph
from splitc.passes.cost import CostTable
from splitc.passes.partition import Partition

SCHEMA = "splitc.plan/1"


def tensor_entry(graph: Graph, name: str) -> dict:
    value = graph.values[name]
    return {
        "name": name,
        "shape": list(value.shape) if value.shape is not None else None,
        "dtype": str(value.dtype) if value.dtype is not None else None,
    }


def _cut_entry(graph: Graph, name: str, cloud_nodes: set[str]) -> dict:
    value = graph.values[name]
    return {
        "tensor": name,
        "shape": list(value.shape),
        "dtype": str(value.dtype),
        "bytes": value.nbytes,
        "producer": value.producer.name if value.producer is not None else None,
        "consumers": [c.name for c in value.consumers if c.name in cloud_nodes],
        "bits": 32,
        "codec": "none",
        "predicted_bytes": value.nbytes,
        "predicted_drop": 0.0,
    }


def _half_entry(graph: Graph, spec: HalfSpec, target: str, cost_model: dict, file: str) -> dict:
    return {
        "target": target,
        "cost_model": cost_model,
        "file": file,
        "nodes": len(spec.nodes),
        "inputs": [tensor_entry(graph, t) for t in spec.inputs],
        "outputs": [tensor_entry(graph, t) for t in spec.outputs],
    }


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
    edge: tuple[HalfSpec, str, dict],
    cloud: tuple[HalfSpec, str, dict] | None,
    costs: CostTable,
    link: dict,
    baselines: dict,
    alternatives: list[Partition],
    cut_vertices: list[str],
    solve_ms: float,
    forced: bool,
    cloud_target: str,
) -> dict:
    """Assemble the manifest; every number in it can be re-checked from ``costs``."""
    cloud_nodes = set(part.cloud_nodes)
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
        },
        "targets": {"edge": edge[1], "cloud": cloud_target},
        "link": link,
        "kind": part.kind,
        "forced": forced,
        "edge": _half_entry(graph, edge[0], edge[1], edge[2], "edge.onnx"),
        "cloud": _half_entry(graph, cloud[0], cloud[1], cloud[2], "cloud.onnx") if cloud else None,
        "cut": [_cut_entry(graph, t, cloud_nodes) for t in part.cut_values],
        "returned": [{"tensor": t, "bytes": graph.values[t].nbytes} for t in part.returned_values],
        "predicted": {
            "edge_ms": part.edge_ms,
            "transfer_ms": part.transfer_ms,
            "cloud_ms": part.cloud_ms,
            "total_ms": part.total_ms,
            "up_bytes": part.up_bytes,
            "down_bytes": part.down_bytes,
        },
        "baselines": baselines,
        "alternatives": [p.to_dict() for p in alternatives],
        "cut_vertices": cut_vertices,
        "solve_ms": solve_ms,
        "costs": _costs(graph, costs, cloud_nodes),
    }
