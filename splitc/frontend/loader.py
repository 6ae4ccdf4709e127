"""Load an ONNX file: external data, validation, and the opset check."""

from __future__ import annotations

import hashlib
from pathlib import Path

import onnx

from splitc.ir.proto import larger_than
from google.protobuf.message import DecodeError
from onnx import external_data_helper

from splitc.errors import ModelError

MIN_OPSET = 7
_TWO_GB = 2**31 - 1


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_model(path: str | Path) -> onnx.ModelProto:
    """Read and validate an ONNX model, with its external data if it has any."""
    path = Path(path)
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if not path.is_file():
        raise ModelError(f"{path}: not a file")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: not a valid ONNX model (the protobuf could not be parsed: {exc})") from exc
    if model.ir_version <= 0 or not model.HasField("graph") or not model.graph.output:
        raise ModelError(f"{path}: not an ONNX model (no graph with outputs found)")
    _load_external_data(model, path)
    _check_opset(model, path)
    _check(model, path)
    return model


def _load_external_data(model: onnx.ModelProto, path: Path) -> None:
    tensors = [t for t in external_data_helper._get_all_tensors(model) if external_data_helper.uses_external_data(t)]
    for tensor in tensors:
        info = external_data_helper.ExternalDataInfo(tensor)
        location = path.parent / info.location
        if not location.is_file():
            raise ModelError(f"{path}: missing external data file {info.location!r} for tensor {tensor.name!r}")
        needed = info.offset or 0
        if info.length:
            needed += info.length
        if location.stat().st_size < needed:
            raise ModelError(f"{path}: external data file {info.location!r} is truncated (tensor {tensor.name!r})")
    if tensors:
        try:
            external_data_helper.load_external_data_for_model(model, str(path.parent))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{path}: could not read external data: {exc}") from exc


def _check_opset(model: onnx.ModelProto, path: Path) -> None:
    version = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if version is None:
        raise ModelError(f"{path}: the model does not import the default ONNX opset")
    if version < MIN_OPSET:
        raise ModelError(
            f"{path}: opset {version} is older than {MIN_OPSET}; "
            "upgrade it with onnx.version_converter.convert_version(model, 13)"
        )


def _check(model: onnx.ModelProto, path: Path) -> None:
    try:
        if larger_than(model, _TWO_GB):
            onnx.checker.check_model(str(path))
        else:
            onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "invalid model"
        raise ModelError(f"{path}: the model is not valid ONNX: {first}") from exc
