"""The real schedule run (bench/schedule_real.py --quick): every process starts, every task completes its
samples in the scheduled mode, and every artifact runs the scheduler's assignment. Timings are not checked."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# 13 processes and their timing on a shared 2-core machine: `make test` runs this after the parallel run, alone.
pytestmark = pytest.mark.serial


def test_quick_run_follows_the_schedule(tmp_path) -> None:
    script = ROOT / "bench" / "schedule_real.py"
    args = [sys.executable, str(script), "--quick", "--solo", "2", "--results", str(tmp_path)]
    done = subprocess.run(args, capture_output=True, text=True, timeout=240, cwd=ROOT, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    res = json.loads((tmp_path / "schedule_real.json").read_text())
    tasks = res["tasks"]
    assert len(tasks) == 8 and res["repeat"] == 1
    assert {t["mode"] for t in tasks} >= {"device", "edge", "cloud"}
    for t in tasks:
        assert t["done"] == t["samples"] and not t["errors"], t
        assert t["measured"]["fallbacks"] == 0
        assert t["measured"]["start_s"] == pytest.approx(t["predicted"]["start_s"], abs=0.5)
        if t["mode"] != "device":  # raw float32 frames: the scheduler's bytes plus the request's headers
            assert t["predicted"]["up_bytes"][0] <= t["measured"]["bytes_up"] <= t["predicted"]["up_bytes"][0] + 512
    assert all(a["same_assignment"] for a in res["artifacts"])
    kinds = [re.match(r"[a-z]+", name).group() for name in res["processes"]]  # cloud-a1, edge0-a0, dev3, ...
    assert [kinds.count(k) for k in ("cloud", "edge", "dev")] == [1, 4, 8]
    assert "| device | mode | edge |" in (tmp_path / "schedule_real.md").read_text()
