"""Run a TVM-built half (``edge.so`` / ``cloud.so``) like an onnxruntime session.

Only TVM's runtime is used (``tvm.runtime.load_module`` and the Relax
``VirtualMachine``), never its compiler, so a device with a runtime-only TVM
(or ``TVM_USE_RUNTIME_LIB=1``) can run it. Tensors cross by DLPack, without
copies on the way in.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class TensorInfo:
    """Name of an input or output, as ``onnxruntime.NodeArg`` has it."""

    name: str


ALIGNMENT = 64  # TVM's kernels assume 64-byte aligned buffers
_ARCH_NAMES = {"arm64": "aarch64", "amd64": "x86_64"}


class TvmHalfError(ValueError):
    """A TVM half that cannot run here (built for another CPU, or a broken entry)."""


def _arch(name: str) -> str:
    return _ARCH_NAMES.get(name.lower(), name.lower())


def check_arch(path: Path, entry: dict) -> None:
    """Refuse, with a clear message, a library built for another CPU architecture."""
    import platform

    built, here = _arch(entry.get("tvm_arch", platform.machine())), _arch(platform.machine())
    if built != here:
        raise TvmHalfError(f"{path.name} is a TVM build for {built} ({entry.get('target', 'another device')}); "
                           f"this machine is {here}: run it on the device")


def aligned(array: np.ndarray) -> np.ndarray:
    """``array`` itself when C-contiguous and 64-byte aligned, else an aligned copy."""
    array = np.asarray(array, order="C")  # not ascontiguousarray: it turns 0-d arrays into 1-d
    if array.__array_interface__["data"][0] % ALIGNMENT == 0:
        return array
    raw = np.empty(array.nbytes + ALIGNMENT, dtype=np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    copy = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    copy[...] = array
    return copy


def _device(tvm, kind: str):
    return tvm.cuda(0) if kind == "cuda" else tvm.cpu(0)


def set_threads(count: int | None = None) -> None:
    """Size TVM's thread pool: ``count``, else ``$TVM_NUM_THREADS``, else every core we may use.

    TVM reads ``TVM_NUM_THREADS`` when its pool starts (at the first parallel
    kernel in the process) and cannot resize it afterwards. Left unset, TVM 0.27
    takes half the cores, pinned, which here ran slower than one thread.
    """
    if count:
        os.environ["TVM_NUM_THREADS"] = str(int(count))
    else:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        os.environ.setdefault("TVM_NUM_THREADS", str(cores or 1))


class TvmHalf:
    """A half compiled by splitc's TVM backend, with ``run``/``get_inputs``/``get_outputs``.

    ``entry`` is the half's object in ``plan.json``: its ``inputs`` and
    ``outputs`` give the tensor names in order and ``tvm_device`` the device.
    """

    def __init__(self, path: str | Path, entry: dict, threads: int | None = None) -> None:
        import tvm
        from tvm.runtime.vm import VirtualMachine

        set_threads(threads)
        self.path = Path(path)
        check_arch(self.path, entry)
        self.input_names = [spec["name"] for spec in entry["inputs"]]
        self.output_names = [spec["name"] for spec in entry["outputs"]]
        self.device = _device(tvm, entry.get("tvm_device", "cpu"))
        self.on_cpu = entry.get("tvm_device", "cpu") == "cpu"
        self.vm = VirtualMachine(tvm.runtime.load_module(str(self.path)), self.device)
        self._main = self.vm["main"]
        self._tensor_type = tvm.runtime.Tensor
        self._from_dlpack = tvm.runtime.from_dlpack

    def get_inputs(self) -> list[TensorInfo]:
        """The inputs, in the order ``main`` takes them."""
        return [TensorInfo(n) for n in self.input_names]

    def get_outputs(self) -> list[TensorInfo]:
        """The outputs, in the order ``main`` returns them."""
        return [TensorInfo(n) for n in self.output_names]

    def _argument(self, array: np.ndarray):
        if self.on_cpu:
            return self._from_dlpack(aligned(array))
        import tvm

        return tvm.runtime.tensor(np.asarray(array, order="C"), self.device)

    def _array(self, tensor, inputs: list[np.ndarray]) -> np.ndarray:
        if not self.on_cpu:
            return tensor.numpy()
        array = np.from_dlpack(tensor)  # a fresh buffer per call: no copy needed...
        if any(np.may_share_memory(array, x) for x in inputs):
            return array.copy()  # ...unless the half returns an input unchanged
        return array

    def run(self, names: list[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs ``names`` (all when None) for the inputs ``feeds``, as numpy arrays."""
        try:
            inputs = [feeds[n] for n in self.input_names]
        except KeyError as exc:
            raise ValueError(f"{self.path.name}: missing input {exc.args[0]!r}") from None
        result = self._main(*[self._argument(x) for x in inputs])
        tensors = [result] if isinstance(result, self._tensor_type) else list(result)
        arrays = dict(zip(self.output_names, (self._array(t, inputs) for t in tensors)))
        return [arrays[n] for n in (names or self.output_names)]
