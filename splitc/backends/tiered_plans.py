"""The files of a three-tier output: ``tiers.json`` and the two-tier plans each server and the device run.

Layout (docs/plan.md, "Three-tier output")::

    OUT/tiers.json              the three-tier manifest
    OUT/device/                 a two-tier plan: device.onnx here, the rest (rest.onnx) on the edge server
    OUT/edge/                   what the edge server serves: edge.onnx, relay.json, the device plan's
                                plan.json (byte for byte) and upstream/plan.json (the cloud's, byte for byte)
    OUT/cloud/                  a two-tier plan: front.onnx (device and edge composed) and cloud.onnx

Without cloud nodes the edge server is the last stage: ``OUT/edge`` is then the device plan with its
``rest.onnx`` (the edge half), served like any plan, and there is no ``OUT/cloud``. Without edge or
cloud nodes only ``OUT/device`` (edge-only) is written.
"""

from __future__ import annotations

import json

import onnx
from onnx import helper

from splitc._version import __version__
from splitc.artifacts.plan import Plan
from splitc.backends.manifest import SCHEMA, tensor_entry

TIERS_SCHEMA = "splitc.tiers/1"
RELAY_SCHEMA = "splitc.relay/1"
LINK_NAMES = ("device-edge", "edge-cloud")


def book_names(split) -> dict[str, str]:
    """File name (under the plan directory) of each cut tensor's static codebook."""
    return {t: f"codebooks/{i}.bin" for i, t in enumerate(sorted(split.books))}


def _io(info: onnx.ValueInfoProto) -> dict:
    tensor = info.type.tensor_type
    return {"name": info.name, "shape": [d.dim_value for d in tensor.shape.dim],
            "dtype": str(helper.tensor_dtype_to_np_dtype(tensor.elem_type))}


def half_entry(model: onnx.ModelProto, target: str, cost_model: dict, file: str, nodes: int,
               passes: list | None = None) -> dict:
    """A half as ``plan.json`` describes it (``edge`` / ``cloud`` entries)."""
    inits = {t.name for t in model.graph.initializer}
    entry = {"target": target, "cost_model": cost_model, "file": file, "nodes": nodes,
             "inputs": [_io(i) for i in model.graph.input if i.name not in inits],
             "outputs": [_io(o) for o in model.graph.output]}
    if passes is not None:
        entry["passes"] = passes
    return entry


def codec_entry(enc, books: dict[str, str]) -> dict:
    """The ``codec`` field of a cut entry."""
    if enc.exact_array:
        return {"name": "array"}
    if enc.bits > 8 or enc.codec == "none":
        return {"name": "none"}
    entry = {"name": "huffman"}
    if enc.tensor in books:
        entry["codebook"] = books[enc.tensor]
    return entry


def cut_entries(split, tensors: list[str], readers: set[str]) -> list[dict]:
    """The ``cut`` entries of ``tensors``, each with the encoding it crosses in."""
    graph, books = split.graph, book_names(split)
    entries = []
    for name in tensors:
        value, enc = graph.values[name], split.encodings[name]
        entries.append({
            "tensor": name, "shape": list(value.shape), "dtype": str(value.dtype), "bytes": value.nbytes,
            "producer": value.producer.name if value.producer is not None else None,
            "consumers": [c.name for c in value.consumers if c.name in readers],
            "bits": enc.bits, "axis": enc.axis, "wire": enc.wire_names(), "codec": codec_entry(enc, books),
            "predicted_bytes": split.sizes[name], "predicted_drop": split.accuracy.get("drop") or 0.0,
        })
    return entries


def _link(split, k: int) -> dict:
    bandwidth, rtt = split.links[k]
    return {"bandwidth_Bps": bandwidth, "bandwidth_bps": bandwidth * 8, "rtt_ms": rtt}


def _model(graph) -> dict:
    return {"name": graph.name, "sha256": graph.sha256, "nodes": len(graph.nodes),
            "data_nodes": len(graph.data_nodes), "flops": float(sum(n.flops for n in graph.data_nodes)),
            "inputs": [tensor_entry(graph, v.name) for v in graph.inputs],
            "outputs": [tensor_entry(graph, v.name) for v in graph.outputs]}


