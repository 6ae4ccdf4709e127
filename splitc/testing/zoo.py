"""Reference model zoo: small but real ONNX architectures for tests and benchmarks.

Every model is built directly with :mod:`onnx.helper` and seeded numpy weights
(He-normal), so activations are non-trivial yet fully reproducible.  Each model
uses fully static input/output shapes, unique readable node names (the output
tensor of a node is named like the node, e.g. ``stage1/conv``), passes
``onnx.checker.check_model(m, full_check=True)`` and runs in onnxruntime.

Besides the named models in :data:`MODELS` there is :func:`layered_dag`, a
synthetic generator of large (1k-100k node) block-structured graphs used by the
partitioner benchmarks.
"""

# Over 400 lines on purpose: a catalogue of small independent model builders behind one registry;
# split by family, the registry and its tests would have to chase them across files.

from __future__ import annotations

import math
import pathlib
import random
from typing import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

__all__ = ["MODELS", "build", "save_all", "random_inputs", "layered_dag"]

IR_VERSION = 8  # accepted by onnxruntime >= 1.10, valid for opsets 7..17
FLOAT = TensorProto.FLOAT


# --------------------------------------------------------------------------
# tiny graph builder
# --------------------------------------------------------------------------
class _Builder:
    """Accumulates nodes/initializers and hands out unique, readable names.

    With ``constant_weights=True`` every weight becomes a ``Constant`` node
    instead of an initializer.  ``opset`` selects op forms where they differ
    (BatchNormalization / Flatten at opset 7).
    """

    def __init__(self, seed: int = 0, opset: int = 13, constant_weights: bool = False,
                 names: set[str] | None = None, rng: np.random.Generator | None = None):
        self.rng = rng if rng is not None else np.random.default_rng(seed)
        self.opset = opset
        self.constant_weights = constant_weights
        self.names: set[str] = names if names is not None else set()
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []

    # -- naming / graph I/O ------------------------------------------------
    def fresh(self, name: str) -> str:
        """Return ``name`` (or ``name_<k>``) not used before, and reserve it."""
        cand, k = name, 1
        while cand in self.names:
            cand, k = f"{name}_{k}", k + 1
        self.names.add(cand)
        return cand

    def child(self) -> "_Builder":
        """A builder for a subgraph sharing this builder's name space and rng."""
        return _Builder(opset=self.opset, constant_weights=self.constant_weights,
                        names=self.names, rng=self.rng)

    def input(self, name: str, shape: Sequence[int], dtype: int = FLOAT) -> str:
        self.names.add(name)
        self.inputs.append(helper.make_tensor_value_info(name, dtype, list(shape)))
        return name

    def output(self, tensor: str, shape: Sequence[int], dtype: int = FLOAT) -> str:
        self.outputs.append(helper.make_tensor_value_info(tensor, dtype, list(shape)))
        return tensor

    # -- tensors ---------------------------------------------------------------
    def tensor(self, name: str, array: np.ndarray) -> str:
        """Register a constant tensor (initializer or Constant node)."""
        name = self.fresh(name)
        proto = numpy_helper.from_array(np.asarray(array), name)
        if self.constant_weights:
            self.nodes.append(helper.make_node("Constant", [], [name], name=name, value=proto))
        else:
            self.initializers.append(proto)
        return name

    def he(self, name: str, shape: Sequence[int], fan_in: int) -> str:
        w = self.rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)
        return self.tensor(name, w.astype(np.float32))

    def small(self, name: str, shape: Sequence[int], scale: float = 0.1, offset: float = 0.0) -> str:
        w = offset + scale * self.rng.standard_normal(shape)
        return self.tensor(name, w.astype(np.float32))

    def scalar(self, name: str, value: float) -> str:
        return self.tensor(name, np.array(value, dtype=np.float32))

    def ints(self, name: str, values: Sequence[int]) -> str:
        return self.tensor(name, np.array(values, dtype=np.int64))

    # -- nodes -----------------------------------------------------------------
    def op(self, op_type: str, inputs: Sequence[str], name: str, out: str | None = None,
           **attrs) -> str:
        """Add a single-output node; its output tensor is named like the node."""
        node_name = self.fresh(name)
        if out is not None and out != node_name:
            self.names.add(out)
        output = out or node_name
        self.nodes.append(helper.make_node(op_type, list(inputs), [output], name=node_name, **attrs))
        return output

    def conv(self, x: str, cin: int, cout: int, k: int, name: str, stride: int = 1,
             pad: int | None = None, bias: bool = True) -> str:
        pad = k // 2 if pad is None else pad
        ins = [x, self.he(f"{name}/W", [cout, cin, k, k], cin * k * k)]
        if bias:
            ins.append(self.small(f"{name}/B", [cout]))
        return self.op("Conv", ins, name, kernel_shape=[k, k], strides=[stride, stride],
                       pads=[pad] * 4)

    def bn(self, x: str, c: int, name: str) -> str:
        ins = [x, self.small(f"{name}/scale", [c], 0.1, 1.0), self.small(f"{name}/B", [c]),
               self.small(f"{name}/mean", [c]),
               self.tensor(f"{name}/var", self.rng.uniform(0.5, 1.5, c).astype(np.float32))]
        return self.op("BatchNormalization", ins, name, epsilon=1e-5)

    def relu(self, x: str, name: str) -> str:
        return self.op("Relu", [x], name)

    def maxpool(self, x: str, name: str, k: int = 2, stride: int = 2, pad: int = 0) -> str:
        return self.op("MaxPool", [x], name, kernel_shape=[k, k], strides=[stride, stride],
                       pads=[pad] * 4)

    def conv_bn_relu(self, x: str, cin: int, cout: int, k: int, prefix: str, stride: int = 1) -> str:
        y = self.conv(x, cin, cout, k, f"{prefix}/conv", stride=stride, bias=False)
        return self.relu(self.bn(y, cout, f"{prefix}/bn"), f"{prefix}/relu")

    def conv_relu(self, x: str, cin: int, cout: int, k: int, prefix: str) -> str:
        return self.relu(self.conv(x, cin, cout, k, f"{prefix}/conv"), f"{prefix}/relu")

    def gemm(self, x: str, fin: int, fout: int, name: str, out: str | None = None) -> str:
        w = self.he(f"{name}/W", [fout, fin], fin)
        return self.op("Gemm", [x, w, self.small(f"{name}/B", [fout])], name, out=out, transB=1)

    def head(self, x: str, c: int, classes: int, prefix: str = "head",
             out: str | None = "logits") -> str:
        """GlobalAveragePool -> Flatten -> Gemm classifier."""
        y = self.op("GlobalAveragePool", [x], f"{prefix}/gap")
        y = self.op("Flatten", [y], f"{prefix}/flatten", axis=1)
        return self.gemm(y, c, classes, f"{prefix}/fc", out=out)

    def matmul_bias(self, x: str, fin: int, fout: int, name: str) -> str:
        y = self.op("MatMul", [x, self.he(f"{name}/W", [fin, fout], fin)], f"{name}/matmul")
        return self.op("Add", [y, self.small(f"{name}/B", [fout])], f"{name}/bias")

    # -- finishing -------------------------------------------------------------
    def graph(self, name: str) -> onnx.GraphProto:
        return helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.initializers)

    def model(self, name: str) -> onnx.ModelProto:
        m = helper.make_model(self.graph(name), producer_name="splitc.testing.zoo",
                              opset_imports=[helper.make_opsetid("", self.opset)])
        m.ir_version = IR_VERSION
        # Populate value_info for intermediates (also validates declared shapes).
        return onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)


