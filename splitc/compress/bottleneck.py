"""A channel bottleneck at the cut: the edge sends ``d < C`` linear combinations of the cut tensor's channels.

The cut tensor ``X`` has shape (N, C, ...); its calibration activations become rows (one per sample and
position) of C features. Two fits give an edge projection ``E`` (C x d), a cloud back-projection ``Q``
(d x C) and the channel mean ``mu``, with ``X' = (X - mu) E Q + mu`` channel-wise:

* ``fit="pca"`` (the default): principal components with mean centring. ``E = P^T``, ``Q = P`` with ``P``
  the top-d eigenvectors of the channel covariance (orthonormal rows): the least-squares best rank-d
  reconstruction of ``X`` itself, whatever reads it. At ``d = C`` it is exact up to round-off.
* ``fit="output"``: least squares on the consumers' outputs. Every consumer outside scope must be a
  Gemm, a MatMul or a 1x1 Conv with a constant weight; with ``W`` their channel weights side by side
  (C x T), ``E`` and ``Q`` minimise ``||(X - mu) W - (X - mu) E Q W||_F`` on the calibration rows
  (SVD with activation whitening, then ``Q = B W^+``). Consumers' outputs are reproduced as well as a
  rank-d map allows, ``X'`` itself need not be; ``d`` is capped at T, where the fit is already exact.

Edge: ``Z = Conv1x1(X; E^T, -E^T mu)`` (a Gemm for (N, C) tensors), the new cut tensor ``X + "/bottleneck"``
(reported in ``Variant.renamed``). Cloud: each consumer outside scope reads ``X'`` instead of ``X``. Where
that is exact, ``X'`` is folded into the consumer: a Gemm (no transA) or MatMul of an (N, C) tensor, or a
group-1 Conv without padding (a padded border would see the folded mean where the original sees zeros).
The other consumers read ``X'`` from one 1x1 Conv (a Gemm for rank 2) named ``X + "/restored"``. Consumers
in scope (on the edge) keep reading ``X``; with ``scope=None`` every consumer is on the cloud side.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import onnx

from splitc.compress import _linear as lin
from splitc.compress.base import Activations, Rewrite, Variant
from splitc.errors import SplitcError
from splitc.passes.base import PassResult

FITS = ("pca", "output")


@dataclass(frozen=True)
class _Map:
    """``X' = (X - mean) @ project @ restore + mean`` on channel rows."""

    project: np.ndarray  # (C, d)
    restore: np.ndarray  # (d, C)
    mean: np.ndarray  # (C,)

    @property
    def channels(self) -> int:
        return self.project.shape[1]


def _pca(xs: np.ndarray, d: int) -> _Map:
    mean = xs.mean(axis=0)
    centred = xs - mean
    values, vectors = np.linalg.eigh(centred.T @ centred / xs.shape[0])
    top = vectors[:, np.argsort(values)[::-1][:d]]
    return _Map(top, top.T, mean)


def _output_fit(xs: np.ndarray, d: int, weights: np.ndarray, ridge: float) -> _Map:
    """Reduced-rank least squares on the consumers' outputs ``xs @ weights`` (centred)."""
    mean = xs.mean(axis=0)
    project, b = lin.whitened_lowrank(xs - mean, weights, d, ridge)
    restore = np.linalg.lstsq(weights.T, b.T, rcond=None)[0].T
    return _Map(project, restore, mean)


def _explained(xs: np.ndarray, fit: _Map) -> float:
    """Fraction of the calibration variance of the cut tensor that ``X'`` keeps."""
    centred = xs - fit.mean
    return 1.0 - lin.relative_error(centred, centred @ fit.project @ fit.restore) ** 2


def _reads_once(node: onnx.NodeProto, cut: str, consts: dict) -> bool:
    """``node`` reads ``cut`` at input 0 only and has a constant weight at input 1."""
    inputs = list(node.input)
    return len(inputs) > 1 and inputs[0] == cut and inputs.count(cut) == 1 and inputs[1] in consts


def _channel_weight(node: onnx.NodeProto, cut: str, consts: dict, rank2: bool) -> np.ndarray | None:
    """The (C, out) channel map of a pointwise linear consumer of ``cut``, else None."""
    if not _reads_once(node, cut, consts):
        return None
    attrs, w = lin.attributes(node), consts[node.input[1]].astype(np.float64)
    if node.op_type == "Conv" and not rank2 and attrs.get("group", 1) == 1 and set(w.shape[2:]) <= {1}:
        return w.reshape(w.shape[:2]).T
    if node.op_type == "MatMul" and rank2 and w.ndim == 2:
        return w
    if node.op_type == "Gemm" and rank2 and not attrs.get("transA", 0):
        return (w.T if attrs.get("transB", 0) else w) * attrs.get("alpha", 1.0)
    return None


