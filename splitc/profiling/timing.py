"""Timing onnxruntime sessions: warm-up, repeats, median and spread."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort

DEFAULT_PROVIDER = "CPUExecutionProvider"


@dataclass(frozen=True)
class Stats:
    """Median and spread (10th and 90th percentile) of repeated timings, in ms."""

    median_ms: float
    p10_ms: float
    p90_ms: float

    @classmethod
    def of(cls, samples_ms) -> "Stats":
        """Summarise samples (at least one)."""
        data = np.asarray(samples_ms, dtype=np.float64)
        p10, median, p90 = np.percentile(data, [10, 50, 90])
        return cls(float(median), float(p10), float(p90))

    def to_dict(self) -> dict:
        return {"median_ms": self.median_ms, "p10_ms": self.p10_ms, "p90_ms": self.p90_ms}


def session_options(threads: int = 0, profile_prefix: str | None = None,
                    optimized_path: str | None = None) -> ort.SessionOptions:
    """Options as the runtime uses them (all graph optimisations); ``threads=0`` is ORT's default."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if optimized_path:
        options.optimized_model_filepath = optimized_path
    return options


def make_session(model: onnx.ModelProto, options: ort.SessionOptions,
                 provider: str = DEFAULT_PROVIDER) -> ort.InferenceSession:
    """An inference session on one execution provider."""
    return ort.InferenceSession(model.SerializeToString(), options, providers=[provider])


MIN_SECONDS = 0.25  # a measurement lasts at least this long, so one burst of load cannot fill it


def time_runs(run: Callable[[], object], runs: int, warmup: int,
              tick: Callable[[], None] | None = None, min_seconds: float = MIN_SECONDS) -> Stats:
    """Call ``run`` ``warmup`` times untimed, then time it (wall clock) at least ``runs`` times
    and for at least ``min_seconds`` (at most ``20 * runs`` times)."""
    for _ in range(warmup):
        run()
    samples: list[float] = []
    began = time.perf_counter()
    while len(samples) < runs or (time.perf_counter() - began < min_seconds and len(samples) < 20 * runs):
        start = time.perf_counter()
        run()
        samples.append((time.perf_counter() - start) * 1e3)
        if tick is not None and len(samples) <= runs:
            tick()
    return Stats.of(samples)


def time_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], runs: int, warmup: int,
               threads: int = 0, provider: str = DEFAULT_PROVIDER, tick: Callable[[], None] | None = None,
               min_seconds: float = MIN_SECONDS) -> tuple[Stats, dict[str, np.ndarray]]:
    """Latency of one model in a fresh session (profiling off), and its outputs."""
    session = make_session(model, session_options(threads), provider)
    names = [o.name for o in session.get_outputs()]
    feed = {i.name: feeds[i.name] for i in session.get_inputs()}
    stats = time_runs(lambda: session.run(names, feed), runs, warmup, tick, min_seconds)
    return stats, dict(zip(names, session.run(names, feed)))


def random_feeds(inputs, seed: int = 0) -> dict[str, np.ndarray]:
    """Inputs for timing: standard normal floats, zeros for integer and boolean tensors."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for value in inputs:
        if np.issubdtype(value.dtype, np.floating):
            feeds[value.name] = rng.standard_normal(value.shape).astype(value.dtype)
        else:
            feeds[value.name] = np.zeros(value.shape, dtype=value.dtype)
    return feeds