def _plan(split, role: str, link: int, edge: dict, cloud: dict | None, cut: list[str], returned: list[str],
          readers: set[str], predicted: dict) -> dict:
    lower, upper = (0, 1) if link == 0 else (1, 2)
    kind = "edge-only" if cloud is None else ("cloud-only" if not edge["nodes"] else "split")
    plan = {
        "schema": SCHEMA, "splitc_version": __version__, "model": _model(split.graph),
        "targets": {"edge": split.targets[lower], "cloud": split.targets[upper]},
        "link": _link(split, link), "kind": kind, "forced": split.forced,
        "tier": {"role": role, "tiers": list(split.targets), "manifest": "../tiers.json"},
        "edge": edge, "cloud": cloud, "cut": cut_entries(split, cut, readers), "selection": None,
        "returned": [{"tensor": t, "bytes": split.graph.values[t].nbytes} for t in returned],
        "predicted": predicted,
    }
    if split.preprocess is not None:
        plan["preprocess"] = split.preprocess
    return Plan.from_json(plan).to_json()  # checked as every runtime reads it


def device_plan(split) -> dict:
    """The device's two-tier plan: ``device.onnx``, and ``rest.onnx`` (edge and cloud halves composed)."""
    p, parts = split.prediction, split.parts
    edge = half_entry(split.halves["device"], split.targets[0], split.cost_models[0], "device.onnx",
                      len(parts.nodes[0]), split.passes.get("device"))
    rest = split.halves.get("rest")
    cloud = None
    if rest is not None:
        cloud = half_entry(rest, "+".join(split.targets[1:] if parts.nodes[2] else split.targets[1:2]),
                           split.cost_models[1], "rest.onnx", len(parts.nodes[1]) + len(parts.nodes[2]))
    above = p["compute_ms"][1] + p["compute_ms"][2] + p["transfer_ms"][1]
    predicted = {"edge_ms": p["compute_ms"][0], "transfer_ms": p["transfer_ms"][0], "cloud_ms": above,
                 "total_ms": p["total_ms"], "up_bytes": p["up_bytes"][0], "down_bytes": p["down_bytes"][0]}
    readers = set(parts.nodes[1]) | set(parts.nodes[2])
    return _plan(split, "device", 0, edge, cloud, parts.link1, parts.returned, readers, predicted)


def cloud_plan(split) -> dict:
    """The cloud's two-tier plan: ``front.onnx`` (device and edge halves composed) and ``cloud.onnx``."""
    p, parts = split.prediction, split.parts
    edge = half_entry(split.halves["front"], "+".join(split.targets[:2]), split.cost_models[1], "front.onnx",
                      len(parts.nodes[0]) + len(parts.nodes[1]))
    cloud = half_entry(split.halves["cloud"], split.targets[2], split.cost_models[2], "cloud.onnx",
                       len(parts.nodes[2]), split.passes.get("cloud"))
    below = p["compute_ms"][0] + p["transfer_ms"][0] + p["compute_ms"][1]
    predicted = {"edge_ms": below, "transfer_ms": p["transfer_ms"][1], "cloud_ms": p["compute_ms"][2],
                 "total_ms": p["total_ms"], "up_bytes": p["up_bytes"][1], "down_bytes": p["down_bytes"][1]}
    return _plan(split, "cloud", 1, edge, cloud, parts.link2, parts.outputs[2], set(parts.nodes[2]), predicted)


def relay_manifest(split) -> dict:
    """``relay.json``: what the relaying edge server does with a device's request."""
    parts, middle = split.parts, split.halves.get("edge")
    relayed = set(parts.relayed)
    edge = None
    if middle is not None:
        edge = half_entry(middle, split.targets[1], split.cost_models[1], "edge.onnx", len(parts.nodes[1]),
                          split.passes.get("edge"))
    return {
        "schema": RELAY_SCHEMA,
        "edge": edge,
        "consumed": parts.consumed(split.graph) if middle is not None else [],
        "returned": list(parts.outputs[1]),
        "upstream": {"dir": "upstream", "cut": [{"tensor": t, "source": "relay" if t in relayed else "edge"}
                                                for t in parts.link2]},
    }


