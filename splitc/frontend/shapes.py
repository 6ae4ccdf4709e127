"""Fix dynamic input dimensions and run ONNX shape inference."""

from __future__ import annotations

import onnx

from splitc.ir.proto import larger_than

from splitc.errors import ShapeError

_TWO_GB = 2**31 - 1
_BIG_WEIGHT = 1 << 20  # weights above this become typed inputs in the inference skeleton


def real_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are not initializers (old IR versions list weights as inputs)."""
    weights = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in weights]


def fix_input_shapes(model: onnx.ModelProto, overrides: dict[str, tuple[int, ...]] | None = None) -> None:
    """Make every input dimension static, in place.

    ``overrides`` (from ``--input-shape``) wins; otherwise a dynamic leading
    dimension becomes 1 (the batch), and any other dynamic one is an error.
    Stale intermediate shapes are dropped so that inference recomputes them.
    """
    overrides = dict(overrides or {})
    inputs = real_inputs(model)
    unknown = sorted(set(overrides) - {i.name for i in inputs})
    if unknown:
        names = ", ".join(i.name for i in inputs)
        raise ShapeError(f"--input-shape names {unknown[0]!r}, which is not a model input (inputs: {names})")
    before = [i.SerializeToString() for i in inputs]
    for value in inputs:
        if not value.type.HasField("tensor_type"):
            raise ShapeError(f"input {value.name!r} is not a tensor; only tensor inputs are supported")
        _fix_one(value, overrides.get(value.name))
    if before != [i.SerializeToString() for i in inputs]:
        _forget_shapes(model)


def _forget_shapes(model: onnx.ModelProto) -> None:
    """Drop inferred intermediate shapes and the declared output shapes; keep element types."""
    del model.graph.value_info[:]
    for output in model.graph.output:
        if output.type.HasField("tensor_type"):
            output.type.tensor_type.ClearField("shape")


def _fix_one(value: onnx.ValueInfoProto, override: tuple[int, ...] | None) -> None:
    tensor = value.type.tensor_type
    if override is not None:
        if tensor.HasField("shape") and len(tensor.shape.dim) != len(override):
            raise ShapeError(
                f"--input-shape for {value.name!r} has rank {len(override)}, but the input has rank {len(tensor.shape.dim)}"
            )
        del tensor.shape.dim[:]
        for size in override:
            tensor.shape.dim.add().dim_value = size
        return
    if not tensor.HasField("shape"):
        raise ShapeError(f"input {value.name!r} has no shape; give one with --input-shape {value.name}=1x3x224x224")
    dynamic = [(i, d.dim_param or "?") for i, d in enumerate(tensor.shape.dim)
               if i > 0 and not (d.HasField("dim_value") and d.dim_value > 0)]
    if dynamic:
        listed = ", ".join(f"{i} ({label})" for i, label in dynamic)
        example = "x".join(str(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else
                           ("1" if i == 0 else (d.dim_param or "N").upper()) for i, d in enumerate(tensor.shape.dim))
        raise ShapeError(
            f"input {value.name!r} has dynamic dimension{'s' if len(dynamic) > 1 else ''} {listed}; "
            f"fix {'them' if len(dynamic) > 1 else 'it'} with --input-shape {value.name}={example} (numbers for the names)"
        )
    for index, dim in enumerate(tensor.shape.dim):
        if index == 0 and not (dim.HasField("dim_value") and dim.dim_value > 0):
            dim.dim_value = 1


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run ONNX shape inference with data propagation (for computed Reshape shapes).

    Protobuf cannot hold more than 2 GB, so larger models are inferred on a
    skeleton whose big weights are typed graph inputs instead of data.
    """
    if not larger_than(model, _TWO_GB):
        return _infer(model)
    shell = skeleton(model)
    inferred = _infer(shell)
    result = onnx.ModelProto()
    result.CopyFrom(model)
    known = {i.name for i in [*model.graph.input, *model.graph.output]}
    del result.graph.value_info[:]
    result.graph.value_info.extend(v for v in inferred.graph.value_info if v.name not in known)
    return result


def _infer(model: onnx.ModelProto) -> onnx.ModelProto:
    try:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    except onnx.shape_inference.InferenceError as exc:
        raise ShapeError(f"shape inference failed: {str(exc).strip().splitlines()[0]}") from exc


def skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with every weight over ``_BIG_WEIGHT`` bytes replaced by a typed graph input."""
    skeleton = onnx.ModelProto()
    skeleton.CopyFrom(model)
    keep, typed = [], []
    for tensor in skeleton.graph.initializer:
        size = len(tensor.raw_data) or tensor.ByteSize()
        if size > _BIG_WEIGHT:
            typed.append(onnx.helper.make_tensor_value_info(tensor.name, tensor.data_type, list(tensor.dims)))
        else:
            keep.append(tensor)
    del skeleton.graph.initializer[:]
    skeleton.graph.initializer.extend(keep)
    declared = {i.name for i in skeleton.graph.input}
    skeleton.graph.input.extend(t for t in typed if t.name not in declared)
    return skeleton

