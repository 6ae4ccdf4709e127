"""Structured channel pruning with least-squares reconstruction (He et al. 2017; ThiNet, Luo et al. 2017).

``ChannelPrune`` removes output channels of a convolution (the *producer*) and the matching input
channels of the node that reads them (the *consumer*), then refits the consumer so that its
pre-activation outputs match the unpruned model's on the calibration set. The channels kept are chosen
by ThiNet's greedy on the consumer's centred per-channel contributions; ``prune_fit`` says why. The chain
between them may hold, in any order, channel-wise nodes that are pruned with it:

    Conv -> [BatchNormalization | PRelu | Relu, LeakyRelu, Clip, HardSwish, ... | MaxPool, AveragePool,
             Global*Pool]* -> Conv   (or -> Flatten(axis=1) -> Gemm: channel c is its block of features)

BatchNormalization loses its c-th scale, bias, mean and variance; a per-channel PRelu slope loses its
c-th entry. ``level`` is the fraction of the producer's output channels kept (``round(level * C)``, at
least one); the producer's FLOPs and the consumer's scale with it. Every eligible producer in ``scope``
is pruned in graph order, and each consumer is refitted on the activations of the model pruned so far
against the *original* model's outputs, so that errors do not compound.

Not pruned, with the reason in ``detail["skipped"]``: a producer whose output channels are tied across
branches (an ``Add`` of a residual connection, where every conv feeding the sum would have to lose the
same channels; a ``Concat``, where the consumer's channel offsets would shift), a chain tensor that is a
graph output or feeds several nodes, grouped convolutions, shared or non-initializer weights, and a
consumer with fewer calibration rows than weights to fit (a Gemm has one row per sample). The consumer
may lie outside ``scope`` (on the cloud side): its weights change, and the tensor between the two,
which keeps its name, carries fewer channels. Graph inputs and outputs keep their names and shapes.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from splitc.compress import prune_fit as fit
from splitc.compress.base import Activations, Rewrite, Variant
from splitc.errors import SplitcError
from splitc.frontend import import_model, subgraph_captures
from splitc.frontend.build import name_nodes
from splitc.passes.base import PassResult, check_half

UNARY = frozenset({"Relu", "LeakyRelu", "Clip", "HardSwish", "HardSigmoid", "Sigmoid", "Tanh", "Elu", "Selu",
                   "Celu", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Gelu", "Identity", "Abs", "Neg"})
POOLS = frozenset({"MaxPool", "AveragePool", "LpPool", "GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"})
RESIDUAL = "output channels tied by Add across a residual branch"
CONCAT = "output channels concatenated with another branch's (Concat): the consumer's channel offsets would shift"


@dataclass
class Chain:
    """A producer Conv, the channel-wise nodes after it, an optional Flatten, and the consumer."""

    conv: onnx.NodeProto
    channelwise: list[onnx.NodeProto] = field(default_factory=list)
    flatten: onnx.NodeProto | None = None
    consumer: onnx.NodeProto | None = None

    @property
    def tensor(self) -> str:
        """The pruned tensor the consumer (or its Flatten) reads."""
        return (self.channelwise[-1] if self.channelwise else self.conv).output[0]

    @property
    def pruned_tensors(self) -> list[str]:
        """Every tensor that loses channels: the conv's output, those of the nodes after it, the Flatten's."""
        nodes = [self.conv, *self.channelwise, *([self.flatten] if self.flatten is not None else [])]
        return [n.output[0] for n in nodes]


class _Index:
    """Readers (subgraph captures included) and initializers of a model's main graph, by tensor name."""

    def __init__(self, model: onnx.ModelProto) -> None:
        graph = model.graph
        self.inits = {t.name: t for t in graph.initializer}
        self.users: dict[str, list[onnx.NodeProto]] = defaultdict(list)
        for node in graph.node:
            for name in dict.fromkeys([*(n for n in node.input if n), *subgraph_captures(node)]):
                self.users[name].append(node)
        self.outputs = {o.name for o in graph.output}

    def array(self, name: str) -> np.ndarray | None:
        tensor = self.inits.get(name)
        return None if tensor is None else numpy_helper.to_array(tensor)


def _attr(node: onnx.NodeProto, name: str, default):
    for a in node.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


def _conv_reason(node: onnx.NodeProto, index: _Index) -> str:
    weight = index.array(node.input[1]) if len(node.input) > 1 else None
    if _attr(node, "group", 1) != 1:
        return f"{node.name!r} is a grouped convolution"
    if weight is None or weight.dtype != np.float32:
        return f"{node.name!r} has no float32 initializer weights"
    return ""