def _unpadded(attrs: dict, kernel: tuple[int, ...]) -> bool:
    """Whether a Conv reads no padding (then a constant shift of its input is a bias shift)."""
    auto = attrs.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto.startswith("SAME"):
        return set(kernel) <= {1}
    return not any(attrs.get("pads", []))


def _fold(model: onnx.ModelProto, node: onnx.NodeProto, cut: str, z: str, fit: _Map, consts: dict,
          rank2: bool) -> onnx.NodeProto | None:
    """``node`` rewritten to read ``z`` with the back-projection folded into its weights; None when not exact."""
    bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if not _reads_once(node, cut, consts) or (bias is not None and bias not in consts):
        return None
    attrs, dtype = lin.attributes(node), consts[node.input[1]].dtype
    if node.op_type == "Conv":
        weight = consts[node.input[1]].astype(np.float64)
        if rank2 or attrs.get("group", 1) != 1 or not _unpadded(attrs, weight.shape[2:]):
            return None
        new_w = np.einsum("oc...,jc->oj...", weight, fit.restore)
        new_b = weight.reshape(weight.shape[:2] + (-1,)).sum(-1) @ fit.mean + (0.0 if bias is None else consts[bias])
        op = "Conv"
    else:
        w = _channel_weight(node, cut, consts, rank2)
        if w is None:
            return None
        new_w, new_b, attrs, op = fit.restore @ w, fit.mean @ w, {}, "Gemm"
        if node.op_type == "Gemm" and bias is not None:
            new_b = new_b + lin.attributes(node).get("beta", 1.0) * consts[bias]
    names = [lin.add_constant(model, f"{node.name}/folded/{k}", np.asarray(a).astype(dtype))
             for k, a in (("w", new_w), ("b", new_b))]
    return lin.make_node(op, [z, *names], list(node.output), node.name, **attrs)


def _linear_node(model: onnx.ModelProto, src: str, dst: str, name: str, weight: np.ndarray, bias: np.ndarray,
                 dtype: np.dtype, spatial: int) -> onnx.NodeProto:
    """``dst = src @ weight + bias`` on the channel axis: a Gemm (``spatial`` 0) or a 1x1 Conv."""
    if spatial:
        weight = weight.T.reshape(weight.T.shape + (1,) * spatial)
    w = lin.add_constant(model, f"{name}/w", weight.astype(dtype))
    b = lin.add_constant(model, f"{name}/b", bias.astype(dtype))
    if spatial:
        return lin.make_node("Conv", [src, w, b], [dst], name, kernel_shape=[1] * spatial)
    return lin.make_node("Gemm", [src, w, b], [dst], name)


