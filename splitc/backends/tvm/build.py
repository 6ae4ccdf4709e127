"""Compile one ONNX half with TVM: import, Relax pipeline, ``tvm.compile``, ``export_library``."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Callable

import onnx

from splitc.backends.tvm.errors import TVMBuildError, TVMNotInstalled, TVMWarning
from splitc.backends.tvm.targets import TvmTarget

Warn = Callable[[str], None]


def default_warn(message: str) -> None:
    """Emit ``message`` as a ``TVMWarning`` (the CLI prints these as ``warning:`` lines)."""
    warnings.warn(message, TVMWarning, stacklevel=3)


def require_tvm():
    """Import TVM with its Relax compiler, or raise ``TVMNotInstalled``."""
    try:
        import tvm
        from tvm import relax  # noqa: F401 - the runtime-only package has no compiler
        from tvm.relax.frontend import onnx as _  # noqa: F401
    except ImportError as exc:
        raise TVMNotInstalled(str(exc)) from None
    return tvm


def tvm_version() -> str:
    """The installed apache-tvm version."""
    return str(require_tvm().__version__)


def _input_specs(model: onnx.ModelProto) -> tuple[dict, dict]:
    weights = {t.name for t in model.graph.initializer}
    shapes, dtypes = {}, {}
    for value in model.graph.input:
        if value.name in weights:
            continue
        tensor = value.type.tensor_type
        shapes[value.name] = [d.dim_value for d in tensor.shape.dim]
        dtypes[value.name] = str(onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type))
    return shapes, dtypes


def import_onnx(model: onnx.ModelProto):
    """The half as a Relax module with its weights embedded as constants."""
    require_tvm()
    from tvm.relax.frontend.onnx import from_onnx

    shapes, dtypes = _input_specs(model)
    try:
        with warnings.catch_warnings():  # "Renaming name a/b to a_b": harmless, the runtime goes by position
            warnings.filterwarnings("ignore", message="Renaming name")
            return from_onnx(model, shape_dict=shapes, dtype_dict=dtypes, keep_params_in_input=False)
    except Exception as exc:  # noqa: BLE001 - the importer raises anything from asserts to KeyError
        raise TVMBuildError(f"TVM could not import {model.graph.name}: {_last_line(exc)}") from exc


def _last_line(exc: Exception) -> str:
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[-1] if lines else ''}"


def compile_module(mod, tt: TvmTarget, pipeline: str, warn: Warn):
    """``tvm.compile`` with the named pipeline; a failing ``splitc`` pipeline falls back to TVM's default."""
    tvm = require_tvm()
    from splitc.backends.tvm.pipeline import relax_pipeline

    target = tt.to_tvm()
    pipeline = pipeline if target.kind.name == "llvm" else "default"  # GPUs: TVM's (dlight-scheduled) pipeline
    try:
        return tvm.compile(mod, target=target, relax_pipeline=relax_pipeline(target, pipeline)), pipeline
    except Exception as exc:  # noqa: BLE001
        if pipeline == "default":
            raise TVMBuildError(f"TVM could not compile for {tt.name}: {_last_line(exc)}") from exc
        warn(f"the splitc CPU schedules failed ({_last_line(exc)}); using TVM's default pipeline")
    return compile_module(mod, tt, "default", warn)


def check_cross_compiler(tt: TvmTarget) -> None:
    """Fail early when the target's cross compiler is not installed."""
    if tt.cross_compiler and shutil.which(tt.cross_compiler) is None:
        raise TVMBuildError(f"{tt.name} needs the cross compiler {tt.cross_compiler}; install it "
                            "with: apt-get install g++-aarch64-linux-gnu")


def export(executable, path: Path, tt: TvmTarget) -> None:
    """Link the executable into a shared library, with the cross compiler for ARM targets."""
    fcompile = None
    if tt.cross_compiler:
        check_cross_compiler(tt)
        from tvm.support import cc

        fcompile = cc.cross_compiler(tt.cross_compiler)
    executable.export_library(str(path), fcompile=fcompile)


def build_half(model: onnx.ModelProto, tt: TvmTarget, path: Path, pipeline: str = "splitc",
               warn: Warn = default_warn) -> dict:
    """Compile ``model`` for ``tt`` into ``path`` (a .so); returns the half's plan fields."""
    check_cross_compiler(tt)
    executable, used = compile_module(import_onnx(model), tt, pipeline, warn)
    export(executable, path, tt)
    return {"file": path.name, "backend": "tvm", "tvm_target": dict(tt.target), "tvm_version": tvm_version(),
            "tvm_arch": tt.arch, "tvm_device": tt.device, "tvm_pipeline": used, "tvm_note": tt.note}
