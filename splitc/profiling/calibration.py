"""Fit the per-op-type roofline table (``splitc/data/host_calibration.json``) from measured node times.

Per op type, ``t = r / efficiency + overhead`` where ``r = max(flops / peak,
bytes / bandwidth)`` on the host's measured peaks; the two parameters are a
non-negative least-squares fit on relative errors (so small nodes count as
much as large ones). Op types with fewer than ``MIN_SAMPLES`` nodes use the fit
over all nodes.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import nnls

from splitc.ir.graph import Graph

MIN_SAMPLES = 3
MAX_EFFICIENCY = 1000.0  # ops that onnxruntime fuses away cost (almost) nothing


def node_samples(graph: Graph, nodes: dict, groups: list[dict]) -> list[dict]:
    """One sample per measured data node: op type, FLOPs, bytes moved, median ms, and whether it
    *leads*: a group of c kernels launches c times, charged to its c members with the most FLOPs."""
    flops = {n.name: float(n.flops) for n in graph.data_nodes}
    leaders = set()
    for group in groups:
        ranked = sorted(group["nodes"], key=lambda name: -flops[name])
        leaders.update(ranked[: len(group["kernels"])])
    return [{"op_type": n.op_type, "flops": float(n.flops), "bytes": float(n.memory_bytes),
             "ms": float(nodes[n.name]["median_ms"]), "lead": n.name in leaders}
            for n in graph.data_nodes if n.name in nodes]


def _fit(roofline_ms: np.ndarray, ms: np.ndarray) -> tuple[float, float]:
    """(efficiency, overhead in us) of ``ms ~ roofline_ms / efficiency + overhead``."""
    weight = 1.0 / np.maximum(ms, 1e-4)
    design = np.stack([roofline_ms, np.ones_like(roofline_ms)], axis=1) * weight[:, None]
    (slope, intercept), _ = nnls(design, ms * weight)
    return min(1.0 / slope, MAX_EFFICIENCY) if slope > 0 else MAX_EFFICIENCY, intercept * 1e3


def fit_table(samples: list[dict], peak_flops: float, mem_bw: float) -> dict:
    """The calibration table: per-op-type efficiency, overhead and launch fraction, and overall figures.

    ``launch_fraction`` is the share of an op type's nodes that led their fused
    group (the others were fused into another node's kernel). The overall
    overhead is that of the group leaders; the overall efficiency is total
    roofline time over total time beyond the overheads (large nodes dominate
    it, as they dominate latency).
    """
    ops = np.array([s["op_type"] for s in samples])
    ms = np.array([s["ms"] for s in samples])
    leads = np.array([s["lead"] for s in samples])
    roofline = np.maximum(np.array([s["flops"] for s in samples]) / peak_flops,
                          np.array([s["bytes"] for s in samples]) / mem_bw) * 1e3
    fallback = _fit(roofline, ms)
    fits = {op: _fit(roofline[ops == op], ms[ops == op]) if (ops == op).sum() >= MIN_SAMPLES else fallback
            for op in set(ops)}
    efficiency = np.array([fits[op][0] for op in ops])
    overhead = np.array([fits[op][1] for op in ops])
    error = np.abs(roofline / efficiency + overhead / 1e3 - ms) / np.maximum(ms, 1e-6)
    table = {op: {"efficiency": fits[op][0], "overhead_us": fits[op][1], "samples": int((ops == op).sum()),
                  "launch_fraction": float(leads[ops == op].mean()),
                  "median_rel_error": float(np.median(error[ops == op]))}
             for op in sorted(fits) if (ops == op).sum() >= MIN_SAMPLES}
    return {"peak_flops": peak_flops, "mem_bw": mem_bw,
            "efficiency": float(roofline.sum() / np.maximum(ms - overhead / 1e3, 0).sum()),
            "overhead_us": float(overhead[leads].mean()) if leads.any() else fallback[1],
            "op_types": table}