# --------------------------------------------------------------------------
# model builders
# --------------------------------------------------------------------------
def chain_cnn() -> onnx.ModelProto:
    """Plain chain CNN: 3x (Conv-Relu-MaxPool), Flatten, Gemm, Softmax.

    ``input`` [1,3,32,32] -> ``probs`` [1,10].
    """
    b = _Builder(seed=1)
    x = b.input("input", [1, 3, 32, 32])
    for i, (cin, cout) in enumerate([(3, 16), (16, 32), (32, 32)], start=1):
        x = b.maxpool(b.conv_relu(x, cin, cout, 3, f"stage{i}"), f"stage{i}/pool")
    x = b.op("Flatten", [x], "head/flatten", axis=1)  # 32*4*4
    x = b.gemm(x, 32 * 4 * 4, 10, "head/fc")
    b.output(b.op("Softmax", [x], "head/softmax", out="probs", axis=1), [1, 10])
    return b.model("chain_cnn")


def _res_block(b: _Builder, x: str, cin: int, cout: int, stride: int, prefix: str) -> str:
    y = b.conv_bn_relu(x, cin, cout, 3, f"{prefix}/a", stride=stride)
    y = b.bn(b.conv(y, cout, cout, 3, f"{prefix}/b/conv", bias=False), cout, f"{prefix}/b/bn")
    if stride != 1 or cin != cout:
        x = b.conv(x, cin, cout, 1, f"{prefix}/proj/conv", stride=stride, bias=False)
        x = b.bn(x, cout, f"{prefix}/proj/bn")
    return b.relu(b.op("Add", [y, x], f"{prefix}/add"), f"{prefix}/relu")


