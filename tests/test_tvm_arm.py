"""aarch64 TVM builds, run under qemu-user and checked against onnxruntime on this machine.

`make test-arm` (and so `make test`) prepares the cross compiler, an arm64 Debian
sysroot and the aarch64 TVM wheels with tests/arm/setup.sh; without them these
tests skip, naming what is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tvm", reason="apache-tvm is not installed (pip install 'splitc[tvm]')")

import splitc  # noqa: E402
from splitc.testing import zoo  # noqa: E402
from tests.conftest import random_feeds, run_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ARM_ROOT = Path(os.environ.get("SPLITC_ARM_CACHE", Path.home() / ".cache" / "splitc-arm"))
QEMU_TIMEOUT = 300


def _arm_dir() -> Path:
    current = ARM_ROOT / "current"
    reason = current / "skip-reason"
    if reason.is_file():
        pytest.skip(f"arm64 environment unavailable: {reason.read_text().strip()}")
    if not (current / "sysroot" / ".complete").is_file() or not (current / "site" / ".complete").is_file():
        pytest.skip(f"no arm64 sysroot and aarch64 TVM wheels under {current}: run `make test-arm`")
    for tool in ("qemu-aarch64-static", "aarch64-linux-gnu-g++"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: run `make test-arm`")
    return current.resolve()


@pytest.fixture(scope="module")
def arm() -> Path:
    return _arm_dir()


CASES = {  # model, cut, edge device (its ARM core)
    "chain_cnn@jetson-tx2": ("chain_cnn", "stage2/pool", "jetson-tx2"),  # Cortex-A57
    "resnet_blocks@raspberry-pi-4": ("resnet_blocks", "block2/relu", "raspberry-pi-4"),  # Cortex-A72
    "inception_blocks@jetson-orin-nano": ("inception_blocks", "inc1/concat", "jetson-orin-nano"),  # Cortex-A78AE
}


@pytest.fixture(scope="module", params=list(CASES))
def arm_split(request, tmp_path_factory):
    """The edge half built for the device's aarch64 cores, its input, its cut tensor's name and onnxruntime's output."""
    name, cut, target = CASES[request.param]
    model = zoo.build(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        split = splitc.compile(model, target=target, cloud="t4", cut=[cut], bits=32)
        out = split.save(tmp_path_factory.mktemp("arm") / "out", backend="tvm")
    feeds = random_feeds(model, seed=3)
    return out, feeds, cut, run_model(split.edge_model, feeds)


def _qemu(arm: Path, *command: str, env: dict | None = None) -> subprocess.CompletedProcess:
    run = ["qemu-aarch64-static", "-L", str(arm / "sysroot"), *command]
    done = subprocess.run(run, capture_output=True, text=True, timeout=QEMU_TIMEOUT, env={**os.environ, **(env or {})})
    assert done.returncode == 0, f"{' '.join(run)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_edge_so_runs_under_qemu_with_the_tvm_runtime_only(arm, arm_split, tmp_path):
    out, feeds, _, reference = arm_split
    np.savez(tmp_path / "in.npz", **feeds)
    env = {"PYTHONPATH": str(arm / "site"), "TVM_USE_RUNTIME_LIB": "1"}
    done = _qemu(arm, str(arm / "sysroot/usr/bin/python3"), str(REPO / "tests/arm/run_half.py"), str(out), "edge",
                 str(tmp_path / "in.npz"), str(tmp_path / "out.npz"), env=env)
    assert "on aarch64" in done.stdout and "compiler loaded: False" in done.stdout
    got = np.load(tmp_path / "out.npz")
    for name, expected in reference.items():
        np.testing.assert_allclose(got[name], expected, rtol=1e-4, atol=1e-5)


def test_cpp_example_cross_compiles_and_runs_under_qemu(arm, arm_split, tmp_path):
    out, feeds, cut, reference = arm_split
    build = subprocess.run(["make", "-C", str(REPO / "examples/cpp"), f"TVM_SITE={arm / 'site'}",
                            f"BUILD={tmp_path}"], capture_output=True, text=True, timeout=QEMU_TIMEOUT)
    assert build.returncode == 0, build.stdout + build.stderr
    np.save(tmp_path / "input.npy", feeds["input"])
    libs = f"{arm / 'site/tvm/lib'}:{arm / 'site/tvm_ffi/lib'}"
    _qemu(arm, "-E", f"LD_LIBRARY_PATH={libs}", str(tmp_path / "edge_runner"), str(out / "edge.so"),
          str(tmp_path / "input.npy"), str(tmp_path / "cut.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "cut.npy"), reference[cut], rtol=1e-4, atol=1e-5)
    raw = tmp_path / "input.bin"
    feeds["input"].astype("<f4").tofile(raw)
    _qemu(arm, "-E", f"LD_LIBRARY_PATH={libs}", str(tmp_path / "edge_runner"), str(out / "edge.so"), str(raw),
          str(tmp_path / "cut.bin"), "1x3x32x32")
    got = np.fromfile(tmp_path / "cut.bin", dtype="<f4").reshape(reference[cut].shape)
    np.testing.assert_allclose(got, reference[cut], rtol=1e-4, atol=1e-5)
