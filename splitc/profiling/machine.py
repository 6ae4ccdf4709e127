"""Facts about the machine a profile was measured on, and two microbenchmarks.

The achieved matmul GFLOP/s and copy GB/s let a profile be re-scaled to a
similar device (see docs/latency-model.md).
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import onnxruntime as ort


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def _best_seconds(work, repeats: int, clock=time.perf_counter) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        work()
        best = min(best, clock() - start)
    return best


def matmul_gflops(n: int = 1024, repeats: int = 5, clock=time.perf_counter) -> float:
    """Achieved FP32 GFLOP/s of an n x n numpy matmul (best of ``repeats``)."""
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    a @ b
    return 2 * n**3 / _best_seconds(lambda: a @ b, repeats, clock) / 1e9


def copy_gbps(megabytes: int = 64, repeats: int = 5, clock=time.perf_counter) -> float:
    """Achieved memory GB/s of a numpy copy (bytes read + bytes written, best of ``repeats``)."""
    src = np.ones(megabytes * (1 << 20) // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    return 2 * src.nbytes / _best_seconds(lambda: np.copyto(dst, src), repeats, clock) / 1e9


def blas_threads(threads: int):
    """A context limiting numpy's BLAS to ``threads``, and whether it can (threadpoolctl installed, threads > 0)."""
    from contextlib import nullcontext

    if not threads:
        return nullcontext(), False
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return nullcontext(), False
    return threadpool_limits(limits=threads, user_api="blas"), True


def machine_facts(threads: int = 0, provider: str = "CPUExecutionProvider") -> dict:
    """CPU, cores, memory, onnxruntime and the microbenchmarks (with ``threads`` BLAS threads;
    on one thread timed by its CPU time, like the profile)."""
    limit, limited = blas_threads(threads)
    clock = time.thread_time if threads == 1 and limited else time.perf_counter
    with limit:
        gflops = matmul_gflops(clock=clock)
    return {
        "hostname": platform.node(),
        "system": f"{platform.system()} {platform.release()}",
        "arch": platform.machine(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "providers_available": ort.get_available_providers(),
        "provider": provider,
        "matmul_gflops": gflops,
        "copy_gbps": copy_gbps(clock=clock),
    }
