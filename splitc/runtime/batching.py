"""Dynamic batching of a cloud half: several requests of one plan in one onnxruntime call.

A compiled cloud half has a fixed batch of 1. ``stack_half`` makes a copy whose
batch dimension is dynamic, when the model allows it:

* every input and output has a leading dimension of 1 (a rank-0 input, a cut
  tensor's per-request ``min``/``max``, becomes ``[N, 1, ..., 1]``, which
  broadcasts per request against the cut tensor exactly as the scalar did);
* ``Reshape`` shape constants that start with 1 (a flatten to ``[1, K]``) start
  with 0 instead (copy the input's leading dimension); no other op is changed.

The copy is then *verified*: two different requests run as a batch of 2 must
give what the original half gives for each of them alone, within
``RTOL`` of each value plus ``RTOL`` of the largest value. onnxruntime may pick
other kernels or blockings for a batch (a GEMM with M = 2 instead of a GEMV), so
batched answers equal unbatched ones to float rounding, not always bit for bit;
a batch of one request always runs the original half (exact). When any step
fails, the plan is served one call per request and the reason is reported
(``GET /v1/plans`` on the Ray engine).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

RTOL = 1e-5
BATCH = "batch"


@dataclass
class StackedHalf:
    """A cloud half with a dynamic batch dimension; ``shapes``: each input's per-request shape (leading 1)."""

    session: ort.InferenceSession
    shapes: dict[str, tuple[int, ...]]
    output_names: list[str]

    def run(self, feeds: list[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """The outputs of each request's feeds, computed in one call (in ``output_names`` order)."""
        stacked = {name: np.concatenate([np.asarray(f[name]).reshape(shape) for f in feeds], axis=0)
                   for name, shape in self.shapes.items()}
        values = self.session.run(self.output_names, stacked)
        return [[np.ascontiguousarray(v[i:i + 1]) for v in values] for i in range(len(feeds))]


def stack_half(path: Path, session: ort.InferenceSession, threads: int = 0) -> tuple[StackedHalf | None, str]:
    """A verified dynamic-batch copy of the cloud half at ``path`` (``session``: the original), or None and why."""
    if Path(path).suffix != ".onnx":
        return None, f"{Path(path).name} is not an ONNX half (a TVM build has a fixed batch of 1)"
    try:
        import onnx

        model = onnx.load(str(path))
        shapes, why = _make_dynamic(model)
        if shapes is None:
            return None, why
        from splitc.runtime.cloud_service import session_options

        batched = ort.InferenceSession(model.SerializeToString(), session_options(threads),
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # any failure only means: no batching for this plan
        return None, f"cannot make the batch dimension dynamic: {type(exc).__name__}: {_first_line(exc)}"
    names = [o.name for o in session.get_outputs()]
    half = StackedHalf(batched, shapes, names)
    return _verify(half, session)


def _make_dynamic(model) -> tuple[dict[str, tuple[int, ...]] | None, str]:
    graph = model.graph
    initializers = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    dims = {i.name: _dims(i) for i in inputs}
    if any(d is None for d in dims.values()):
        return None, "an input has no fixed shape"
    rank = max((len(d) for d in dims.values() if d), default=0)
    if rank == 0:
        return None, "no input has a batch dimension"
    shapes: dict[str, tuple[int, ...]] = {}
    for value in inputs:
        shape = dims[value.name]
        if not shape:  # a per-request scalar (a cut tensor's min or max): [N, 1, ..., 1]
            shape = (1,) * rank
            tensor_shape = value.type.tensor_type.shape
            for _ in range(rank):
                tensor_shape.dim.add().dim_value = 1
        elif shape[0] != 1:
            return None, f"input {value.name!r} has shape {list(shape)}, not a leading batch dimension of 1"
        value.type.tensor_type.shape.dim[0].dim_param = BATCH
        shapes[value.name] = tuple(shape)
    for value in graph.output:
        shape = _dims(value)
        if not shape or shape[0] != 1:
            return None, f"output {value.name!r} has shape {list(shape or [])}, not a leading batch dimension of 1"
        value.type.tensor_type.shape.dim[0].dim_param = BATCH
    del graph.value_info[:]  # intermediate shapes recorded for a batch of 1
    _patch_reshapes(graph)
    return shapes, ""


def _dims(value) -> tuple[int, ...] | None:
    shape = value.type.tensor_type.shape
    if not value.type.tensor_type.HasField("shape"):
        return None
    dims = []
    for dim in shape.dim:
        if not dim.HasField("dim_value"):
            return None
        dims.append(int(dim.dim_value))
    return tuple(dims)


def _patch_reshapes(graph) -> None:
    """``Reshape(x, [1, ...])`` → ``Reshape(x, [0, ...])`` where the constant feeds nothing but Reshape shapes."""
    from onnx import numpy_helper

    shape_uses: dict[str, int] = {}
    other_uses: set[str] = set()
    for node in graph.node:
        for k, name in enumerate(node.input):
            allow_zero = any(a.name == "allowzero" and a.i for a in node.attribute)
            if node.op_type == "Reshape" and k == 1 and not allow_zero:
                shape_uses[name] = shape_uses.get(name, 0) + 1
            else:
                other_uses.add(name)
    patchable = set(shape_uses) - other_uses - {o.name for o in graph.output}
    for tensor in graph.initializer:
        if tensor.name in patchable:
            _zero_lead(tensor, numpy_helper)
    for node in graph.node:
        if node.op_type == "Constant" and node.output[0] in patchable:
            for attr in node.attribute:
                if attr.name == "value":
                    _zero_lead(attr.t, numpy_helper)


def _zero_lead(tensor, numpy_helper) -> None:
    value = numpy_helper.to_array(tensor).copy()
    if value.ndim == 1 and value.size and value[0] == 1:
        value[0] = 0
        tensor.CopyFrom(numpy_helper.from_array(value, tensor.name))


def _verify(half: StackedHalf, session: ort.InferenceSession) -> tuple[StackedHalf | None, str]:
    rng = np.random.default_rng(0)
    types = {i.name: i.type for i in session.get_inputs()}
    requests = []
    for _ in range(2):
        feeds = {}
        for name, shape in half.shapes.items():
            original = tuple(d if isinstance(d, int) else 1 for d in next(
                i.shape for i in session.get_inputs() if i.name == name))
            feeds[name] = _sample(rng, types[name], original)
        requests.append(feeds)
    try:
        singles = [session.run(half.output_names, f) for f in requests]
        batched = half.run(requests)
    except Exception as exc:
        return None, f"onnxruntime cannot run the half with a batch of 2: {type(exc).__name__}: {_first_line(exc)}"
    for single, together in zip(singles, batched):
        for name, a, b in zip(half.output_names, single, together):
            if a.shape != b.shape or a.dtype != b.dtype:
                return None, f"output {name!r} of a batch of 2 has shape {list(b.shape)}, alone {list(a.shape)}"
            if a.dtype.kind == "f":
                scale = float(np.abs(a).max()) if a.size else 0.0
                if not np.allclose(b, a, rtol=RTOL, atol=RTOL * scale, equal_nan=True):
                    return None, f"output {name!r} of a batch of 2 differs from single runs beyond rtol {RTOL}"
            elif not np.array_equal(a, b):
                return None, f"output {name!r} of a batch of 2 differs from single runs"
    return half, f"one onnxruntime call per batch (verified: a batch of 2 equals single runs, rtol {RTOL})"


def _sample(rng: np.random.Generator, onnx_type: str, shape: tuple[int, ...]) -> np.ndarray:
    if onnx_type == "tensor(uint8)":
        return rng.integers(0, 16, size=shape, dtype=np.uint8)
    if onnx_type in ("tensor(float)", "tensor(double)", "tensor(float16)"):
        dtype = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}[onnx_type]
        return rng.standard_normal(shape).astype(dtype)
    if onnx_type == "tensor(bool)":
        return np.zeros(shape, bool)
    return np.zeros(shape, onnx_type.removeprefix("tensor(").rstrip(")").replace("int", "int"))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else ""
