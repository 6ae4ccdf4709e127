"""The scheduling benchmark's workloads: VGG-16-, ResNet-50- and LeNet-shaped ONNX models, and their
per-tier costs from splitc's cost model (the paper's VGG / DeepFace / LeNet).

The VGG-16 and ResNet-50 layouts are those of ``bench/e2e.py`` (seeded random weights; a global-pool
classifier replaces VGG's fully-connected layers); LeNet is LeNet-5 on a 1x28x28 MNIST image.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Sequence

import onnx

from splitc.testing import zoo
from splitc.partition.tiers import Link, TierProblem


def vgg16() -> onnx.ModelProto:
    b = zoo._Builder(seed=16)
    x, cin = b.input("input", [1, 3, 224, 224]), 3
    for stage, (convs, width) in enumerate(zip((2, 2, 3, 3, 3), (64, 128, 256, 512, 512)), 1):
        for conv in range(convs):
            x = b.conv_relu(x, cin, width, 3, f"conv{stage}_{conv + 1}")
            cin = width
        x = b.maxpool(x, f"pool{stage}")
    b.output(b.head(x, cin, 1000), [1, 1000])
    return b.model("vgg16")


def _bottleneck(b, x: str, cin: int, width: int, stride: int, prefix: str) -> str:
    y = b.conv_bn_relu(x, cin, width, 1, f"{prefix}/a")
    y = b.conv_bn_relu(y, width, width, 3, f"{prefix}/b", stride=stride)
    y = b.bn(b.conv(y, width, width * 4, 1, f"{prefix}/c/conv", bias=False), width * 4, f"{prefix}/c/bn")
    if stride != 1 or cin != width * 4:
        x = b.bn(b.conv(x, cin, width * 4, 1, f"{prefix}/proj/conv", stride=stride, bias=False), width * 4,
                 f"{prefix}/proj/bn")
    return b.relu(b.op("Add", [y, x], f"{prefix}/add"), f"{prefix}/relu")


def resnet50() -> onnx.ModelProto:
    b = zoo._Builder(seed=50)
    x = b.conv_bn_relu(b.input("input", [1, 3, 224, 224]), 3, 64, 7, "stem", stride=2)
    x = b.maxpool(x, "stem/pool", k=3, stride=2, pad=1)
    cin = 64
    for stage, (blocks, width) in enumerate(zip((3, 4, 6, 3), (64, 128, 256, 512)), 1):
        for block in range(blocks):
            stride = 2 if block == 0 and stage > 1 else 1
            x = _bottleneck(b, x, cin, width, stride, f"layer{stage}.{block}")
            cin = width * 4
    b.output(b.head(x, cin, 1000), [1, 1000])
    return b.model("resnet50")


def lenet() -> onnx.ModelProto:
    b = zoo._Builder(seed=5)
    x = b.input("input", [1, 1, 28, 28])
    x = b.maxpool(b.conv_relu(x, 1, 6, 5, "conv1"), "pool1")
    x = b.maxpool(b.conv_relu(x, 6, 16, 5, "conv2"), "pool2")
    x = b.op("Flatten", [x], "flatten", axis=1)
    x = b.relu(b.gemm(x, 16 * 7 * 7, 120, "fc1"), "fc1/relu")
    x = b.relu(b.gemm(x, 120, 84, "fc2"), "fc2/relu")
    b.output(b.gemm(x, 84, 10, "fc3"), [1, 10])
    return b.model("lenet")


BUILDERS = {"vgg16": vgg16, "resnet50": resnet50, "lenet": lenet}


def graph_of(model: onnx.ModelProto | str):
    """Import (a zoo/bench name or a model) and remove dead code."""
    from splitc.frontend import import_model
    from splitc.passes.base import PassManager
    from splitc.passes.dce import DeadCodeElimination

    if isinstance(model, str):
        model = BUILDERS[model]() if model in BUILDERS else zoo.build(model)
    return PassManager([DeadCodeElimination()])(import_model(model)).graph


@lru_cache(maxsize=64)
def tier_problem(model: str, targets: Sequence[str], links: tuple[tuple[float, float], ...] = ((1.0, 0.0), (1.0, 0.0))
                 ) -> TierProblem:
    """The three-tier problem of a named model (``BUILDERS``, a zoo name or an .onnx path) on three targets."""
    source = onnx.load(model) if model.endswith(".onnx") else model
    graph = graph_of(source)
    return TierProblem.from_graph(graph, list(targets), [Link(b, r) for b, r in links])
