"""The abstract model tree: blocks with variants, offload options at each fork, and their costs.

Blocks 0 .. B-1 run in order on the edge; each has variants (variant 0 is the
base block). Fork f is the point before block f (fork 0: the input, fork B:
after the last block). The *path* at fork f is the tuple of the variants run
so far (length f). At fork f < B the edge either offloads - sends the current
tensor with one of the options ``offload_options(f, path)``, each a
``(label, bytes, drop_bound)``, after which the cloud finishes the base model
in ``cloud_ms(f, path)`` - or runs a variant of block f and decides again at
fork f + 1. At fork B the result is complete on the edge; its accuracy-drop
bound is ``edge_drop(path)``. A *leaf* is one root-to-leaf composition.

The spec holds plain callables so that a builder from real model blocks can
fill it in from measured tables; :func:`synthetic_spec` builds one from random
tables for tests and docs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from splitc.errors import SplitcError

Path = tuple[int, ...]

__all__ = ["Action", "Block", "Leaf", "OffloadOption", "Path", "TreeSpec", "Variant", "feasible_actions",
           "leaves", "synthetic_spec"]


class Variant(NamedTuple):
    """One implementation of a block: its name and its compute time on the edge device (ms)."""

    name: str
    edge_ms: float


class OffloadOption(NamedTuple):
    """One way to send the tensor at a fork: a label (bits, codec), its size, and the leaf's drop bound."""

    label: str
    nbytes: float
    drop: float


class Action(NamedTuple):
    """A decision at a fork: ``offload`` with option ``index`` (its ``label``), or ``run`` variant ``index``."""

    kind: str
    index: int
    label: str = ""


class Leaf(NamedTuple):
    """A composition: offload at ``fork`` after ``path`` with option ``option``, or (option None) all on edge."""

    fork: int
    path: Path
    option: int | None
    label: str | None


@dataclass
class Block:
    """A block of the network and its variants (variant 0 is the base block)."""

    name: str
    variants: list[Variant]


@dataclass
class TreeSpec:
    """The tree's blocks and the costs of each decision (see the module's description).

    ``offload_options(fork, path)`` returns ``(label, bytes, drop_bound)``
    triples; ``cloud_ms(fork, path)`` the cloud's time to finish from that
    fork; ``edge_drop(path)`` the drop bound of running every block on the
    edge (``math.inf`` forbids it). ``rtt_ms`` is added to every offload.
    """

    blocks: list[Block]
    offload_options: Callable[[int, Path], Sequence[tuple]]
    cloud_ms: Callable[[int, Path], float]
    edge_drop: Callable[[Path], float]
    rtt_ms: float = 0.0

    def __post_init__(self) -> None:
        if not self.blocks:
            raise SplitcError("a model tree needs at least one block")
        for block in self.blocks:
            if not block.variants:
                raise SplitcError(f"block {block.name!r} has no variant (variant 0 must be the base block)")
            for variant in block.variants:
                if not variant.edge_ms >= 0:
                    raise SplitcError(f"block {block.name!r}, variant {variant.name!r}: edge time must be "
                                      f">= 0 ms, not {variant.edge_ms}")
        if not self.rtt_ms >= 0:
            raise SplitcError(f"the round trip must be >= 0 ms, not {self.rtt_ms}")

    @property
    def num_blocks(self) -> int:
        """B, the number of blocks."""
        return len(self.blocks)

    def options(self, fork: int, path: Path) -> list[OffloadOption]:
        """The offload options at ``fork`` after ``path``, checked."""
        found = [OffloadOption(str(label), float(nbytes), float(drop))
                 for label, nbytes, drop in self.offload_options(fork, path)]
        for option in found:
            if not option.nbytes >= 0:
                raise SplitcError(f"fork {fork}, path {path}: option {option.label!r} has {option.nbytes} bytes")
        return found

    def paths(self, fork: int) -> Iterator[Path]:
        """Every path of length ``fork``."""
        return itertools.product(*(range(len(block.variants)) for block in self.blocks[:fork]))

    def edge_ms(self, path: Path) -> float:
        """Edge compute time of the blocks of ``path``."""
        return sum(self.blocks[f].variants[v].edge_ms for f, v in enumerate(path))


