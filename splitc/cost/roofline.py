"""The roofline cost model calibrated per op type on this machine (``splitc/data/host_calibration.json``).

``bench/calibrate_host.py`` measured, with onnxruntime on one thread, how
far each op type runs from the ``host`` roofline: an efficiency (roofline
time / time beyond the launch overhead), a launch overhead, and the share of
its nodes that ran as their own kernel rather than fused into a neighbour's
(``launch_fraction``). ``host`` uses the table as measured. Any other
built-in target keeps its own peak FLOP/s, memory bandwidth, efficiency and
overhead, and takes the op-type *shape* from the calibration:

    efficiency(op) = target.efficiency  * host.efficiency(op) / host.efficiency
    overhead(op)   = target.overhead_us * launch_fraction(op)

Op types the table lacks use the target's own figures.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

from splitc.ir.graph import Node
from splitc.cost.model import RooflineCostModel
from splitc.targets import Target

HOST = "host"
CALIBRATION = Path(__file__).resolve().parent.parent / "data" / "host_calibration.json"


@lru_cache(maxsize=1)
def load_calibration(path: str = str(CALIBRATION)) -> dict | None:
    """The committed calibration table, or None when the file is absent."""
    try:
        raw = Path(path).read_bytes()
    except OSError:
        return None
    table = json.loads(raw)
    table["sha256"] = hashlib.sha256(raw).hexdigest()
    return table


class CalibratedRoofline(RooflineCostModel):
    """``max(flops / peak, bytes / bw) / efficiency(op) + overhead(op)``, per op type."""

    def __init__(self, target: Target, table: dict) -> None:
        super().__init__(target)
        self.table = table
        ops = table["op_types"]
        if target.name == HOST:
            self.target = replace(target, peak_flops=table["peak_flops"], mem_bw=table["mem_bw"],
                                  efficiency=table["efficiency"], overhead_us=table["overhead_us"])
            self.efficiency = {op: e["efficiency"] for op, e in ops.items()}
            self.overhead_us = {op: e["overhead_us"] for op, e in ops.items()}
        else:
            scale = target.efficiency / table["efficiency"]
            self.efficiency = {op: e["efficiency"] * scale for op, e in ops.items()}
            self.overhead_us = {op: target.overhead_us * e["launch_fraction"] for op, e in ops.items()}

    def node_ms(self, node: Node) -> float:
        if node.constant:
            return 0.0
        t = self.target
        efficiency = self.efficiency.get(node.op_type, t.efficiency)
        overhead = self.overhead_us.get(node.op_type, t.overhead_us)
        seconds = max(node.flops / t.peak_flops, node.memory_bytes / t.mem_bw) / efficiency
        return seconds * 1e3 + overhead * 1e-3

    def describe(self) -> dict:
        return {**super().describe(), "calibration": {
            "file": "splitc/data/host_calibration.json", "sha256": self.table["sha256"],
            "cpu": self.table["machine"]["cpu"], "op_types": len(self.table["op_types"]),
        }}


def roofline_for(target: Target) -> RooflineCostModel:
    """The calibrated roofline of a built-in target (the plain one if no calibration is installed)."""
    table = load_calibration()
    return CalibratedRoofline(target, table) if table else RooflineCostModel(target)