def resnet_blocks() -> onnx.ModelProto:
    """Stem conv + 3 residual blocks (block2 has a strided 1x1 projection shortcut).

    ``input`` [1,3,32,32] -> ``logits`` [1,10].
    """
    b = _Builder(seed=2)
    x = b.conv_bn_relu(b.input("input", [1, 3, 32, 32]), 3, 16, 3, "stem")
    x = _res_block(b, x, 16, 16, 1, "block1")
    x = _res_block(b, x, 16, 32, 2, "block2")
    x = _res_block(b, x, 32, 32, 1, "block3")
    b.output(b.head(x, 32, 10), [1, 10])
    return b.model("resnet_blocks")


def _inception_block(b: _Builder, x: str, cin: int, prefix: str) -> str:
    b1 = b.conv_relu(x, cin, 8, 1, f"{prefix}/b1x1")
    b2 = b.conv_relu(b.conv_relu(x, cin, 8, 1, f"{prefix}/b3x3_reduce"), 8, 8, 3, f"{prefix}/b3x3")
    b3 = b.conv_relu(b.conv_relu(x, cin, 4, 1, f"{prefix}/b5x5_reduce"), 4, 8, 5, f"{prefix}/b5x5")
    b4 = b.maxpool(x, f"{prefix}/bpool/pool", k=3, stride=1, pad=1)
    b4 = b.conv_relu(b4, cin, 8, 1, f"{prefix}/bpool")
    return b.op("Concat", [b1, b2, b3, b4], f"{prefix}/concat", axis=1)  # 32 channels


def inception_blocks() -> onnx.ModelProto:
    """Stem + 2 Inception blocks (1x1 | 1x1->3x3 | 1x1->5x5 | pool->1x1, Concat) + head.

    ``input`` [1,3,32,32] -> ``logits`` [1,10].
    """
    b = _Builder(seed=3)
    x = b.conv_relu(b.input("input", [1, 3, 32, 32]), 3, 16, 3, "stem")
    x = b.maxpool(x, "stem/pool")  # 16x16x16
    x = _inception_block(b, x, 16, "inc1")
    x = _inception_block(b, x, 32, "inc2")
    b.output(b.head(x, 32, 10), [1, 10])
    return b.model("inception_blocks")


def _dense_block(b: _Builder, x: str, cin: int, prefix: str, layers: int = 4,
                 growth: int = 8) -> tuple[str, int]:
    feats, c = [x], cin
    for i in range(1, layers + 1):
        inp = feats[0] if len(feats) == 1 else b.op("Concat", feats, f"{prefix}/l{i}/concat", axis=1)
        y = b.relu(b.bn(inp, c, f"{prefix}/l{i}/bn"), f"{prefix}/l{i}/relu")
        feats.append(b.conv(y, c, growth, 3, f"{prefix}/l{i}/conv", bias=False))
        c += growth
    return b.op("Concat", feats, f"{prefix}/concat", axis=1), c


