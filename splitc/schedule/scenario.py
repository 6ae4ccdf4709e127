"""Multi-device scenarios (DeePar section III): parsing, checking, and the per-task delay matrix.

A scenario (JSON, documented in docs/three-tier.md) has one cloud, edge servers with ``slots`` (r_e)
concurrent tasks, a device-side bandwidth ``uplink_mbps`` (B_e^1) and a backbone bandwidth
``backbone_mbps`` (B_e^2), and devices (one task each) with a model, a device target, the edge servers
they reach, ``samples`` (N_i), ``arrival_s`` and per-task bandwidth caps ``max_uplink_mbps`` (B_i^1) and
``max_backbone_mbps`` (B_i^2).

A task runs in one *mode* per sample: ``device`` (tier 0 only), ``edge`` (device + edge server j),
``cloud`` (device + cloud, relayed by edge server j, which computes nothing) or ``full`` (device + edge j +
cloud). DeePar's w_{i,j} (j = 0, 1..m, m+1..2m, 2m+1..3m) is the exact optimum of the three-tier
partitioner (:mod:`splitc.partition`) restricted to the mode's tiers, times N_i. ``edge-only`` and
``cloud-only`` (everything on that tier) are the baselines' modes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from splitc.errors import SplitcError
from splitc.partition.tiers import Link, TierProblem, evaluate_tiers, solve_tiers

MODES = ("device", "edge", "cloud", "full")
BASELINE_MODES = ("edge-only", "cloud-only")
USES = {  # mode -> (edge slot, device-edge bandwidth, backbone bandwidth)
    "device": (0, 0, 0), "edge": (1, 1, 0), "cloud": (0, 1, 1), "full": (1, 1, 1),
    "edge-only": (1, 1, 0), "cloud-only": (0, 1, 1),
}
TIERS = {"device": (0,), "edge": (0, 1), "cloud": (0, 2), "full": (0, 1, 2), "edge-only": (1,), "cloud-only": (2,)}


class ScenarioError(SplitcError):
    """A scenario that cannot be scheduled: one line naming the field or the device."""


@dataclass
class EdgeServer:
    name: str
    target: str
    slots: int  # r_e
    uplink: float  # B_e^1, bytes/s
    backbone: float  # B_e^2, bytes/s


@dataclass
class Device:
    name: str
    model: str
    target: str
    edges: list[int]  # indices of reachable edge servers (E_i)
    samples: int  # N_i
    arrival_s: float
    max_uplink: float  # B_i^1, bytes/s
    max_backbone: float  # B_i^2, bytes/s
    local: bool = True  # can run the model itself


@dataclass
class Scenario:
    cloud: str
    edges: list[EdgeServer]
    devices: list[Device]
    rtt_device_edge_ms: float = 2.0
    rtt_edge_cloud_ms: float = 20.0
    warnings: list[str] = field(default_factory=list)
    _cache: dict = field(default_factory=dict, repr=False)

    # -- delays ------------------------------------------------------------------------------------
    def problem(self, i: int, edge: int | None) -> TierProblem:
        """Device i's three-tier problem with edge server ``edge``'s target on the middle tier."""
        d = self.devices[i]
        mid = self.edges[edge].target if edge is not None else self.edges[0].target if self.edges else self.cloud
        key = ("problem", d.model, d.target, mid, self.cloud)
        if key not in self._cache:
            from splitc.schedule.models import tier_problem

            self._cache[key] = tier_problem(d.model, (d.target, mid, self.cloud))
        return self._cache[key]

    def links(self, b1: float, b2: float) -> list[Link]:
        return [Link(b1, self.rtt_device_edge_ms), Link(b2, self.rtt_edge_cloud_ms)]

    def sample_plan(self, i: int, mode: str, edge: int | None, b1: float, b2: float) -> tuple[float, np.ndarray]:
        """Exact per-sample delay (ms) and tiers of device i's task in ``mode`` at bandwidths b1, b2 (B/s)."""
        key = ("plan", i, mode, None if mode == "device" else edge, round(b1, 3), round(b2, 3))
        if key not in self._cache:
            p = self.problem(i, edge).with_links(self.links(max(b1, 1e-9), max(b2, 1e-9))).restricted(TIERS[mode])
            if mode in BASELINE_MODES:
                tier = np.full(p.num_nodes, TIERS[mode][0])
                self._cache[key] = (evaluate_tiers(p, tier).total_ms, tier)
            else:
                r = solve_tiers(p, check_dead=False)
                self._cache[key] = (r.total_ms, r.tier)
        return self._cache[key]

    def priced(self, i: int, edge: int | None, tier: np.ndarray, b1: float, b2: float) -> float:
        """Per-sample delay (ms) of a fixed assignment at other bandwidths."""
        p = self.problem(i, edge).with_links(self.links(max(b1, 1e-9), max(b2, 1e-9)))
        return evaluate_tiers(p, tier).total_ms

    def task_seconds(self, i: int, mode: str, edge: int | None, b1: float, b2: float) -> float:
        return self.devices[i].samples * self.sample_plan(i, mode, edge, b1, b2)[0] / 1e3

    def options(self, i: int, modes=MODES) -> list[tuple[str, int | None]]:
        """Device i's options: (mode, edge index); device-only needs no edge."""
        d = self.devices[i]
        out = [("device", None)] if "device" in modes and d.local else []
        out += [(mode, e) for mode in modes if mode != "device" for e in d.edges]
        return out

    def delay_matrix(self) -> np.ndarray:
        """DeePar's W: (n, 3m + 1) task delays in seconds at the full per-task bandwidths; inf = not allowed."""
        m = len(self.edges)
        W = np.full((len(self.devices), 3 * m + 1), np.inf)
        for i, d in enumerate(self.devices):
            for mode, e in self.options(i):
                col = 0 if mode == "device" else {"edge": 1, "cloud": 1 + m, "full": 1 + 2 * m}[mode] + e
                W[i, col] = self.task_seconds(i, mode, e, d.max_uplink, d.max_backbone)
        return W


