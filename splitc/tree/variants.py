"""Block variants of a model tree: the base block, its float16 version, and a hook for more.

A *block* is the part of the base model between two forks: it reads the
tensors sent at its fork and computes those of the next fork (the last block
computes the model's outputs). Every block has the base variant (the block as
the model has it, float32). Makers add more:

* ``fp16_variant``: the block computing in float16 with float32 inputs and
  outputs (``splitc.passes.precision.to_fp16``), where the edge target has an
  FP16 rate; its edge time comes from the target's FP16 figures.
* any callable ``maker(block: BlockSource) -> list[BlockVariant]``: compressed
  blocks (pruned, low-rank, int8 rewrites from ``splitc.compress``) plug in
  here. A variant must read and write the same tensors (names, shapes and
  dtypes) as the base block, so that any variant of the next block can follow
  it and the base model's suffix can finish after it; its accuracy is measured
  as part of every composition it appears in, never assumed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import onnx

from splitc.errors import SplitcError

__all__ = ["BlockSource", "BlockVariant", "VariantMaker", "fp16_variant", "variants_of"]


@dataclass
class BlockSource:
    """A base block: its index, name, ONNX model, and its edge time in float32 and (if priced) float16 (ms)."""

    index: int
    name: str
    model: onnx.ModelProto
    edge_ms: float
    fp16_ms: float | None = None


@dataclass
class BlockVariant:
    """One implementation of a block: its name (unique within the block), ONNX model and edge time (ms)."""

    name: str
    model: onnx.ModelProto
    edge_ms: float


VariantMaker = Callable[[BlockSource], Sequence[BlockVariant]]


def fp16_variant(block: BlockSource) -> list[BlockVariant]:
    """The block in float16 (float32 inputs and outputs kept) when the target prices float16; else none."""
    if block.fp16_ms is None:
        return []
    from splitc.passes.precision import to_fp16

    return [BlockVariant("fp16", to_fp16(block.model), block.fp16_ms)]


def _io(model: onnx.ModelProto) -> tuple[list[str], list[str]]:
    initializers = {t.name for t in model.graph.initializer}
    return ([i.name for i in model.graph.input if i.name not in initializers], [o.name for o in model.graph.output])


def variants_of(block: BlockSource, makers: Sequence[VariantMaker]) -> list[BlockVariant]:
    """The base variant, then each maker's, checked: unique names, the base block's inputs and outputs."""
    found = [BlockVariant("base", block.model, block.edge_ms)]
    for maker in makers:
        found += list(maker(block))
    names = [v.name for v in found]
    for variant in found:
        if names.count(variant.name) > 1 or not variant.name.replace("-", "").replace("_", "").isalnum():
            raise SplitcError(f"block {block.name}: variant name {variant.name!r} is repeated or not a plain name")
        if _io(variant.model) != _io(block.model):
            raise SplitcError(f"block {block.name}: variant {variant.name!r} reads or writes other tensors than "
                              f"the base block ({_io(variant.model)} instead of {_io(block.model)})")
        if not variant.edge_ms >= 0:
            raise SplitcError(f"block {block.name}: variant {variant.name!r} has edge time {variant.edge_ms} ms")
    return found
