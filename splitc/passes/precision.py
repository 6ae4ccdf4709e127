"""Reduced-precision edge halves (``--edge-precision fp16``): weights and activations in float16.

The edge half is rewritten with onnxruntime's float16 converter, keeping its
inputs and outputs float32 (a Cast at each), so the quantizer at the cut, the
wire format and the cloud half are unchanged. Ops that have no float16 kernel
in common runtimes stay float32 behind casts (the converter's block list).
The cost model gets the target's FP16 figures (``Target.in_fp16``), and
calibration measures the accuracy with the float16 prefix.
"""

from __future__ import annotations

import warnings

import onnx

from splitc.errors import SplitcError
from splitc.passes.base import Pass, PassError, PassResult, check_half

PRECISIONS = ("fp32", "fp16")


def check(precision: str) -> str:
    if precision not in PRECISIONS:
        raise SplitcError(f"--edge-precision must be fp32 or fp16, not {precision!r}")
    return precision


def edge_precision(models) -> str:
    """The precision the edge cost model (``models[0]``) is for."""
    target = getattr(models[0], "target", None)
    return getattr(target, "precision", "fp32")


def to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` computing in float16, with its float32 inputs and outputs (same names) kept."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    names = ([i.name for i in model.graph.input], [o.name for o in model.graph.output])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # values beyond float16's range are clamped; calibration measures the effect
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # the converter rewrites its argument in place
        half = convert_float_to_float16(copy, keep_io_types=True, disable_shape_infer=True)
    if ([i.name for i in half.graph.input], [o.name for o in half.graph.output]) != names:
        raise SplitcError("the float16 rewrite renamed the half's inputs or outputs")
    _sort_nodes(half.graph)
    return half


class ToFloat16Edge(Pass):
    """The edge half computing in float16 (``to_fp16``): a new model, its float32 inputs and outputs kept."""

    name = "to-float16-edge"

    def requires(self, model: onnx.ModelProto) -> None:
        """Every input and output of the half has a tensor element type (the converter keeps them by type)."""
        untyped = [v.name for v in [*model.graph.input, *model.graph.output] if not v.type.tensor_type.elem_type]
        if untyped:
            raise PassError(f"inputs or outputs without a tensor type: {untyped}")

    def run(self, model: onnx.ModelProto) -> PassResult:
        """Convert; not applicable to a half with no nodes (a cloud-only plan's edge half)."""
        if not model.graph.node:
            return PassResult.fail(model, "the edge half has no nodes")
        return PassResult(to_fp16(model), True)  # to_fp16 refuses a rewrite that renames inputs or outputs

    def ensures(self, model: onnx.ModelProto) -> None:
        """The half passes the full ONNX check."""
        check_half(model)


def _sort_nodes(graph: onnx.GraphProto) -> None:
    """Put the nodes in topological order (the converter appends its input casts at the end)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(name in available for name in n.input)]
        if not ready:  # inputs from an outer scope or a cycle: keep the rest as they are
            ordered += pending
            break
        for node in ready:
            available.update(node.output)
        ordered += ready
        pending = [n for n in pending if not any(n is r for r in ready)]
    copies = []
    for node in ordered:
        copy = onnx.NodeProto()
        copy.CopyFrom(node)
        copies.append(copy)
    del graph.node[:]
    graph.node.extend(copies)
