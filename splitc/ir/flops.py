"""FLOP estimates per operator, from the op type and the inferred shapes.

A multiply-accumulate counts as two FLOPs. Ops not listed cost one FLOP per
output element, which is right for elementwise ops and a fair lower bound for
data movement ops.
"""

from __future__ import annotations

import math
from typing import Callable

from splitc.ir.graph import Node

_ELEMENTWISE_WEIGHT = {
    "Add": 1, "Sub": 1, "Mul": 1, "Div": 1, "Relu": 1, "LeakyRelu": 2, "PRelu": 2, "Clip": 2,
    "Max": 1, "Min": 1, "Sum": 1, "Mean": 1, "Abs": 1, "Neg": 1, "Sqrt": 4, "Pow": 8,
    "Exp": 8, "Log": 8, "Tanh": 8, "Sigmoid": 8, "Erf": 8, "Gelu": 10, "HardSigmoid": 3,
    "HardSwish": 4, "Elu": 8, "Selu": 8, "Softplus": 10, "Reciprocal": 1, "Where": 1,
    "BatchNormalization": 2, "InstanceNormalization": 5, "LayerNormalization": 8,
    "Softmax": 5, "LogSoftmax": 6, "Dropout": 0, "Identity": 0, "Reshape": 0,
    "Flatten": 0, "Squeeze": 0, "Unsqueeze": 0, "Shape": 0, "Constant": 0,
}


def _prod(values) -> int:
    return int(math.prod(int(v) for v in values))


def _out_numel(node: Node) -> int:
    return sum(v.numel for v in node.outputs)


def _conv(node: Node) -> float:
    weight = node.inputs[1]
    out = node.outputs[0]
    if weight is None or weight.shape is None or out.shape is None:
        return float(_out_numel(node))
    # weight: (Cout, Cin/group, k...), so one output element needs Cin/group * prod(k) MACs
    macs_per_out = _prod(weight.shape[1:])
    bias = 1 if len(node.inputs) > 2 and node.inputs[2] is not None else 0
    return float(out.numel * (2 * macs_per_out + bias))


def _conv_transpose(node: Node) -> float:
    x, weight = node.inputs[0], node.inputs[1]
    if x is None or weight is None or x.shape is None or weight.shape is None:
        return float(_out_numel(node))
    # every input element is scattered through Cout/group * prod(k) MACs
    return float(2 * x.numel * _prod(weight.shape[1:]))


def _matmul(node: Node) -> float:
    a = node.inputs[0]
    out = node.outputs[0]
    if a is None or a.shape is None or out.shape is None:
        return float(_out_numel(node))
    k = a.shape[-1] if len(a.shape) >= 1 else 1
    return float(2 * out.numel * k)


def _gemm(node: Node) -> float:
    a = node.inputs[0]
    out = node.outputs[0]
    if a is None or a.shape is None or out.shape is None:
        return float(_out_numel(node))
    trans_a = any(attr.name == "transA" and attr.i for attr in node.proto.attribute)
    k = a.shape[0] if trans_a else a.shape[-1]
    bias = 1 if len(node.inputs) > 2 and node.inputs[2] is not None else 0
    return float(out.numel * (2 * k + bias))


def _kernel_size(node: Node) -> int:
    for attr in node.proto.attribute:
        if attr.name == "kernel_shape":
            return _prod(attr.ints)
    return 1


def _pool(node: Node) -> float:
    return float(_out_numel(node) * _kernel_size(node))


def _global_pool(node: Node) -> float:
    x = node.inputs[0]
    return float(x.numel if x is not None else _out_numel(node))


def _reduce(node: Node) -> float:
    x = node.inputs[0]
    return float(x.numel if x is not None else _out_numel(node))


def _lrn(node: Node) -> float:
    size = next((attr.i for attr in node.proto.attribute if attr.name == "size"), 5)
    return float(_out_numel(node) * (2 * size + 4))


_HANDLERS: dict[str, Callable[[Node], float]] = {
    "Conv": _conv,
    "ConvInteger": _conv,
    "QLinearConv": _conv,
    "ConvTranspose": _conv_transpose,
    "MatMul": _matmul,
    "MatMulInteger": _matmul,
    "Gemm": _gemm,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "LpPool": _pool,
    "GlobalAveragePool": _global_pool,
    "GlobalMaxPool": _global_pool,
    "LRN": _lrn,
}


def node_flops(node: Node) -> float:
    """Estimated floating-point operations of one execution of ``node``."""
    handler = _HANDLERS.get(node.op_type)
    if handler is not None:
        return handler(node)
    if node.op_type.startswith("Reduce"):
        return _reduce(node)
    return float(_out_numel(node) * _ELEMENTWISE_WEIGHT.get(node.op_type, 1))