# -- parsing -----------------------------------------------------------------------------------------
def _objects(data: dict, key: str, allow_empty: bool):
    """``(path, object)`` for each entry of the list ``data[key]``; one-line errors for anything else."""
    items = data[key]
    if not isinstance(items, list) or (not items and not allow_empty):
        raise ScenarioError(f"scenario.{key}: must be a {'' if allow_empty else 'non-empty '}list")
    for k, item in enumerate(items):
        if not isinstance(item, dict):
            raise ScenarioError(f"{key}[{k}]: must be an object")
        yield f"{key}[{k}]", item


def _field(obj: dict, path: str, key: str, kind: str, default=None):
    where = f"{path}.{key}"
    if key not in obj:
        if default is not None:
            return default
        raise ScenarioError(f"{where}: missing")
    value = obj[key]
    if kind == "str":
        if not isinstance(value, str) or not value:
            raise ScenarioError(f"{where}: must be a non-empty string (got {value!r})")
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ScenarioError(f"{where}: must be a number (got {value!r})")
    if kind == "positive" and value <= 0:
        raise ScenarioError(f"{where}: must be positive (got {value!r})")
    if kind == "count" and (value <= 0 or int(value) != value):
        raise ScenarioError(f"{where}: must be a positive integer (got {value!r})")
    if kind == "nonneg" and value < 0:
        raise ScenarioError(f"{where}: must be >= 0 (got {value!r})")
    return int(value) if kind == "count" else float(value)


def _mbps(value: float) -> float:
    return value * 1e6 / 8