def dense_blocks() -> onnx.ModelProto:
    """DenseNet-style: dense block (4 layers, growth 8), transition, dense block, head.

    ``input`` [1,3,32,32] -> ``logits`` [1,10].
    """
    b = _Builder(seed=4)
    x = b.conv(b.input("input", [1, 3, 32, 32]), 3, 16, 3, "stem/conv")
    x, c = _dense_block(b, x, 16, "dense1")  # 48 channels
    x = b.relu(b.bn(x, c, "trans/bn"), "trans/relu")
    x = b.conv(x, c, c // 2, 1, "trans/conv", bias=False)
    x = b.op("AveragePool", [x], "trans/pool", kernel_shape=[2, 2], strides=[2, 2])
    x, c = _dense_block(b, x, c // 2, "dense2")  # 56 channels
    x = b.relu(b.bn(x, c, "head/bn"), "head/relu")
    b.output(b.head(x, c, 10), [1, 10])
    return b.model("dense_blocks")


def two_in_two_out() -> onnx.ModelProto:
    """Two inputs, two outputs: early ``aux`` head and a final ``logits`` fusing ``meta``.

    ``image`` [1,3,32,32], ``meta`` [1,8] -> ``aux`` [1,4], ``logits`` [1,10].
    """
    b = _Builder(seed=5)
    img = b.input("image", [1, 3, 32, 32])
    meta = b.input("meta", [1, 8])
    x = b.maxpool(b.conv_relu(img, 3, 16, 3, "stage1"), "stage1/pool")  # 16x16x16
    b.output(b.head(x, 16, 4, prefix="aux", out="aux"), [1, 4])
    x = b.maxpool(b.conv_relu(x, 16, 32, 3, "stage2"), "stage2/pool")  # 32x8x8
    x = b.op("Flatten", [b.op("GlobalAveragePool", [x], "trunk/gap")], "trunk/flatten", axis=1)
    m = b.relu(b.gemm(meta, 8, 16, "meta/fc"), "meta/relu")
    x = b.op("Concat", [x, m], "fuse/concat", axis=1)  # [1,48]
    b.output(b.gemm(x, 48, 10, "fuse/fc", out="logits"), [1, 10])
    return b.model("two_in_two_out")


def transformer_block() -> onnx.ModelProto:
    """One pre-LN transformer encoder block (4 heads, d=64, MLP 256, erf-GELU), opset 17.

    ``tokens`` [1,16,64] -> ``output`` [1,16,64].
    """
    seq, d, heads, hidden = 16, 64, 4, 256
    dh = d // heads
    b = _Builder(seed=6, opset=17)
    x = b.input("tokens", [1, seq, d])

    def layer_norm(t: str, name: str) -> str:
        return b.op("LayerNormalization", [t, b.small(f"{name}/gamma", [d], 0.1, 1.0),
                                           b.small(f"{name}/beta", [d])],
                    name, axis=-1, epsilon=1e-5)

    h = layer_norm(x, "attn/ln")
    split_shape = b.ints("attn/split_shape", [1, seq, heads, dh])
    proj = {}
    for p, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        t = b.matmul_bias(h, d, d, f"attn/{p}")
        t = b.op("Reshape", [t, split_shape], f"attn/{p}/reshape")
        proj[p] = b.op("Transpose", [t], f"attn/{p}/transpose", perm=perm)
    s = b.op("MatMul", [proj["q"], proj["k"]], "attn/scores")
    s = b.op("Div", [s, b.scalar("attn/scale", math.sqrt(dh))], "attn/scaled")
    s = b.op("Softmax", [s], "attn/softmax", axis=-1)
    ctx = b.op("MatMul", [s, proj["v"]], "attn/context")
    ctx = b.op("Transpose", [ctx], "attn/context/transpose", perm=[0, 2, 1, 3])
    ctx = b.op("Reshape", [ctx, b.ints("attn/merge_shape", [1, seq, d])], "attn/context/reshape")
    x = b.op("Add", [x, b.matmul_bias(ctx, d, d, "attn/out")], "attn/residual")

    h = b.matmul_bias(layer_norm(x, "mlp/ln"), d, hidden, "mlp/fc1")
    g = b.op("Erf", [b.op("Div", [h, b.scalar("mlp/gelu/sqrt2", math.sqrt(2.0))], "mlp/gelu/div")],
             "mlp/gelu/erf")
    g = b.op("Add", [g, b.scalar("mlp/gelu/one", 1.0)], "mlp/gelu/add")
    g = b.op("Mul", [b.op("Mul", [h, g], "mlp/gelu/mul"), b.scalar("mlp/gelu/half", 0.5)],
             "mlp/gelu/half_mul")
    h = b.matmul_bias(g, hidden, d, "mlp/fc2")
    b.output(b.op("Add", [x, h], "mlp/residual", out="output"), [1, seq, d])
    return b.model("transformer_block")


def constant_weights() -> onnx.ModelProto:
    """Small CNN whose weights are all ``Constant`` nodes (no initializers).

    ``input`` [1,3,32,32] -> ``logits`` [1,10].
    """
    b = _Builder(seed=7, constant_weights=True)
    x = b.input("input", [1, 3, 32, 32])
    x = b.maxpool(b.conv_relu(x, 3, 8, 3, "stage1"), "stage1/pool")
    x = b.maxpool(b.conv_relu(x, 8, 16, 3, "stage2"), "stage2/pool")
    b.output(b.head(x, 16, 10), [1, 10])
    return b.model("constant_weights")


def control_flow() -> onnx.ModelProto:
    """Conv, then an ``If`` (cond = ReduceMean(conv) > 0) whose branches capture the
    outer-scope conv output (then: Relu, else: x*Sigmoid(x)), then more layers.

    ``input`` [1,3,32,32] -> ``logits`` [1,10].
    """
    b = _Builder(seed=8)
    x = b.conv(b.input("input", [1, 3, 32, 32]), 3, 8, 3, "stem/conv")
    mean = b.op("ReduceMean", [x], "gate/mean", keepdims=0)
    cond = b.op("Greater", [mean, b.scalar("gate/zero", 0.0)], "gate/cond")

    then_b = b.child()
    then_b.output(then_b.relu(x, "if/then/relu"), [1, 8, 32, 32])
    else_b = b.child()
    sig = else_b.op("Sigmoid", [x], "if/else/sigmoid")
    else_b.output(else_b.op("Mul", [x, sig], "if/else/silu"), [1, 8, 32, 32])
    y = b.op("If", [cond], "if", then_branch=then_b.graph("then_branch"),
             else_branch=else_b.graph("else_branch"))

    y = b.conv_relu(y, 8, 16, 3, "stage2")
    y = b.maxpool(y, "stage2/pool")
    b.output(b.head(y, 16, 10), [1, 10])
    return b.model("control_flow")


def opset7_cnn() -> onnx.ModelProto:
    """Small CNN at opset 7 (Conv, BatchNormalization-7, Relu, MaxPool, Add, Reshape, Gemm).

    ``input`` [1,3,32,32] -> ``logits`` [1,10].
    """
    b = _Builder(seed=9, opset=7)
    x = b.input("input", [1, 3, 32, 32])
    x = b.maxpool(b.conv_bn_relu(x, 3, 8, 3, "stage1"), "stage1/pool")  # 8x16x16
    main = b.conv(b.relu(b.conv(x, 8, 16, 3, "stage2/a/conv"), "stage2/a/relu"), 16, 16, 3,
                  "stage2/b/conv")
    skip = b.conv(x, 8, 16, 1, "stage2/skip/conv")
    x = b.relu(b.op("Add", [main, skip], "stage2/add"), "stage2/relu")
    x = b.maxpool(x, "stage2/pool")  # 16x8x8
    x = b.op("Reshape", [x, b.ints("head/shape", [1, 16 * 8 * 8])], "head/reshape")
    b.output(b.gemm(x, 16 * 8 * 8, 10, "head/fc", out="logits"), [1, 10])
    return b.model("opset7_cnn")


MODELS: dict[str, Callable[[], onnx.ModelProto]] = {
    "chain_cnn": chain_cnn,
    "resnet_blocks": resnet_blocks,
    "inception_blocks": inception_blocks,
    "dense_blocks": dense_blocks,
    "two_in_two_out": two_in_two_out,
    "transformer_block": transformer_block,
    "constant_weights": constant_weights,
    "control_flow": control_flow,
    "opset7_cnn": opset7_cnn,
}


def build(name: str) -> onnx.ModelProto:
    """Build the zoo model called ``name`` (see :data:`MODELS`)."""
    try:
        return MODELS[name]()
    except KeyError:
        raise KeyError(f"unknown zoo model {name!r}; choose from {sorted(MODELS)}") from None


def save_all(directory: str | pathlib.Path) -> dict[str, pathlib.Path]:
    """Write every zoo model to ``<directory>/<name>.onnx``; return name -> path."""
    out = pathlib.Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, builder in MODELS.items():
        paths[name] = out / f"{name}.onnx"
        onnx.save(builder(), str(paths[name]))
    return paths


def random_inputs(model: onnx.ModelProto, seed: int = 0) -> dict[str, np.ndarray]:
    """Standard-normal feeds (in each input's dtype) for every real graph input (initializers skipped).

    Unknown/symbolic dimensions are filled with 1.
    """
    rng = np.random.default_rng(seed)
    inits = {t.name for t in model.graph.initializer}
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                for d in vi.type.tensor_type.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
        feeds[vi.name] = rng.standard_normal(dims).astype(dtype)
    return feeds


# --------------------------------------------------------------------------
# synthetic large graphs
# --------------------------------------------------------------------------
_DAG_C, _DAG_HW, _DAG_POOL = 16, 8, 8


class _DagGen:
    """State for :func:`layered_dag`: node list, shared initializers, rng."""

    def __init__(self, width: int, seed: int):
        self.rng = random.Random(seed)
        self.width = max(2, width)
        self.nodes: list[onnx.NodeProto] = []
        self.inits = self._shared_weights(np.random.default_rng(seed))

    def _shared_weights(self, rng: np.random.Generator) -> list[onnx.TensorProto]:
        c = _DAG_C
        arrays = {"shared/conv3x3/W": rng.standard_normal((c, c, 3, 3)) / math.sqrt(9 * c),
                  "shared/conv3x3/B": 0.05 * rng.standard_normal(c)}
        for i in range(_DAG_POOL):
            arrays[f"shared/scale{i}"] = rng.uniform(0.8, 1.2, (1, c, 1, 1))
            arrays[f"shared/bias{i}"] = 0.1 * rng.standard_normal((1, c, 1, 1))
        for nb in range(2, self.width + 1):
            arrays[f"shared/merge{nb}/W"] = rng.standard_normal((c, nb * c, 1, 1)) / math.sqrt(nb * c)
            arrays[f"shared/mean{nb}"] = np.array(1.0 / nb)
        return [numpy_helper.from_array(np.asarray(a, dtype=np.float32), n) for n, a in arrays.items()]

    def node(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [name], name=name, **attrs))
        return name

    def cheap_op(self, x: str, name: str) -> str:
        r = self.rng.random()
        if r < 0.08:
            return self.node("Conv", [x, "shared/conv3x3/W", "shared/conv3x3/B"], name,
                             kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        if r < 0.3:
            return self.node("Relu", [x], name)
        if r < 0.5:
            return self.node("Sigmoid", [x], name)
        if r < 0.75:
            return self.node("Add", [x, f"shared/bias{self.rng.randrange(_DAG_POOL)}"], name)
        return self.node("Mul", [x, f"shared/scale{self.rng.randrange(_DAG_POOL)}"], name)

    def block(self, x: str, prefix: str) -> str:
        """2..width parallel branches (with cross edges) that merge into one tensor."""
        nb = self.rng.randint(2, self.width)
        heads: list[str] = []
        for j in range(nb):
            t = x
            for k in range(self.rng.randint(1, 3)):
                t = self.cheap_op(t, f"{prefix}/br{j}/op{k}")
            if heads and self.rng.random() < 0.3:  # cross edge from a sibling branch
                t = self.node("Add", [t, self.rng.choice(heads)], f"{prefix}/br{j}/cross")
            heads.append(t)
        if self.rng.random() < 0.7:
            acc = heads[0]
            for j, h in enumerate(heads[1:], start=1):
                acc = self.node("Add", [acc, h], f"{prefix}/merge/add{j}")
            return self.node("Mul", [acc, f"shared/mean{nb}"], f"{prefix}/merge/mean")
        cat = self.node("Concat", heads, f"{prefix}/merge/concat", axis=1)
        return self.node("Conv", [cat, f"shared/merge{nb}/W"], f"{prefix}/merge/conv",
                         kernel_shape=[1, 1])


def layered_dag(num_nodes: int, width: int = 4, seed: int = 0) -> onnx.ModelProto:
    """Synthetic block-chain network with roughly ``num_nodes`` nodes (opset 13).

    A chain of blocks; each block is a small random DAG of 2..``width`` parallel
    branches of cheap ops (Add/Mul/Relu/Sigmoid, occasional shared-weight 3x3
    Conv) on a [1,16,8,8] tensor, merged by an Add-tree (+ mean scaling) or
    Concat + 1x1 Conv.  Blocks are joined by single tensors (cheap cut points)
    while several tensors cross inside a block.  Weights are shared, so the
    file stays small.  ``input`` [1,16,8,8] -> ``output`` [1,16,8,8].
    """
    gen = _DagGen(width, seed)
    shape = [1, _DAG_C, _DAG_HW, _DAG_HW]
    x, i = "input", 0
    while len(gen.nodes) < num_nodes - 1:
        x = gen.block(x, f"block{i}")
        i += 1
    gen.node("Identity", [x], "output")
    graph = helper.make_graph(gen.nodes, f"layered_dag_{num_nodes}",
                              [helper.make_tensor_value_info("input", FLOAT, shape)],
                              [helper.make_tensor_value_info("output", FLOAT, shape)],
                              gen.inits)
    model = helper.make_model(graph, producer_name="splitc.testing.zoo",
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = IR_VERSION
    return model