class CutBottleneck(Rewrite):
    """Project the cut tensor ``cut`` onto ``channels`` channels on the edge and restore it on the cloud.

    ``channels`` (d) or, when it is None, ``level`` (d / C, rounded, at least one channel) sets the width
    of the new cut tensor; ``fit`` is ``"pca"`` (default) or ``"output"`` (see the module doc); ``scope``
    names the edge nodes (their FLOPs are the variant's, and their reads of ``cut`` stay as they are).
    After ``run``, ``variant`` holds the :class:`Variant` (None when the rewrite did not apply): its
    ``renamed`` is ``{cut: new cut}`` and its ``detail`` has ``cut``, ``channels_in``, ``channels_out``,
    ``explained_variance``, ``fit``, ``folded`` and ``restored`` (consumers folded or reading the restored
    tensor), ``edge_nodes`` (the projection, to add to the edge) and ``cloud_nodes`` (the restoring node).
    """

    name = "bottleneck"

    def __init__(self, activations: Activations, cut: str, channels: int | None = None, level: float = 0.5,
                 scope: Iterable[str] | None = None, fit: str = "pca", ridge: float = 1e-6) -> None:
        super().__init__(activations, scope, level)
        if fit not in FITS:
            raise SplitcError(f"unknown bottleneck fit {fit!r}; use one of {', '.join(FITS)}")
        if channels is not None and int(channels) < 1:
            raise SplitcError(f"a bottleneck needs at least one channel, not {channels}")
        if channels is None and not 0.0 < self.level <= 1.0:
            raise SplitcError(f"a bottleneck level is a fraction of the channels in (0, 1], not {level}")
        self.cut, self.fit, self.ridge = cut, fit, float(ridge)
        self.channels = None if channels is None else int(channels)
        self.variant: Variant | None = None

    def run(self, model: onnx.ModelProto) -> PassResult:
        """Insert the bottleneck into a copy of ``model``; not applicable (with the reason) when it cannot."""
        self.variant = None
        work = lin.prepare(model)
        found = self._calibration(work)
        if isinstance(found, str):
            return PassResult.fail(model, found)
        act, cloud = found
        consts = lin.constants(work)
        fitted = self._fit_map(lin.rows(act), cloud, consts, act.ndim == 2)
        if isinstance(fitted, str):
            return PassResult.fail(model, fitted)
        detail = self._rewrite(work, fitted, cloud, consts, act)
        lin.drop_unused(work)
        flops = lin.flops_pair(model, work, self.scope, detail["edge_nodes"])
        if isinstance(flops, str):
            return PassResult.fail(model, flops)
        channels = act.shape[1]
        detail = {"cut": self.cut, "channels_in": channels, "channels_out": fitted.channels,
                  "explained_variance": _explained(lin.rows(act), fitted), "fit": self.fit, **detail}
        self.variant = Variant(self.name, fitted.channels / channels, work, flops[0], flops[1], detail,
                               {self.cut: detail["new_cut"]})
        return PassResult(work, True)

    def apply(self, model: onnx.ModelProto) -> Variant:
        """``run`` and return the :class:`Variant`; raises ``SplitcError`` with the reason when it does not apply."""
        result = self(model)
        if not result.modified:
            raise SplitcError(f"bottleneck at {self.cut!r} does not apply: {result.reason}")
        return self.variant

    def _calibration(self, model: onnx.ModelProto) -> tuple[np.ndarray, list[onnx.NodeProto]] | str:
        """The cut tensor's calibration activations and its consumers outside scope, or why not."""
        cut = self.cut
        if not any(cut in n.output for n in model.graph.node):
            return f"no node computes {cut!r}"
        if lin.captured_by_subgraph(model, cut):
            return f"{cut!r} is read inside a subgraph"
        cloud = [n for n in lin.readers(model, cut) if self.scope is None or n.name not in self.scope]
        if not cloud:
            return f"nothing outside the scope reads {cut!r}"
        try:
            act = np.asarray(self.activations.get([cut])[cut])
        except Exception as exc:  # noqa: BLE001 (onnxruntime's own errors)
            lines = str(exc).strip().splitlines()
            return f"cannot capture the calibration activations of {cut!r}: {lines[0] if lines else exc!r}"
        if act.dtype.kind != "f" or act.ndim < 2:
            return f"{cut!r} is {act.dtype} of rank {act.ndim}; a bottleneck needs a float (N, C, ...) tensor"
        if not np.all(np.isfinite(act)):
            return f"the calibration activations of {cut!r} are not finite"
        return act, cloud

    def _fit_map(self, xs: np.ndarray, cloud: list, consts: dict, rank2: bool) -> _Map | str:
        """The fitted projection, or why it cannot be fitted."""
        n, c = xs.shape
        d = self.channels if self.channels is not None else max(1, round(self.level * c))
        if d > c:
            return f"{d} channels asked of the {c} channels of {self.cut!r}"
        if n < c:
            return (f"{n} calibration rows (samples x positions) for the {c} channels of {self.cut!r}; "
                    f"the fit needs at least {c}")
        if self.fit == "pca":
            return _pca(xs, d)
        weights = [_channel_weight(node, self.cut, consts, rank2) for node in cloud]
        bad = [node.name for node, w in zip(cloud, weights) if w is None]
        if bad:
            return f"fit 'output' needs Gemm, MatMul or 1x1 Conv consumers with constant weights, not {bad}"
        try:
            return _output_fit(xs, d, np.hstack(weights), self.ridge)
        except np.linalg.LinAlgError:
            return f"the calibration covariance of {self.cut!r} is not positive definite"

    def _rewrite(self, model: onnx.ModelProto, fit: _Map, cloud: list, consts: dict, act: np.ndarray) -> dict:
        """Insert the projection, fold or restore for each cloud consumer; returns what was done."""
        cut, spatial, dtype = self.cut, act.ndim - 2, act.dtype
        z = lin.fresh_name(model, f"{cut}/bottleneck")
        project = _linear_node(model, cut, z, z, fit.project, -fit.mean @ fit.project, dtype, spatial)
        nodes = [_copy(n) for n in model.graph.node]
        cloud_names = {n.name for n in cloud}
        after = next(i for i, n in enumerate(nodes) if cut in n.output) + 1
        ordered, folded, restored, restore = nodes[:after] + [project], [], [], None
        for node in nodes[after:]:
            if node.name in cloud_names:
                new = _fold(model, node, cut, z, fit, consts, spatial == 0)
                if new is not None:
                    ordered.append(new)
                    folded.append(node.name)
                    continue
                if restore is None:
                    x_hat = lin.fresh_name(model, f"{cut}/restored")
                    restore = _linear_node(model, z, x_hat, x_hat, fit.restore, fit.mean, dtype, spatial)
                    ordered.append(restore)
                for k, name in enumerate(node.input):
                    if name == cut:
                        node.input[k] = restore.output[0]
                restored.append(node.name)
            ordered.append(node)
        del model.graph.node[:]
        model.graph.node.extend(ordered)
        return {"folded": folded, "restored": restored, "edge_nodes": [project.name],
                "cloud_nodes": [] if restore is None else [restore.name], "new_cut": z}


def _copy(node: onnx.NodeProto) -> onnx.NodeProto:
    copy = onnx.NodeProto()
    copy.CopyFrom(node)
    return copy