def parse_scenario(data: dict) -> Scenario:
    """Check a scenario dict; every error is one line naming the field (or the device)."""
    from splitc.targets import get_target
    from splitc.schedule.models import BUILDERS

    if not isinstance(data, dict):
        raise ScenarioError("scenario: must be a JSON object")
    for key in ("cloud", "edges", "devices"):
        if key not in data:
            raise ScenarioError(f"scenario.{key}: missing")
    cloud = data["cloud"]
    cloud_target = _field(cloud if isinstance(cloud, dict) else {"target": cloud}, "cloud", "target", "str")

    def target(name: str, where: str) -> str:
        try:
            get_target(name)
        except SplitcError as exc:
            raise ScenarioError(f"{where}: {exc}") from None
        return name

    target(cloud_target, "cloud.target")
    links = data.get("links", {})
    rtt1 = _field(links, "links", "device_edge_rtt_ms", "nonneg", 2.0)
    rtt2 = _field(links, "links", "edge_cloud_rtt_ms", "nonneg", 20.0)
    edges, index = [], {}
    for path, e in _objects(data, "edges", allow_empty=True):
        name = _field(e, path, "name", "str")
        if name in index:
            raise ScenarioError(f"{path}.name: duplicate edge server {name!r}")
        index[name] = len(edges)
        edges.append(EdgeServer(name, target(_field(e, path, "target", "str"), f"{path}.target"),
                                _field(e, path, "slots", "count"), _mbps(_field(e, path, "uplink_mbps", "positive")),
                                _mbps(_field(e, path, "backbone_mbps", "positive"))))
    devices, warnings, names = [], [], set()
    for path, d in _objects(data, "devices", allow_empty=False):
        name = _field(d, path, "name", "str")
        if name in names:
            raise ScenarioError(f"{path}.name: duplicate device {name!r}")
        names.add(name)
        model = _field(d, path, "model", "str")
        if model not in BUILDERS and not model.endswith(".onnx"):
            from splitc.testing import zoo

            if model not in zoo.MODELS:
                raise ScenarioError(f"{path}.model: unknown model {model!r} (vgg16, resnet50, lenet, a zoo "
                                    "name or an .onnx path)")
        if model.endswith(".onnx") and not Path(model).is_file():
            raise ScenarioError(f"{path}.model: no such file {model!r}")
        reach = d.get("edges", [])
        if not isinstance(reach, list):
            raise ScenarioError(f"{path}.edges: must be a list of edge server names")
        unknown = [r for r in reach if r not in index]
        if unknown:
            raise ScenarioError(f"device {name!r} names unknown edge server {unknown[0]!r} in {path}.edges")
        local = d.get("local", True)
        if not isinstance(local, bool):
            raise ScenarioError(f"{path}.local: must be true or false")
        if not reach and not local:
            raise ScenarioError(f"device {name!r} is unreachable: no edge server in reach ({path}.edges is "
                                "empty), so neither the edge nor the cloud can serve it, and it cannot run "
                                "the model locally (local: false)")
        if not reach:
            warnings.append(f"device {name!r} reaches no edge server: it can only run device-only")
        devices.append(Device(name, model, target(_field(d, path, "target", "str"), f"{path}.target"),
                              [index[r] for r in reach], _field(d, path, "samples", "count"),
                              _field(d, path, "arrival_s", "nonneg", 0.0),
                              _mbps(_field(d, path, "max_uplink_mbps", "positive")),
                              _mbps(_field(d, path, "max_backbone_mbps", "positive")), local))
    return Scenario(cloud_target, edges, devices, rtt1, rtt2, warnings)


def load_scenario(path: str | Path) -> Scenario:
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ScenarioError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    return parse_scenario(data)


def generate(num_devices: int, num_edges: int, window_s: float, seed: int = 0,
             models=("vgg16", "resnet50", "lenet"), max_samples: int = 1000) -> dict:
    """A random scenario with DeePar's simulation ranges (section V-B)."""
    rng = np.random.default_rng(seed)
    edges = [{"name": f"edge{k}", "target": "gtx-1080ti", "slots": int(rng.integers(1, 11)),
              "uplink_mbps": float(rng.uniform(5e3, 20e3)), "backbone_mbps": float(rng.uniform(100, 5e3))}
             for k in range(num_edges)]
    devices = []
    for i in range(num_devices):
        reach = rng.choice(num_edges, size=int(rng.integers(1, min(3, num_edges) + 1)), replace=False)
        devices.append({"name": f"dev{i}", "model": str(models[int(rng.integers(len(models)))]),
                        "target": "snapdragon-835", "edges": [f"edge{int(k)}" for k in sorted(reach)],
                        "samples": int(rng.integers(1, max_samples + 1)),
                        "arrival_s": float(rng.uniform(0, window_s)),
                        "max_uplink_mbps": float(rng.uniform(20, 300)),
                        "max_backbone_mbps": float(rng.uniform(10, 50))})
    return {"cloud": {"target": "t4"}, "links": {"device_edge_rtt_ms": 2.0, "edge_cloud_rtt_ms": 20.0},
            "edges": edges, "devices": devices}
