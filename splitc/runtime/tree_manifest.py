"""``tree.json`` as the edge runtime reads it: blocks, forks, entry points and the policy's decision per class.

The runtime needs only a part of what ``splitc tree`` writes (docs/plan.md,
"Model-tree output"): each block's variant files, each fork's tensors and
entry points (plan ids of ``plans.json``), the chain's class edges and
stationary distribution, and the policy's nodes. Anything malformed or
missing is a ``PlanError`` naming the file and the field; a missing artifact
is named by its path before anything runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from splitc.runtime.errors import PlanError

FORMAT = "splitc-model-tree-output"
POLICY_FORMAT = "splitc-model-tree"
TREE_FILE = "tree.json"

__all__ = ["Decision", "ForkEntry", "TreeManifest"]


@dataclass(frozen=True)
class Decision:
    """The policy's action at one (fork, path, class): ``run`` variant ``index`` or ``offload`` with ``label``."""

    kind: str
    index: int
    label: str = ""


@dataclass(frozen=True)
class ForkEntry:
    """A fork: the tensors sent there and its entry points (width label -> plan id)."""

    tensors: tuple[str, ...]
    entry_points: dict[str, str]


@dataclass
class TreeManifest:
    """The runtime's view of ``tree.json`` (see the module docstring)."""

    out_dir: Path
    inputs: list[dict]
    outputs: list[str]
    blocks: list[list[tuple[str, Path]]]  # per block: (variant name, file)
    forks: list[ForkEntry]
    edges: np.ndarray  # class edges, bytes/s
    stationary: np.ndarray
    nodes: dict[tuple[int, tuple[int, ...]], tuple[Decision, ...]]

    @classmethod
    def load(cls, out_dir: str | Path) -> TreeManifest:
        """Read and check ``OUT/tree.json`` and that every block file it lists exists."""
        out = Path(out_dir)
        path = out / TREE_FILE
        if not path.is_file():
            raise PlanError(f"{out}: no {TREE_FILE} (not a splitc tree output directory)")
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise PlanError(f"{path}: not readable JSON: {exc}") from exc
        try:
            manifest = cls._parse(out, data)
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"{path}: malformed: {type(exc).__name__}: {exc}") from exc
        for b, variants in enumerate(manifest.blocks):
            for name, file in variants:
                if not file.is_file():
                    raise PlanError(f"{file}: missing ({TREE_FILE} lists it for block {b}, variant {name!r})")
        return manifest

    @classmethod
    def _parse(cls, out: Path, data: Any) -> TreeManifest:
        if data.get("format") != FORMAT or data.get("version") != 1:
            raise ValueError(f"format {data.get('format')!r} version {data.get('version')!r}, expected {FORMAT!r} 1")
        policy, chain = data["policy"], data["chain"]
        if policy.get("format") != POLICY_FORMAT:
            raise ValueError(f"policy format {policy.get('format')!r}, expected {POLICY_FORMAT!r}")
        edges = np.asarray(policy["edges_Bps"], float)
        stationary = np.asarray(policy.get("stationary", chain["stationary"]), float)
        classes = len(edges) + 1
        nodes = {}
        for node in policy["nodes"]:
            actions = tuple(_decision(a) for a in node["actions"])
            if len(actions) != classes:
                raise ValueError(f"node at fork {node['fork']} has {len(actions)} actions for {classes} classes")
            nodes[(int(node["fork"]), tuple(int(v) for v in node["path"]))] = actions
        blocks = [[(str(v["name"]), out / str(v["file"])) for v in block["variants"]] for block in data["blocks"]]
        forks = [ForkEntry(tuple(str(t) for t in f["tensors"]), {str(k): str(v) for k, v in f["entry_points"].items()})
                 for f in data["forks"]]
        if len(forks) != len(blocks) or not blocks:
            raise ValueError(f"{len(forks)} forks for {len(blocks)} blocks (there must be one fork per block)")
        model = data["model"]
        return cls(out, list(model["inputs"]), [str(o["name"]) for o in model["outputs"]], blocks, forks, edges,
                   stationary, nodes)

    @property
    def num_blocks(self) -> int:
        """B, the number of blocks (fork B is the end of the model)."""
        return len(self.blocks)

    def classify(self, rate: float | None) -> int:
        """The class of a rate (bytes/s); with no rate, the class the chain is most often in."""
        if rate is None:
            return int(np.argmax(self.stationary))
        return int(np.searchsorted(self.edges, rate, side="left"))

    def decide(self, fork: int, path: tuple[int, ...], cls: int) -> Decision:
        """The policy's decision at ``fork`` after ``path`` in class ``cls``."""
        actions = self.nodes.get((fork, tuple(path)))
        if actions is None:
            raise PlanError(f"{self.out_dir / TREE_FILE}: the policy has no decision at fork {fork}, path {path}")
        return actions[cls]

    def entry_point(self, fork: int, label: str) -> str:
        """The plan id that serves an offload at ``fork`` with width ``label``."""
        plan_id = self.forks[fork].entry_points.get(label)
        if plan_id is None:
            raise PlanError(f"{self.out_dir / TREE_FILE}: fork {fork} has no entry point for {label!r}")
        return plan_id

    def used_entry_points(self) -> list[str]:
        """The plan ids of every offload the policy can make."""
        found = {self.entry_point(fork, a.label) for (fork, _), actions in self.nodes.items()
                 for a in actions if a.kind == "offload"}
        return sorted(found)


def _decision(item: dict) -> Decision:
    if "run" in item:
        return Decision("run", int(item["run"]))
    return Decision("offload", int(item["offload"]), str(item.get("label", "")))
