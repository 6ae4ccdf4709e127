"""Calibrate the ``host`` roofline: measure this machine once, write ``splitc/data/host_calibration.json``.

Per-node times come from onnxruntime's profiler (one intra-op thread, all graph
optimisations, fused groups shared by FLOPs, scaled to the whole-model time)
over the zoo and a few ONNX ``light_*`` models; the peaks are the achieved
single-thread numpy matmul GFLOP/s and copy GB/s. The fit is in
``splitc.profiling.calibration``.

    python bench/calibrate_host.py            # about a minute
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from pathlib import Path

import onnx

from splitc.testing import zoo
from splitc.frontend import import_model
from splitc.passes.base import PassManager
from splitc.passes.dce import DeadCodeElimination
from splitc.profiling.calibration import fit_table, node_samples
from splitc.profiling.machine import machine_facts
from splitc.profiling.measure import measure_nodes
from splitc.cost.roofline import CALIBRATION
from splitc.profiling.timing import random_feeds, time_model

LIGHT = Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data" / "light"
LIGHT_MODELS = ["squeezenet", "shufflenet", "bvlc_alexnet", "inception_v1", "inception_v2", "resnet50",
                "densenet121", "zfnet512"]
RUNS, WARMUP, THREADS = 20, 3, 1


def models() -> dict:
    found = {name: zoo.build(name) for name in zoo.MODELS}
    paths = {f"light_{n}": LIGHT / f"light_{n}.onnx" for n in LIGHT_MODELS}
    found.update({name: str(path) for name, path in paths.items() if path.exists()})
    return found


def measure(model) -> list[dict]:
    graph = PassManager([DeadCodeElimination()])(import_model(model)).graph
    feeds = random_feeds(graph.inputs)
    config = dict(runs=RUNS, warmup=WARMUP, threads=THREADS)
    whole = time_model(graph.model, feeds, **config)[0]
    nodes, groups = measure_nodes(graph, feeds, whole.median_ms, **config)
    return node_samples(graph, nodes, groups)


def main() -> int:
    machine = machine_facts(threads=THREADS)
    samples, used = [], []
    for name, model in models().items():
        print(f"measuring {name}", flush=True)
        samples += measure(model)
        used.append(name)
    table = fit_table(samples, machine["matmul_gflops"] * 1e9, machine["copy_gbps"] * 1e9)
    document = {
        "schema": "splitc.calibration/1",
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {k: machine[k] for k in ("cpu", "cores", "onnxruntime", "matmul_gflops", "copy_gbps")},
        "settings": {"runs": RUNS, "warmup": WARMUP, "threads": THREADS, "graph_optimization": "all"},
        "models": used,
        **table,
    }
    CALIBRATION.write_text(json.dumps(document, indent=1) + "\n")
    print(f"wrote {CALIBRATION}: {len(samples)} nodes, {len(table['op_types'])} op types; "
          f"host target: peak_flops={table['peak_flops']:.4g}, mem_bw={table['mem_bw']:.4g}, "
          f"efficiency={table['efficiency']:.3g}, overhead_us={table['overhead_us']:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