def find_chain(conv: onnx.NodeProto, index: _Index) -> Chain | str:
    """The chain from ``conv`` to its consumer, or why ``conv`` cannot be pruned."""
    reason = _conv_reason(conv, index)
    if reason:
        return reason
    chain, tensor = Chain(conv), conv.output[0]
    while True:
        if tensor in index.outputs:
            return f"{tensor!r} is a graph output"
        users = index.users.get(tensor, [])
        if any(u.op_type in ("Add", "Sum") and any(n not in index.inits for n in u.input if n != tensor)
               for u in users):
            return RESIDUAL
        if any(u.op_type == "Concat" for u in users):
            return CONCAT
        if len(users) != 1:
            return f"{tensor!r} feeds {len(users)} nodes"
        user = users[0]
        if list(user.input).index(tensor) != 0:
            return f"{tensor!r} is not the data input of {user.name!r}"
        if user.op_type == "Conv":
            return _conv_reason(user, index) or _finish(chain, user)
        if user.op_type == "Flatten":
            return _flatten_consumer(chain, user, index)
        if user.op_type in UNARY | POOLS | {"BatchNormalization", "PRelu"}:
            if len([o for o in user.output if o]) != 1:
                return f"{user.name!r} has more than one output"
            if user.op_type == "PRelu" and not _per_channel_slope(user, conv, index):
                return f"{user.name!r} has a slope that is neither a scalar nor per channel"
            chain.channelwise.append(user)
            tensor = user.output[0]
            continue
        return f"its output reaches {user.op_type} {user.name!r}, which channel pruning does not map"


def _per_channel_slope(prelu: onnx.NodeProto, conv: onnx.NodeProto, index: _Index) -> bool:
    slope, weight = index.array(prelu.input[1]), index.array(conv.input[1])
    if slope is None:
        return False
    return slope.size == 1 or slope.shape == (weight.shape[0],) + (1,) * (weight.ndim - 2)


def _finish(chain: Chain, consumer: onnx.NodeProto) -> Chain:
    chain.consumer = consumer
    return chain


def _flatten_consumer(chain: Chain, flatten: onnx.NodeProto, index: _Index) -> Chain | str:
    if _attr(flatten, "axis", 1) != 1:
        return f"{flatten.name!r} flattens from axis {_attr(flatten, 'axis', 1)}, not 1"
    out = flatten.output[0]
    users = index.users.get(out, [])
    if out in index.outputs or len(users) != 1 or users[0].op_type != "Gemm":
        return f"{flatten.name!r} does not feed a single Gemm"
    gemm = users[0]
    weight = index.array(gemm.input[1])
    if gemm.input[0] != out or _attr(gemm, "transA", 0) or weight is None or weight.dtype != np.float32:
        return f"{gemm.name!r} is not a Gemm on the flattened features with float32 initializer weights"
    chain.flatten = flatten
    return _finish(chain, gemm)


def _owned(chain: Chain, index: _Index) -> str:
    """Why the chain's weights cannot be rewritten in place (shared or not initializers), or ''."""
    names = [*chain.conv.input[1:], *chain.consumer.input[1:]]
    for node in chain.channelwise:
        names += [n for n in node.input[1:] if node.op_type in ("BatchNormalization", "PRelu")]
    for name in filter(None, names):
        if name not in index.inits:
            return f"{name!r} is not an initializer"
        if len(index.users[name]) != 1 or sum(1 for n in index.users[name][0].input if n == name) != 1:
            return f"weights {name!r} are shared with another node"
    return ""


def _topological_convs(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == "Conv"]


@dataclass
class _View:
    """The consumer as ``y = sum P * W + b`` (see ``prune_fit``), on sampled rows."""

    patches: np.ndarray  # (R, C, K), the current (pruned so far) model's input to the consumer
    targets: np.ndarray  # (R, O), the original model's consumer outputs
    weights: np.ndarray  # (O, C, K)
    bias: np.ndarray  # (O,)


def _conv_view(chain: Chain, index: _Index, x: np.ndarray, y: np.ndarray) -> _View | str:
    consumer = chain.consumer
    weight = index.array(consumer.input[1])
    if weight.shape[1] != x.shape[1]:
        return f"{consumer.name!r} reads {weight.shape[1]} channels, not {x.shape[1]}"
    out, kernel = weight.shape[0], tuple(weight.shape[2:])
    bias = index.array(consumer.input[2]) if len(consumer.input) > 2 and consumer.input[2] else np.zeros(out)
    geometry = fit.conv_geometry(consumer, kernel, x.shape[2:], y.shape[2:])
    k = int(np.prod(kernel))
    rows = fit.sample_rows(y.shape[0] * int(np.prod(y.shape[2:])), x.shape[1] * k + 1)
    patches = fit.conv_patches(x, geometry, tuple(y.shape[2:]), rows)
    return _View(patches, fit.conv_targets(y, rows), weight.reshape(out, x.shape[1], k), bias)


