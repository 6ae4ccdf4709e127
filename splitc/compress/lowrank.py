"""Data-aware low-rank factorisation of the linear layers in scope (Gemm, MatMul, Conv).

Each layer is fitted independently on the calibration activations of the model the ``Activations`` were
built with, and replaced by two layers whose product has rank ``d``:

* **Gemm / MatMul** with a constant weight ``W`` (in x out; Gemm's ``transB`` and ``alpha`` folded in):
  SVD with activation whitening. With the input covariance ``S = X^T X / n`` (plus a ridge
  ``eps * tr(S) / in * I``), ``S = L L^T`` and ``L^T W = U diag(s) V^T``, the layer becomes
  ``X (L^-T U_d) (diag(s_d) V_d^T)``: a first Gemm/MatMul without bias, then one with the original bias.
  This is the rank-d minimiser of ``||X W - X W'||_F`` on the calibration inputs (up to the ridge).
* **Conv** (group 1) with weight (Cout, Cin, k...): a Conv with ``d`` filters and the original geometry,
  then a 1x1 Conv (Cout <- d) with the bias. ``M`` holds the top-d eigenvectors of the *uncentred* second
  moment ``Y^T Y`` of the layer's pre-bias responses ``Y`` (positions x Cout); the filters are ``M^T W`` and
  the 1x1 weight is ``M``, so the layer computes ``Y M M^T + b``: the best rank-d map of the responses
  (Eckart-Young on ``Y``; uncentred because the two convolutions carry no bias between them). Its
  calibration error is never above that of the truncated SVD of the reshaped weight, whose responses also
  have rank d.

``level`` is the fraction of a layer's FLOPs kept: ``d`` is the largest rank with
``FLOPs(factored) <= level * FLOPs(layer)``. Layers where no rank saves FLOPs are skipped with the reason;
an explicit ``rank`` overrides the level for every eligible layer (clipped to full rank, where the rewrite
is exact up to round-off).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx

from splitc.compress import _linear as lin
from splitc.compress.base import Activations, Rewrite, Variant
from splitc.errors import SplitcError
from splitc.passes.base import PassResult

NOTHING_ELIGIBLE = "no Gemm/MatMul/Conv with a constant weight in scope"


@dataclass
class _Layer:
    """One linear layer in canonical form: ``weight`` is (in, out) for Gemm/MatMul, the Conv weight else."""

    node: onnx.NodeProto
    kind: str  # "Gemm", "MatMul" or "Conv"
    weight: np.ndarray
    k_in: int  # multiply-accumulates per output element
    out: int
    bias: str | None  # Gemm's C or Conv's B
    beta: float = 1.0

    @property
    def full_rank(self) -> int:
        return min(self.k_in, self.out)

    def flops(self, rank: int | None = None) -> float:
        """FLOPs per output position of the layer (``rank`` None) or of its rank-``rank`` factorisation."""
        b = 0 if self.bias is None else 1
        if rank is None:
            return float(self.out * (2 * self.k_in + b))
        return float(rank * 2 * self.k_in + self.out * (2 * rank + b))


def _layer(node: onnx.NodeProto, consts: dict[str, np.ndarray]) -> _Layer | str:
    """The layer's canonical form, or why it cannot be factored."""
    attrs = lin.attributes(node)
    inputs = list(node.input) + [""] * 3
    data, weight, bias = inputs[0], consts.get(inputs[1]), inputs[2] or None
    if weight is None or data in consts:
        return "the weight is not a constant (or the input is)"
    if weight.dtype.kind != "f":
        return f"the weight is {weight.dtype}, not float"
    if node.op_type == "Conv":
        if attrs.get("group", 1) != 1:
            return f"grouped Conv (group {attrs['group']})"
        if bias is not None and bias not in consts:
            return "the bias is not a constant"
        return _Layer(node, "Conv", weight, int(np.prod(weight.shape[1:])), weight.shape[0], bias)
    if weight.ndim != 2:
        return f"the weight has rank {weight.ndim}, not 2"
    if node.op_type == "MatMul":
        return _Layer(node, "MatMul", weight, weight.shape[0], weight.shape[1], None)
    if attrs.get("transA", 0):
        return "Gemm with transA"
    w = (weight.T if attrs.get("transB", 0) else weight) * attrs.get("alpha", 1.0)
    return _Layer(node, "Gemm", w.astype(weight.dtype), w.shape[0], w.shape[1], bias, attrs.get("beta", 1.0))


