"""TVM targets for splitc's devices, keyed by the names in ``splitc.targets``.

Edge devices get a cross-compiled aarch64 CPU build (their ARM cores, NEON
vectors); the cloud gets CUDA when a CUDA toolchain and a GPU are present here,
otherwise this host's CPU (with a warning).
"""

from __future__ import annotations

import json
import platform
import shutil
from dataclasses import dataclass, field
from typing import Callable

from splitc.backends.tvm.errors import TVMTargetError
from splitc.targets import TARGETS

AARCH64_TRIPLE = "aarch64-linux-gnu"
AARCH64_CXX = "aarch64-linux-gnu-g++"


@dataclass(frozen=True)
class TvmTarget:
    """One TVM build configuration: the target dict, the C++ compiler that links the .so, a note."""

    name: str
    target: dict
    cross_compiler: str | None = None
    note: str = ""
    device: str = field(default="cpu")

    def json(self) -> str:
        """The target as the JSON string that ``tvm.target.Target`` takes in TVM 0.27."""
        return json.dumps(self.target, sort_keys=True)

    @property
    def arch(self) -> str:
        """The CPU architecture the library runs on (``aarch64``, ``x86_64``)."""
        triple = self.target.get("mtriple") or (self.target.get("host") or {}).get("mtriple")
        return triple.split("-")[0] if triple else platform.machine()

    def to_tvm(self):
        """The ``tvm.target.Target`` (imports TVM)."""
        import tvm

        return tvm.target.Target(dict(self.target))


def _arm64(name: str, cpu: str, note: str) -> TvmTarget:
    target = {"kind": "llvm", "mtriple": AARCH64_TRIPLE, "mcpu": cpu, "mattr": ["+neon"]}
    return TvmTarget(name, target, AARCH64_CXX, note)


EDGE: dict[str, TvmTarget] = {
    t.name: t
    for t in [
        _arm64("jetson-tx2", "cortex-a57", "Jetson TX2 CPU: 4x Cortex-A57 (+2 Denver2), aarch64"),
        _arm64("jetson-nano", "cortex-a57", "Jetson Nano CPU: 4x Cortex-A57, aarch64"),
        _arm64("jetson-orin-nano", "cortex-a78ae", "Jetson Orin Nano CPU: 6x Cortex-A78AE, aarch64"),
        _arm64("raspberry-pi-4", "cortex-a72", "Raspberry Pi 4: 4x Cortex-A72, aarch64 (64-bit OS)"),
        _arm64("snapdragon-835", "cortex-a73", "Snapdragon 835: Kryo 280 big cores are Cortex-A73 derivatives"),
    ]
}

UNSUPPORTED: dict[str, str] = {
    "tegra-k1": "tegra-k1 is a 32-bit ARMv7 device (4x Cortex-A15); the TVM backend builds only 64-bit "
    "aarch64 (apache-tvm publishes no armv7 runtime to load it with); use --backend onnx for it",
}

# CUDA compute capability of each cloud GPU.
CUDA_ARCH = {"gtx-1080ti": "sm_61", "titan-xp": "sm_61", "t4": "sm_75", "a100": "sm_80", "h100": "sm_90"}


def host_target(name: str = "host", note: str = "") -> TvmTarget:
    """This machine's CPU (LLVM's name for it, so that the build uses its vector units)."""
    from tvm.target.codegen import llvm_get_system_cpu

    return TvmTarget(name, {"kind": "llvm", "mcpu": str(llvm_get_system_cpu())}, None, note or "this host's CPU")


def cuda_missing() -> str | None:
    """Why a CUDA build is impossible here (no nvcc, no GPU), or None when it is possible."""
    if shutil.which("nvcc") is None:
        return "no CUDA toolchain (nvcc) on PATH"
    try:
        import tvm

        if tvm.cuda(0).exist:
            return None
    except Exception:  # noqa: BLE001 - a broken driver means no usable GPU
        pass
    return "no CUDA GPU visible"


def edge_target(name: str) -> TvmTarget:
    """The aarch64 build for an edge device; the host CPU for a cloud-class device used as the edge."""
    if name in UNSUPPORTED:
        raise TVMTargetError(UNSUPPORTED[name])
    if name in EDGE:
        return EDGE[name]
    if name in TARGETS:
        return host_target(name, f"{name} has no ARM build in splitc; built for this host's CPU")
    raise TVMTargetError(f"no TVM target for {name!r}; known: {', '.join(sorted(EDGE))}")


def cloud_target(name: str, warn: Callable[[str], None]) -> TvmTarget:
    """CUDA for the cloud GPU when possible, else this host's CPU (``warn`` says so)."""
    if name in EDGE:
        return EDGE[name]
    arch = CUDA_ARCH.get(name, "")
    missing = cuda_missing() if arch else f"{name} is not a CUDA device"
    if missing is None:
        target = {"kind": "cuda", "arch": arch, "host": {"kind": "llvm"}}
        return TvmTarget(name, target, None, f"CUDA {arch}", device="cuda")
    host = host_target(name, f"{missing}: built for this host's CPU instead of CUDA")
    warn(f"{missing}; the cloud half ({name}) is built for this host's CPU "
         f"(llvm -mcpu={host.target['mcpu']}) instead of CUDA")
    return host
