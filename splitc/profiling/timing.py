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
CLOCKS = ("auto", "wall", "cpu")


def clock_for(threads: int, clock: str = "auto") -> str:
    """``"cpu"`` (the calling thread's CPU time) on one thread, else ``"wall"``, unless given.

    With one intra-op thread onnxruntime runs every kernel on the calling
    thread, so its CPU time is the latency without the time other processes
    took the core away: robust on a shared machine, and equal to the wall
    clock on an idle one.
    """
    if clock not in CLOCKS:
        raise ValueError(f"clock must be one of {CLOCKS}, not {clock!r}")
    if clock != "auto":
        return clock
    return "cpu" if threads == 1 else "wall"


def sample_runs(run: Callable[[], object], runs: int, warmup: int, tick: Callable[[], None] | None = None,
                min_seconds: float = MIN_SECONDS, clock: str = "wall") -> list[float]:
    """Call ``run`` ``warmup`` times untimed, then time it (ms) at least ``runs`` times and for at least
    ``min_seconds`` of wall time (at most ``20 * runs`` times), on the ``"wall"`` or ``"cpu"`` clock."""
    now = time.thread_time if clock == "cpu" else time.perf_counter
    for _ in range(warmup):
        run()
    samples: list[float] = []
    began = time.perf_counter()
    while len(samples) < runs or (time.perf_counter() - began < min_seconds and len(samples) < 20 * runs):
        start = now()
        run()
        samples.append((now() - start) * 1e3)
        if tick is not None and len(samples) <= runs:
            tick()
    return samples


def sample_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], runs: int, warmup: int,
                 threads: int = 0, provider: str = DEFAULT_PROVIDER, tick: Callable[[], None] | None = None,
                 min_seconds: float = MIN_SECONDS, clock: str = "auto") -> tuple[list[float], dict[str, np.ndarray]]:
    """Timings (ms) of one model in a fresh session (profiling off), and its outputs."""
    session = make_session(model, session_options(threads), provider)
    names = [o.name for o in session.get_outputs()]
    feed = {i.name: feeds[i.name] for i in session.get_inputs()}
    samples = sample_runs(lambda: session.run(names, feed), runs, warmup, tick, min_seconds, clock_for(threads, clock))
    return samples, dict(zip(names, session.run(names, feed)))


def time_model(model: onnx.ModelProto, feeds: dict[str, np.ndarray], runs: int, warmup: int,
               threads: int = 0, provider: str = DEFAULT_PROVIDER, tick: Callable[[], None] | None = None,
               min_seconds: float = MIN_SECONDS, clock: str = "auto") -> tuple[Stats, dict[str, np.ndarray]]:
    """Median and spread of one model's latency in a fresh session, and its outputs."""
    samples, outputs = sample_model(model, feeds, runs, warmup, threads, provider, tick, min_seconds, clock)
    return Stats.of(samples), outputs


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