def _gemm_view(chain: Chain, index: _Index, x: np.ndarray, y: np.ndarray) -> _View | str:
    gemm = chain.consumer
    b = index.array(gemm.input[1])
    b = b if _attr(gemm, "transB", 0) else b.T  # (O, features)
    out, features = b.shape
    channels, block = x.shape[1], int(np.prod(x.shape[2:]))
    if features != channels * block:
        return f"{gemm.name!r} reads {features} features, not {channels} x {block}"
    c = index.array(gemm.input[2]) if len(gemm.input) > 2 and gemm.input[2] else np.zeros(1, np.float32)
    if c.size not in (1, out):
        return f"{gemm.name!r} has a bias of shape {c.shape}, not one value per output"
    bias = np.broadcast_to(_attr(gemm, "beta", 1.0) * c.reshape(-1), (out,)).astype(np.float64)
    weights = _attr(gemm, "alpha", 1.0) * b.reshape(out, channels, block)
    return _View(x.reshape(len(x), channels, block), y.reshape(len(y), out), weights, bias)


def _set(index: _Index, name: str, array: np.ndarray) -> None:
    index.inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))


def _set_bias(model: onnx.ModelProto, index: _Index, node: onnx.NodeProto, bias: np.ndarray) -> None:
    if len(node.input) > 2 and node.input[2]:
        _set(index, node.input[2], bias)
        return
    taken = {t.name for t in model.graph.initializer} | {o for n in model.graph.node for o in n.output}
    name = f"{node.name or node.output[0]}/bias"
    while name in taken:
        name += "_"
    model.graph.initializer.append(numpy_helper.from_array(bias.astype(np.float32), name))
    index.inits[name] = model.graph.initializer[-1]
    del node.input[2:]
    node.input.append(name)


def _write(model: onnx.ModelProto, index: _Index, chain: Chain, kept: np.ndarray,
           weights: np.ndarray, bias: np.ndarray) -> None:
    """Drop the removed channels along the chain and put the consumer's new weights and bias in place."""
    for name in filter(None, chain.conv.input[1:3]):
        _set(index, name, index.array(name)[kept])
    for node in chain.channelwise:
        sliced = node.input[1:5] if node.op_type == "BatchNormalization" else node.input[1:2]
        for name in sliced if node.op_type in ("BatchNormalization", "PRelu") else ():
            value = index.array(name)
            if value.size > 1:
                _set(index, name, value[kept])
    consumer = chain.consumer
    if consumer.op_type == "Conv":
        shape = index.array(consumer.input[1]).shape
        _set(index, consumer.input[1], weights.reshape(shape[0], len(kept), *shape[2:]))
    else:
        flat = weights.reshape(len(weights), -1)
        _set(index, consumer.input[1], flat if _attr(consumer, "transB", 0) else flat.T)
        kept_attrs = [a for a in consumer.attribute if a.name not in ("alpha", "beta")]
        del consumer.attribute[:]
        consumer.attribute.extend(kept_attrs)  # alpha and beta are folded into the weights and bias
    _set_bias(model, index, consumer, bias)
    pruned = set(chain.pruned_tensors)
    infos = [v for v in model.graph.value_info if v.name not in pruned]
    del model.graph.value_info[:]
    model.graph.value_info.extend(infos)


