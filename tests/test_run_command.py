"""`splitc run --repeat N --warmup K`: warm timings, median and p90, locally and against a server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from splitc.runtime.server import ServerThread
from tests.stitching import DIGITS_MID, EXAMPLES, compile_quantized


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "100"}
    return subprocess.run([sys.executable, "-m", "splitc.cli", "run", *args], capture_output=True, text=True,
                          timeout=300, env=env)


def test_repeat_reports_median_and_p90_locally_and_remotely(tmp_path: Path) -> None:
    out = compile_quantized(tmp_path / "out")
    sample = str(EXAMPLES / "sample.npy")
    local = _run(str(out), "--input", sample, "--repeat", "5", "--warmup", "1")
    assert local.returncode == 0, local.stderr
    assert "5 runs after 1 warm-up" in local.stdout and "median" in local.stdout and "p90" in local.stdout
    with ServerThread(out) as running:
        remote = _run(str(out), "--input", sample, "--cloud", running.url, "--repeat", "4", "--warmup", "2")
    assert remote.returncode == 0, remote.stderr
    for word in ("4 runs after 2 warm-up", "median", "p90", "network ms", "encode ms"):
        assert word in remote.stdout, remote.stdout
    assert DIGITS_MID not in remote.stderr


def test_repeat_must_be_positive(tmp_path: Path) -> None:
    out = compile_quantized(tmp_path / "out")
    bad = _run(str(out), "--input", str(EXAMPLES / "sample.npy"), "--repeat", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_loading_a_plan_warms_the_codec_kernels(tmp_path: Path) -> None:
    """Pipeline, EdgeClient and the server load their halves with the codec kernels compiled (or loaded
    from numba's cache), so the first request does not pay for it: checked on the dispatchers, in a fresh
    process, before any request."""
    out = compile_quantized(tmp_path / "out")
    script = (
        "import sys\n"
        "from splitc.wire import kernels_numba as k\n"
        "assert not k.tokenize.signatures and not k.decode.signatures\n"
        "from splitc.runtime import Pipeline\n"
        f"Pipeline({str(out)!r})\n"
        "print(len(k.tokenize.signatures), len(k.decode.signatures))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    tokenize, decode = map(int, result.stdout.split())
    assert tokenize >= 1 and decode >= 1


def test_fallback_reason_is_worded_for_people(tmp_path: Path) -> None:
    out = compile_quantized(tmp_path / "out")
    result = _run(str(out), "--input", str(EXAMPLES / "sample.npy"), "--fallback", "local")
    assert result.returncode == 0, result.stderr
    assert "cloud unavailable: no cloud URL given" in result.stdout
    assert "_Retryable" not in result.stdout + result.stderr