def _json(data: dict) -> bytes:
    return (json.dumps(data, indent=2) + "\n").encode()


def _books(split, tensors: list[str], prefix: str) -> dict[str, bytes]:
    names = book_names(split)
    return {f"{prefix}{names[t]}": split.books[t].to_bytes() for t in tensors if t in names}


def output_files(split) -> dict[str, bytes | onnx.ModelProto]:
    """Every file of the output directory, by relative path (ONNX halves as models, the rest as bytes)."""
    parts = split.parts
    above, cloud_used = parts.used
    device = _json(device_plan(split))
    files: dict[str, bytes | onnx.ModelProto] = {"tiers.json": _json(tiers_manifest(split)),
                                                 "device/plan.json": device,
                                                 "device/device.onnx": split.halves["device"],
                                                 **_books(split, parts.link1, "device/")}
    if split.calibration is not None:
        files["calibration.json"] = _json(split.calibration)
    if not above:
        return files
    files["device/rest.onnx"] = split.halves["rest"]
    files["edge/plan.json"] = device
    files.update(_books(split, parts.link1, "edge/"))
    if not cloud_used:
        files["edge/rest.onnx"] = split.halves["rest"]
        return files
    cloud = _json(cloud_plan(split))
    files.update({"edge/relay.json": _json(relay_manifest(split)), "edge/upstream/plan.json": cloud,
                  "cloud/plan.json": cloud, "cloud/front.onnx": split.halves["front"],
                  "cloud/cloud.onnx": split.halves["cloud"]})
    if split.halves.get("edge") is not None:
        files["edge/edge.onnx"] = split.halves["edge"]
    files.update(_books(split, parts.link2, "edge/upstream/"))
    files.update(_books(split, parts.link2, "cloud/"))
    return files


def tiers_manifest(split) -> dict:
    """``tiers.json``: the tiers, the links, what crosses each, the predicted latency and the accuracy bound."""
    parts, p, graph = split.parts, split.prediction, split.graph
    above, cloud_used = parts.used
    files = ("device/device.onnx", "edge/edge.onnx" if cloud_used else "edge/rest.onnx", "cloud/cloud.onnx")
    tiers = [{"name": name, "target": split.targets[k], "cost_model": split.cost_models[k],
              "nodes": len(parts.nodes[k]), "compute_ms": p["compute_ms"][k],
              "file": files[k] if parts.nodes[k] or k == 0 else None,
              "outputs": list(parts.outputs[k])} for k, name in enumerate(("device", "edge", "cloud"))]
    cuts = (parts.link1, parts.link2)
    downs = (parts.returned, list(parts.outputs[2]))
    readers = (set(parts.nodes[1]) | set(parts.nodes[2]), set(parts.nodes[2]))
    links = [{"name": LINK_NAMES[k], **_link(split, k), "used": bool(p["used"][k]),
              "cut": [{**c, "relayed": c["tensor"] in parts.relayed}
                      for c in cut_entries(split, cuts[k], readers[k])],
              "returned": [{"tensor": t, "bytes": graph.values[t].nbytes} for t in downs[k]],
              "up_bytes": p["up_bytes"][k], "down_bytes": p["down_bytes"][k],
              "transfer_ms": p["transfer_ms"][k]} for k in range(2)]
    breakdown = {"device_ms": p["compute_ms"][0], "device_edge_ms": p["transfer_ms"][0],
                 "edge_ms": p["compute_ms"][1], "edge_cloud_ms": p["transfer_ms"][1],
                 "cloud_ms": p["compute_ms"][2], "total_ms": p["total_ms"]}
    return {
        "schema": TIERS_SCHEMA, "splitc_version": __version__, "model": _model(graph),
        "tiers": tiers, "links": links, "forced": split.forced, "predicted": breakdown,
        "solver": split.solver, "accuracy": split.accuracy,
        "assignment": {n: name for name, nodes in zip(("device", "edge", "cloud"), parts.nodes) for n in nodes},
        "plans": {"device": "device", "edge": "edge" if above else None, "cloud": "cloud" if cloud_used else None},
    }
