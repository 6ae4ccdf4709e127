"""Shared pieces of the linear rewrites (cut bottleneck, low-rank): graph edits, fits and FLOP counts.

The fits work in float64 on calibration rows: a tensor of shape (N, C, ...) becomes a matrix with one row
per sample and position and one column per channel (``rows``). ``whitened_lowrank`` is the closed-form
rank-r minimiser of ``||X W - X A B||_F`` on such rows (SVD with activation whitening).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import helper, numpy_helper
from scipy import linalg

from splitc.errors import SplitcError
from splitc.frontend import import_model, subgraph_captures
from splitc.frontend.build import name_nodes

_TINY = 1e-30


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose nodes all have unique names (the names the frontend gives them)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    name_nodes(copy)
    return copy


def constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Constant tensors of the main graph: initializers that are not graph inputs, and Constant nodes."""
    inputs = {i.name for i in model.graph.input}
    found = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.name not in inputs}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            value = next((a for a in node.attribute if a.name == "value"), None)
            if value is not None:
                found[node.output[0]] = numpy_helper.to_array(value.t)
    return found


def attributes(node: onnx.NodeProto) -> dict:
    """The node's attributes as Python values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def readers(model: onnx.ModelProto, tensor: str) -> list[onnx.NodeProto]:
    """Main-graph nodes that read ``tensor`` as an explicit input."""
    return [n for n in model.graph.node if tensor in n.input]


def captured_by_subgraph(model: onnx.ModelProto, tensor: str) -> bool:
    """Whether a subgraph of a control-flow node reads ``tensor`` from the main graph."""
    return any(tensor in subgraph_captures(n) for n in model.graph.node)


def fresh_name(model: onnx.ModelProto, base: str) -> str:
    """``base``, or ``base`` with a numeric suffix, unused by any tensor or node of the main graph."""
    taken = {t.name for t in model.graph.initializer} | {i.name for i in model.graph.input}
    for node in model.graph.node:
        taken.update(node.input)
        taken.update(node.output)
        taken.add(node.name)
    name, k = base, 1
    while name in taken:
        name, k = f"{base}_{k}", k + 1
    return name


def add_constant(model: onnx.ModelProto, base: str, array: np.ndarray) -> str:
    """Add ``array`` as an initializer under a fresh name derived from ``base``; returns the name."""
    name = fresh_name(model, base)
    model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
    return name


def drop_unused(model: onnx.ModelProto) -> None:
    """Remove initializers and Constant nodes that nothing reads any more (subgraph captures count)."""
    used = {o.name for o in model.graph.output}
    for node in model.graph.node:
        used.update(node.input)
        used.update(subgraph_captures(node))
    inputs = {i.name for i in model.graph.input}
    keep = [t for t in model.graph.initializer if t.name in used or t.name in inputs]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    dead = [n for n in model.graph.node if n.op_type == "Constant" and not set(n.output) & used]
    for node in dead:
        model.graph.node.remove(node)


def rows(array: np.ndarray, axis: int = 1) -> np.ndarray:
    """Float64 matrix with the ``axis`` dimension as columns and every other position as a row."""
    moved = np.moveaxis(np.asarray(array, dtype=np.float64), axis, -1)
    return moved.reshape(-1, moved.shape[-1])


def whitened_lowrank(x: np.ndarray, w: np.ndarray, rank: int, ridge: float) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)`` of shapes (in, r), (r, out) with ``x @ a @ b`` the best rank-r fit of ``x @ w``.

    With ``S = x^T x / n + ridge * tr(S)/in * I = L L^T`` and ``L^T w = U diag(s) V^T``: ``a = L^-T U_r``,
    ``b = diag(s_r) V_r^T``; then ``||x w - x a b||_F`` is minimal over rank-r products (Eckart-Young on
    ``L^T w``), up to the ridge. Raises ``np.linalg.LinAlgError`` when ``S`` is not positive definite.
    """
    n, width = x.shape
    s = x.T @ x / max(n, 1)
    s[np.diag_indices(width)] += ridge * max(np.trace(s) / width, _TINY)
    lower = np.linalg.cholesky(s)
    u, sigma, vt = np.linalg.svd(lower.T @ w, full_matrices=False)
    r = min(rank, sigma.size)
    a = linalg.solve_triangular(lower.T, u[:, :r], lower=False)
    return a, sigma[:r, None] * vt[:r]


def relative_error(target: np.ndarray, approx: np.ndarray) -> float:
    """``||target - approx|| / ||target||`` (0 when both vanish)."""
    scale = float(np.linalg.norm(target))
    diff = float(np.linalg.norm(target - approx))
    return 0.0 if scale == 0.0 else diff / scale


def scope_flops(model: onnx.ModelProto, scope: Iterable[str] | None) -> float:
    """Total FLOPs of the named nodes (every node when ``scope`` is None), from the frontend's IR."""
    names = None if scope is None else set(scope)
    graph = import_model(model)
    return float(sum(n.flops for n in graph.nodes if names is None or n.name in names))


def flops_pair(before: onnx.ModelProto, after: onnx.ModelProto, scope: Iterable[str] | None,
               added: Iterable[str]) -> tuple[float, float] | str:
    """Scope FLOPs before and after a rewrite that added the nodes ``added`` to the scope.

    Returns the reason in words when the frontend cannot count them (a dynamic shape).
    """
    names = None if scope is None else set(scope)
    try:
        return scope_flops(before, names), scope_flops(after, None if names is None else names | set(added))
    except SplitcError as exc:
        return f"cannot count FLOPs: {exc}"


def make_node(op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> onnx.NodeProto:
    """A default-domain node (attributes sorted, as ``helper.make_node`` writes them)."""
    return helper.make_node(op, inputs, outputs, name=name, **dict(sorted(attrs.items())))
