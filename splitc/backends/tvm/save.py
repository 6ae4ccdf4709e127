"""Write a split's halves as TVM shared libraries (``edge.so``, ``cloud.so``) and their plan entries."""

from __future__ import annotations

import copy
from pathlib import Path

from splitc.backends import onnx_backend as emit
from splitc.backends.tvm.build import Warn, build_half, default_warn, require_tvm
from splitc.backends.tvm.errors import UnsupportedOpsError
from splitc.backends.tvm.ops import convert_map, unsupported_nodes
from splitc.backends.tvm.targets import TvmTarget, cloud_target, edge_target
from splitc.errors import SplitcError

FALLBACKS = (None, "onnx")


def _halves(split) -> list[tuple[str, object]]:
    halves = [("edge", split.edge_model)]
    if split.cloud_model is not None:
        halves.append(("cloud", split.cloud_model))
    return halves


def _target(plan: dict, side: str, warn: Warn) -> TvmTarget:
    name = plan[side]["target"]
    return edge_target(name) if side == "edge" else cloud_target(name, warn)


def check_halves(split, fallback: str | None) -> dict[str, list[tuple[str, str, str]]]:
    """Offending nodes per half; raises ``UnsupportedOpsError`` listing them all unless falling back."""
    known = convert_map()
    bad = {side: unsupported_nodes(model, known) for side, model in _halves(split)}
    if fallback is None and any(bad.values()):
        raise UnsupportedOpsError([(side, *node) for side, nodes in bad.items() for node in nodes])
    return bad


def _fallback_entry(side: str, nodes: list, model, out: Path, warn: Warn) -> dict:
    ops = ", ".join(f"{op} {name!r}" for op, name, _ in nodes)
    warn(f"the {side} half is emitted as ONNX ({side}.onnx): TVM cannot import {ops}")
    emit.save_half(model, out / f"{side}.onnx")
    return {"file": f"{side}.onnx", "backend": "onnx", "tvm_fallback": [f"{op} {name}" for op, name, _ in nodes]}


def write_tvm_halves(split, out: Path, fallback: str | None = None, pipeline: str = "splitc",
                     warn: Warn = default_warn, targets: dict[str, TvmTarget] | None = None) -> dict:
    """Build each half of ``split`` into ``out`` and return the plan with their entries updated.

    A half with nodes TVM cannot import is an ``UnsupportedOpsError`` (listing
    every such node in both halves), or with ``fallback="onnx"`` is written as
    ONNX with a warning. ``targets`` overrides the build of a side
    (``{"edge": host_target()}`` builds the edge half for this machine).
    """
    if fallback not in FALLBACKS:
        raise SplitcError(f"unknown --tvm-fallback {fallback!r}; the only fallback is 'onnx'")
    require_tvm()
    plan = copy.deepcopy(split.plan)
    bad = check_halves(split, fallback)
    chosen = {side: (targets or {}).get(side) or _target(plan, side, warn)
              for side, _ in _halves(split) if not bad[side]}
    for side, model in _halves(split):
        if bad[side]:
            plan[side].update(_fallback_entry(side, bad[side], model, out, warn))
        else:
            plan[side].update(build_half(model, chosen[side], out / f"{side}.so", pipeline, warn))
    return plan