def _rank(layer: _Layer, level: float, rank: int | None) -> int | str:
    """The rank to factor ``layer`` at, or why it is skipped."""
    if rank is not None:
        return min(int(rank), layer.full_rank)
    if layer.flops(1) >= layer.flops():
        return "no rank saves FLOPs"
    b = 0 if layer.bias is None else 1
    budget = level * layer.flops() - layer.out * b
    d = min(int(np.floor(budget / (2 * layer.k_in + 2 * layer.out))), layer.full_rank)
    while d >= 1 and layer.flops(d) >= layer.flops():
        d -= 1
    if d < 1:
        return f"no rank keeps the FLOPs within {level:g} of the layer's"
    return d


def _fit_dense(layer: _Layer, x: np.ndarray, rank: int, ridge: float) -> tuple[np.ndarray, np.ndarray, float]:
    """Whitened-SVD factors (in x d, d x out) of a Gemm/MatMul and their relative calibration error."""
    xs = lin.rows(x, axis=-1)
    w = layer.weight.astype(np.float64)
    a, b = lin.whitened_lowrank(xs, w, rank, ridge)
    return a, b, lin.relative_error(xs @ w, (xs @ a) @ b)


def _fit_conv(layer: _Layer, y: np.ndarray, bias: np.ndarray | None, rank: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Filters (d, Cin, k...) and 1x1 weight (Cout, d, 1...) from the responses ``y`` (N, Cout, ...)."""
    ys = lin.rows(y)
    if bias is not None:
        ys = ys - bias.astype(np.float64).reshape(1, -1)
    values, vectors = np.linalg.eigh(ys.T @ ys)
    order = np.argsort(values)[::-1][:rank]
    m = vectors[:, order]
    first = np.einsum("oj,o...->j...", m, layer.weight.astype(np.float64))
    second = m.reshape(m.shape + (1,) * (layer.weight.ndim - 2))
    total = float(np.clip(values, 0, None).sum())
    kept = float(np.clip(values[order], 0, None).sum())
    error = 0.0 if total == 0.0 else float(np.sqrt(max(total - kept, 0.0) / total))
    return first, second, error


def _emit(model: onnx.ModelProto, layer: _Layer, first: np.ndarray, second: np.ndarray) -> str:
    """Replace the layer's node by its two factors, in place; returns the added node's name."""
    node, dtype = layer.node, layer.weight.dtype
    out = node.output[0]
    hidden = lin.fresh_name(model, f"{out}/lowrank")
    added = lin.fresh_name(model, f"{node.name}/lowrank")
    w1 = lin.add_constant(model, f"{node.name}/lowrank/w1", first.astype(dtype))
    w2 = lin.add_constant(model, f"{node.name}/lowrank/w2", second.astype(dtype))
    data = node.input[0]
    if layer.kind == "Conv":
        attrs = lin.attributes(node)
        one = lin.make_node("Conv", [data, w1], [hidden], added, **attrs)
        two = lin.make_node("Conv", [hidden, w2] + ([layer.bias] if layer.bias else []), [out], node.name,
                            kernel_shape=[1] * (first.ndim - 2))
    elif layer.kind == "Gemm":
        one = lin.make_node("Gemm", [data, w1], [hidden], added)
        extra = {"beta": layer.beta} if layer.bias and layer.beta != 1.0 else {}
        two = lin.make_node("Gemm", [hidden, w2] + ([layer.bias] if layer.bias else []), [out], node.name, **extra)
    else:
        one = lin.make_node("MatMul", [data, w1], [hidden], added)
        two = lin.make_node("MatMul", [hidden, w2], [out], node.name)
    index = next(i for i, n in enumerate(model.graph.node) if n.name == node.name)
    del model.graph.node[index]
    model.graph.node.insert(index, two)
    model.graph.node.insert(index, one)
    return added


class LowRank(Rewrite):
    """Factor every Gemm, MatMul and group-1 Conv with a constant weight in scope (see the module doc).

    ``level`` is the fraction of each layer's FLOPs kept; ``rank`` (optional) fixes the rank of every layer
    instead. ``ridge`` regularises the input covariance of Gemm/MatMul (relative to its mean eigenvalue).
    After ``run``, ``variant`` holds the rewritten model's :class:`Variant` (None when nothing applied); its
    ``detail`` has ``layers`` (per node: op, rank, full_rank, flops_before and flops_after per run of the
    model, fit_error: the relative calibration error of the layer's output before its bias) and ``skipped``
    (node -> reason). Each factored node keeps its name on the second factor; the first is named
    ``<node>/lowrank`` (listed in ``added``).
    """

    name = "lowrank"

    def __init__(self, activations: Activations, scope: Iterable[str] | None = None, level: float = 0.5,
                 rank: int | None = None, ridge: float = 1e-6) -> None:
        super().__init__(activations, scope, level)
        if rank is not None and int(rank) < 1:
            raise SplitcError(f"a low-rank factorisation needs a rank of at least 1, not {rank}")
        if rank is None and not 0.0 < self.level <= 1.0:
            raise SplitcError(f"a low-rank level is a fraction of FLOPs in (0, 1], not {level}")
        self.rank = None if rank is None else int(rank)
        self.ridge = float(ridge)
        self.variant: Variant | None = None

    def run(self, model: onnx.ModelProto) -> PassResult:
        """Factor the eligible layers of a copy of ``model``; not applicable when none is (with the reasons)."""
        self.variant = None
        work = lin.prepare(model)
        consts = lin.constants(work)
        layers, skipped = self._select(work, consts)
        if not layers:
            return PassResult.fail(model, "; ".join(f"{k}: {v}" for k, v in skipped.items()) or NOTHING_ELIGIBLE)
        wanted = [lay.node.output[0] if lay.kind == "Conv" else lay.node.input[0] for lay, _ in layers]
        try:
            acts = self.activations.get(wanted)
        except Exception as exc:  # noqa: BLE001 (onnxruntime's own errors)
            return PassResult.fail(model, f"cannot capture the calibration activations: {_first_line(exc)}")
        done, added = {}, []
        for (lay, rank), name in zip(layers, wanted):
            fitted = self._fit(lay, acts[name], consts, rank)
            if isinstance(fitted, str):
                skipped[lay.node.name] = fitted
                continue
            first, second, error = fitted
            added.append(_emit(work, lay, first, second))
            positions = acts[name].size / (lay.out if lay.kind == "Conv" else lay.k_in) / len(self.activations)
            done[lay.node.name] = {"op": lay.kind, "rank": rank, "full_rank": lay.full_rank,
                                   "flops_before": positions * lay.flops(),
                                   "flops_after": positions * lay.flops(rank), "fit_error": error}
        if not done:
            return PassResult.fail(model, "; ".join(f"{k}: {v}" for k, v in skipped.items()))
        lin.drop_unused(work)
        flops = lin.flops_pair(model, work, self.scope, added)
        if isinstance(flops, str):
            return PassResult.fail(model, flops)
        level = self.level if self.rank is None else flops[1] / max(flops[0], 1.0)
        detail = {"layers": done, "skipped": skipped, "added": added}
        self.variant = Variant(self.name, level, work, flops[0], flops[1], detail)
        return PassResult(work, True)

    def apply(self, model: onnx.ModelProto) -> Variant:
        """``run`` and return the :class:`Variant`; raises ``SplitcError`` with the reason when nothing applies."""
        result = self(model)
        if not result.modified:
            raise SplitcError(f"low-rank rewrite does not apply: {result.reason}")
        return self.variant

    def _select(self, model: onnx.ModelProto, consts: dict) -> tuple[list[tuple[_Layer, int]], dict[str, str]]:
        """Eligible layers in scope with their ranks, and the skipped ones with their reasons."""
        layers, skipped = [], {}
        for node in model.graph.node:
            if node.op_type not in ("Gemm", "MatMul", "Conv") or node.domain not in ("", "ai.onnx"):
                continue
            if not self.in_scope(node):
                continue
            layer = _layer(node, consts)
            rank = layer if isinstance(layer, str) else _rank(layer, self.level, self.rank)
            if isinstance(rank, str):
                skipped[node.name] = rank
            else:
                layers.append((layer, rank))
        return layers, skipped

    def _fit(self, layer: _Layer, act: np.ndarray, consts: dict, rank: int):
        """``(first, second, error)`` or the reason the fit failed."""
        if not np.all(np.isfinite(act)):
            return "calibration activations are not finite"
        if layer.kind == "Conv":
            return _fit_conv(layer, act, consts.get(layer.bias) if layer.bias else None, rank)
        try:
            return _fit_dense(layer, act, rank, self.ridge)
        except np.linalg.LinAlgError:
            return "the calibration input covariance is not positive definite"


def variants(model: onnx.ModelProto, activations: Activations, scope: Iterable[str] | None = None,
             levels: Sequence[float] = (0.25, 0.5, 0.75)) -> list[Variant]:
    """One :class:`Variant` per level at which some layer in scope can be factored (levels that apply to
    no layer are left out)."""
    found = []
    for level in levels:
        rewrite = LowRank(activations, scope, level)
        if rewrite(model).modified:
            found.append(rewrite.variant)
    return found


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