class ChannelPrune(Rewrite):
    """Prune every eligible conv in ``scope`` to ``level`` of its output channels, refitting each consumer.

    ``refit=False`` keeps the consumer's weights on the kept channels and only moves the removed
    channels' mean contribution into its bias (the baseline the refit improves on). ``ridge`` is the
    relative ridge of the least-squares refit. After ``run``, ``detail`` holds ``level``, ``layers``
    (per pruned conv: its consumer, the pruned tensor, channels before and kept, the kept channel
    indices, the rows fitted, and the consumer's relative output error with and without refit) and
    ``skipped`` (conv name -> reason).
    """

    name = "prune"

    def __init__(self, activations: Activations, scope: Iterable[str] | None = None, level: float = 0.5,
                 refit: bool = True, ridge: float = 1e-6) -> None:
        super().__init__(activations, scope, level)
        if not 0.0 < self.level <= 1.0:
            raise SplitcError(f"the channel-pruning level is the fraction of channels kept, in (0, 1], not {level}")
        self.refit = refit
        self.ridge = float(ridge)
        self.detail: dict = {}

    def run(self, model: onnx.ModelProto) -> PassResult:
        """Prune a copy of ``model``; fails with the reasons when no conv in scope could be pruned."""
        if not len(self.activations):
            return PassResult.fail(model, "no calibration samples to select channels and refit on")
        work = _copy(model)
        name_nodes(work)  # unnamed nodes get the names the partitioner's scope uses
        index, plan, skipped = _Index(work), [], {}
        for conv in _topological_convs(work):
            if not self.in_scope(conv):
                continue
            chain = find_chain(conv, index)
            reason = chain if isinstance(chain, str) else _owned(chain, index)
            if reason:
                skipped[conv.name] = reason
            else:
                plan.append(conv.name)
        layers = []
        for name in plan:
            current = self.activations if not layers else Activations(_copy(work), self.activations.samples)
            try:
                layers.append(self._layer(work, name, current))
            except fit.FitError as exc:
                skipped[name] = str(exc)
        self.detail = {"level": self.level, "refit": self.refit, "layers": layers, "skipped": skipped}
        if not layers:
            why = "; ".join(f"{conv}: {reason}" for conv, reason in skipped.items()) or "no Conv in scope"
            return PassResult.fail(model, f"no convolution could be pruned ({why})")
        return PassResult(_with_shapes(work), True)

    def ensures(self, model: onnx.ModelProto) -> None:
        """The pruned model passes the full ONNX check."""
        check_half(model)

    def _layer(self, model: onnx.ModelProto, conv_name: str, current: Activations) -> dict:
        index = _Index(model)
        conv = next(n for n in model.graph.node if n.name == conv_name)
        chain = find_chain(conv, index)
        if isinstance(chain, str):  # an earlier layer's rewrite changed this chain
            raise fit.FitError(chain)
        consumer = chain.consumer
        x = current.get([chain.tensor])[chain.tensor]
        y = self.activations.get([consumer.output[0]])[consumer.output[0]]
        view = (_conv_view if consumer.op_type == "Conv" else _gemm_view)(chain, index, x, y)
        if isinstance(view, str):
            raise fit.FitError(view)
        channels = view.weights.shape[1]
        keep = max(1, min(channels, round(self.level * channels)))
        kept = fit.select_channels(view.patches, view.weights, keep)
        weights, bias, prune_error = fit.bias_corrected(view.patches, view.weights, view.bias, kept, view.targets)
        refit_error = None
        if self.refit:
            try:
                weights, bias, refit_error = fit.refit(view.patches[:, kept], view.targets, self.ridge)
            except fit.FitError as exc:
                raise fit.FitError(f"cannot refit {consumer.name!r}: {exc}; give more calibration samples") from exc
        _write(model, index, chain, kept, weights, bias)
        return {"conv": conv_name, "consumer": consumer.name, "tensor": chain.tensor, "channels": channels,
                "kept": len(kept), "kept_channels": [int(c) for c in kept], "rows": len(view.patches),
                "prune_error": prune_error, "refit_error": refit_error}


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy


def _with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with value_info inferred again for the pruned tensors (as it is when inference fails)."""
    try:
        return onnx.shape_inference.infer_shapes(model)
    except onnx.shape_inference.InferenceError:
        return model


def scope_flops(model: onnx.ModelProto, scope: Iterable[str] | None = None) -> float:
    """FLOPs of the nodes in ``scope`` (every node when None), counted on the frontend's IR.

    NaN when the frontend cannot count them (a shape it cannot make static).
    """
    names = None if scope is None else set(scope)
    try:
        graph = import_model(model)
    except SplitcError:
        return float("nan")
    return float(sum(n.flops for n in graph.nodes if names is None or n.name in names))


def variants(model: onnx.ModelProto, activations: Activations, scope: Iterable[str] | None = None,
             levels: Sequence[float] = (0.25, 0.5, 0.75), refit: bool = True) -> list[Variant]:
    """One ``Variant`` per level at which some conv in ``scope`` could be pruned (``ChannelPrune``).

    ``activations`` must be of ``model``. A level at which nothing applies gives no variant.
    """
    scope = None if scope is None else frozenset(scope)
    before = scope_flops(model, scope)
    found = []
    for level in levels:
        rewrite = ChannelPrune(activations, scope, level, refit=refit)
        result = rewrite(model)
        if result.modified:
            found.append(Variant("prune", float(level), result.model, before, scope_flops(result.model, scope),
                                 detail=rewrite.detail))
    return found
