"""A measured profile as a cost model (``--target device.json``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from splitc.ir.graph import Graph, Node
from splitc.cost.schema import Profile, ProfileError, load_profile


class ProfileCostModel:
    """Per-node medians from a ``splitc profile`` file, plus its measured prefix/suffix times.

    ``bind(graph)`` checks that the profile was measured on this model and
    notes the nodes it lacks; those fall back to the ``host``-calibrated
    roofline.
    """

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.name = profile.name
        self._node_ms = profile.node_ms()
        self.model_match = "unchecked"
        self.fallback_nodes: list[str] = []
        self._fallback = None

    def bind(self, graph: Graph) -> None:
        """Check the model (sha256, else identical node names) and input shapes; note missing nodes."""
        self.model_match = check_model(self.profile, graph)
        self.fallback_nodes = [n.name for n in graph.data_nodes if n.name not in self._node_ms]

    def node_ms(self, node: Node) -> float:
        if node.constant:
            return 0.0
        if node.name in self._node_ms:
            return self._node_ms[node.name]
        if node.name not in self.fallback_nodes:
            self.fallback_nodes.append(node.name)
        return self._roofline().node_ms(node)

    def _roofline(self):
        if self._fallback is None:
            from splitc.cost.roofline import roofline_for
            from splitc.targets import get_target

            self._fallback = roofline_for(get_target("host"))
        return self._fallback

    def measured_ms(self, side: str, value_names: list[str]) -> np.ndarray:
        """Measured ``"prefix"`` or ``"suffix"`` time per value, NaN where not measured."""
        times = self.profile.segment_ms(side)
        return np.array([times.get(name, np.nan) for name in value_names], dtype=np.float64)

    def describe(self) -> dict:
        data = self.profile.data
        machine = data.get("machine", {})
        described = {
            "kind": "profile",
            "profile": {
                "path": str(self.profile.path), "sha256": self.profile.sha256, "name": self.name,
                "created": data.get("created"), "settings": data.get("settings"),
                "machine": {k: machine.get(k) for k in ("cpu", "cores", "onnxruntime", "provider")},
            },
            "model_match": self.model_match,
            "segments": {side: len(data["segments"][side]) for side in ("prefix", "suffix")},
            "fallback_nodes": list(self.fallback_nodes),
        }
        if self.fallback_nodes:
            described["fallback"] = self._roofline().describe()
        return described


def check_model(profile: Profile, graph: Graph) -> str:
    """How the profile matches ``graph`` (``"sha256"`` or ``"node names"``); raises if it does not."""
    model = profile.data["model"]
    _check_inputs(profile, graph)
    if model["sha256"] == graph.sha256:
        return "sha256"
    names = [n.name for n in graph.data_nodes]
    if sorted(model["nodes"]) == sorted(names):
        return "node names"
    theirs, ours = set(model["nodes"]), set(names)
    odd = sorted(theirs ^ ours)[0]
    raise ProfileError(f"profile {profile.path} was measured on another model ({model.get('name', '?')!r}, "
                       f"sha256 {model['sha256'][:12]}…; this one is {graph.sha256[:12]}…): node {odd!r} is in "
                       f"{'the profile' if odd in theirs else 'this model'} only; run `splitc profile` on this model")


def _check_inputs(profile: Profile, graph: Graph) -> None:
    shapes = {v.name: list(v.shape) for v in graph.inputs}
    measured = profile.data["model"].get("inputs", [])
    entries = measured if isinstance(measured, list) else []
    found = {e.get("name"): e.get("shape") for e in entries if isinstance(e, dict)}
    for name, shape in found.items():
        if shapes.get(name) != shape:
            raise ProfileError(f"profile {profile.path} was measured with input {name!r} of shape {shape}, "
                               f"but this model's inputs are {shapes}")


def is_profile_path(spec) -> bool:
    """True for a path (str or PathLike) ending in ``.json``."""
    return isinstance(spec, (str, os.PathLike)) and str(spec).lower().endswith(".json")


def load_cost_model(path: str | os.PathLike) -> ProfileCostModel:
    """Load a profile file as a cost model (raises ProfileError for a bad file)."""
    return ProfileCostModel(load_profile(Path(path)))


def attach_measured(problem, edge, cloud):
    """Give the problem the edge model's measured prefixes and the cloud model's measured suffixes.

    The whole-model time is the prefix of the model's only output (edge-only)
    and the suffix of its only input (cloud-only).
    """
    names = problem.value_names or []
    outputs, inputs = np.flatnonzero(problem.is_output), np.flatnonzero(problem.producer < 0)
    if isinstance(edge, ProfileCostModel):
        problem.edge_prefix_ms = _with_whole(edge, edge.measured_ms("prefix", names), outputs)
    if isinstance(cloud, ProfileCostModel):
        problem.cloud_suffix_ms = _with_whole(cloud, cloud.measured_ms("suffix", names), inputs)
    return problem


def _with_whole(model: ProfileCostModel, times: np.ndarray, only: np.ndarray) -> np.ndarray:
    if len(only) == 1 and np.isnan(times[only[0]]):
        times[only[0]] = model.profile.data["whole_model"]["median_ms"]
    return times