def feasible_actions(spec: TreeSpec, max_drop: float) -> dict[tuple[int, Path], list[Action]]:
    """The actions of every state (fork < B, path) that lead only to leaves whose drop bound is <= max_drop.

    A state is feasible when its list is non-empty: accuracy is a property of
    each branch, so a prefix is feasible only if some completion of it is.
    """
    table: dict[tuple[int, Path], list[Action]] = {}
    done = {path: spec.edge_drop(path) <= max_drop for path in spec.paths(spec.num_blocks)}
    for fork in range(spec.num_blocks - 1, -1, -1):
        here = {}
        for path in spec.paths(fork):
            actions = [Action("offload", j, option.label)
                       for j, option in enumerate(spec.options(fork, path)) if option.drop <= max_drop]
            actions += [Action("run", v) for v in range(len(spec.blocks[fork].variants)) if done[path + (v,)]]
            table[(fork, path)] = actions
            here[path] = bool(actions)
        done = here
    return table


def leaves(spec: TreeSpec, max_drop: float = math.inf) -> Iterator[Leaf]:
    """Every composition whose drop bound is <= ``max_drop``."""
    for fork in range(spec.num_blocks + 1):
        for path in spec.paths(fork):
            if fork == spec.num_blocks:
                if spec.edge_drop(path) <= max_drop:
                    yield Leaf(fork, path, None, None)
                continue
            for j, option in enumerate(spec.options(fork, path)):
                if option.drop <= max_drop:
                    yield Leaf(fork, path, j, option.label)


def synthetic_spec(seed: int, blocks: int = 3, variants: int = 2, options: int = 3,
                   rtt_ms: float = 20.0) -> TreeSpec:
    """A tree from random but plausible tables (for tests and docs).

    The tensor at fork 0 is a 224x224x3 image (150,528 bytes); later tensors
    shrink or grow by a random factor per base block, and a variant scales its
    output by 0.3 .. 1.0, runs in 0.3 .. 1.0 of the base time and adds an
    accuracy drop of 0 .. 2 %. Options ``o0``, ``o1``, ... send 1, 1/4,
    1/8, ... of the bytes with a drop of 0, 0.2 .. 1 %, ... The cloud takes
    0.5 .. 3 ms per remaining base block.
    """
    rng = np.random.default_rng(seed)
    base_ms = rng.uniform(20, 80, blocks)
    scale = np.ones((blocks, variants))
    speed = np.ones((blocks, variants))
    vdrop = np.zeros((blocks, variants))
    scale[:, 1:] = rng.uniform(0.3, 1.0, (blocks, variants - 1))
    speed[:, 1:] = rng.uniform(0.3, 1.0, (blocks, variants - 1))
    vdrop[:, 1:] = rng.uniform(0.0, 0.02, (blocks, variants - 1))
    growth = np.concatenate([[150_528.0], 150_528.0 * np.cumprod(rng.uniform(0.4, 1.6, blocks))])
    factor = np.array([1.0] + [0.5 ** (j + 1) for j in range(1, options)])[:options]
    odrop = np.concatenate([[0.0], np.sort(rng.uniform(0.002, 0.01, options - 1))]) if options else np.zeros(0)
    cloud_block = rng.uniform(0.5, 3.0, blocks)

    def offload_options(fork: int, path: Path) -> list[tuple]:
        size = growth[fork] * float(np.prod([scale[f, v] for f, v in enumerate(path)]))
        drop = sum(vdrop[f, v] for f, v in enumerate(path))
        return [(f"o{j}", size * factor[j], drop + odrop[j]) for j in range(options)]

    def cloud_ms(fork: int, path: Path) -> float:
        return float(cloud_block[fork:].sum())

    def edge_drop(path: Path) -> float:
        return float(sum(vdrop[f, v] for f, v in enumerate(path)))

    tree_blocks = [Block(f"b{f}", [Variant(f"b{f}v{v}", float(base_ms[f] * speed[f, v])) for v in range(variants)])
                   for f in range(blocks)]
    return TreeSpec(tree_blocks, offload_options, cloud_ms, edge_drop, rtt_ms)
