"""Per-kernel times from onnxruntime's own profiler, and the optimised graph it ran.

onnxruntime writes one ``"cat": "Node"`` event per executed kernel and run,
named ``<node>_kernel_time``, with ``args`` holding ``op_name``,
``node_index`` and ``provider``; ``"model_run"`` events delimit the runs.
Node names are those of the *optimised* graph (``SessionOptions.
optimized_model_filepath``), where fused nodes carry new names such as
``stage1/relu_nchwc``; :mod:`splitc.profiling.fusion` maps them back.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx

from splitc.profiling.timing import DEFAULT_PROVIDER, make_session, session_options

_SUFFIX = "_kernel_time"


@dataclass
class KernelProfile:
    """What one profiled session ran: the optimised graph and per-run kernel times (ms)."""

    optimized: onnx.ModelProto
    times: dict[str, np.ndarray]  # kernel (optimised node) name -> (runs,) ms
    op_types: dict[str, str]  # kernel name -> op_name reported by the profiler
    runs: int


def profile_kernels(model: onnx.ModelProto, feeds: dict[str, np.ndarray], runs: int, warmup: int,
                    threads: int = 0, provider: str = DEFAULT_PROVIDER,
                    tick: Callable[[], None] | None = None) -> KernelProfile:
    """Run ``model`` with the profiler on and collect every kernel's time in each timed run."""
    with tempfile.TemporaryDirectory(prefix="splitc-profile-") as tmp:
        optimized_path = os.path.join(tmp, "optimized.onnx")
        options = session_options(threads, os.path.join(tmp, "ort"), optimized_path)
        session = make_session(model, options, provider)
        names = [o.name for o in session.get_outputs()]
        feed = {i.name: feeds[i.name] for i in session.get_inputs()}
        for _ in range(warmup + runs):
            session.run(names, feed)
            if tick is not None:
                tick()
        events = json.loads(Path(session.end_profiling()).read_text())
        optimized = onnx.load(optimized_path, load_external_data=False)
    main = {node.name for node in optimized.graph.node}
    times, op_types = kernel_times(events, main, warmup)
    return KernelProfile(optimized, times, op_types, runs)


def kernel_times(events: list[dict], kernels: set[str], warmup: int) -> tuple[dict, dict]:
    """Per kernel of the main graph, its time (ms) in each run after the warm-up.

    Kernels inside control-flow subgraphs are left out: the ``If``/``Loop``
    kernel that runs them already includes their time.
    """
    windows = sorted((e["ts"], e["ts"] + e["dur"]) for e in events
                     if e.get("cat") == "Session" and e.get("name") == "model_run")[warmup:]
    starts = np.array([w[0] for w in windows], dtype=np.int64)
    times = {k: np.zeros(len(windows)) for k in kernels}
    op_types: dict[str, str] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") != "Node" or not name.endswith(_SUFFIX):
            continue
        kernel = name[: -len(_SUFFIX)]
        run = int(np.searchsorted(starts, event["ts"], side="right")) - 1
        if kernel in kernels and run >= 0 and event["ts"] <= windows[run][1]:
            times[kernel][run] += event["dur"] / 1e3
            op_types[kernel] = event.get("args", {}).get("op_name", "")
    return {k: v for k, v in times.items() if k in op_types}, op_types
