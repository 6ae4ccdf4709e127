"""Tuning-free CPU schedules for the Relax default pipeline (a dlight rule).

TVM's default CPU pipeline leaves every kernel as naive scalar loops. This rule
gives each fused kernel a fixed, hand-designed schedule instead:

* a kernel with one reduction block (convolution, matmul, pooling): a register
  tile of up to 8 output rows x 1-2 vectors of the innermost output axis,
  reductions outside the tile, the accumulator in registers (``cache_write``),
  the element-wise epilogue (bias, batch norm, ReLU, residual add) folded into
  the write-back, and the outer loops fused and run in parallel; padding and
  other prologue blocks are vectorized along their innermost axis;
* element-wise kernels: inlined, then vectorized and (when large) parallel.

With convolutions in NHWC layout (see ``pipeline.py``) the innermost axis is the
output channel, so the vectors are contiguous for both output and weights,
whatever the stride. Any kernel the rule cannot handle keeps the default loops.
"""

from __future__ import annotations

from tvm import s_tir, tirx
from tvm.s_tir import dlight
from tvm.target.codegen import llvm_get_vector_width

SPATIAL, REDUCE = 0, 2
ROW_TILES = (8, 4, 2)
PARALLEL_MIN = 4096  # elements of an element-wise kernel worth a parallel loop
PARALLEL_MIN_WORK = 1 << 17  # loop iterations (multiply-adds) of a reduction kernel worth one


def _extent(sch: s_tir.Schedule, loop) -> int | None:
    extent = sch.get(loop).extent
    return int(extent) if isinstance(extent, tirx.IntImm) else None


def _divisor(extent: int | None, choices) -> int:
    return next((c for c in choices if extent and c >= 1 and extent % c == 0), 1)


def _kinds(sch: s_tir.Schedule, block) -> list[int]:
    return [int(iv.iter_type) for iv in sch.get(block).iter_vars]


def _blocks(sch: s_tir.Schedule) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def vector_lanes(target) -> int:
    """float32 lanes of the target's widest vector register (4 for NEON, 16 for AVX-512)."""
    try:
        return max(1, int(llvm_get_vector_width(target)) // 32)
    except Exception:  # noqa: BLE001 - unknown CPU: assume 128-bit vectors
        return 4


def _vectorize_rows(sch: s_tir.Schedule, block, lanes: int) -> list:
    """Vectorize the innermost axis, fused with outer ones until it spans a few vectors.

    Returns the loops left outside the vector loop.
    """
    loops = list(sch.get_loops(block))
    if not loops:
        return []
    inner = [loops.pop()]
    while loops and (_extent(sch, inner[0]) or 0) < 4 * lanes:
        inner.insert(0, loops.pop())
    fused = sch.fuse(*inner) if len(inner) > 1 else inner[0]
    width = _divisor(_extent(sch, fused), (4 * lanes, 2 * lanes, lanes, lanes // 2))
    if width <= 1:
        return loops + [fused]
    outer, vector = sch.split(fused, [None, width])
    sch.vectorize(vector)
    return loops + [outer]


def _tile_loops(sch: s_tir.Schedule, block, lanes: int):
    """Split and reorder: (outer spatial..., reductions..., row tile, vector); returns the three groups."""
    loops, kinds = sch.get_loops(block), _kinds(sch, block)
    if len(loops) != len(kinds) or kinds != sorted(kinds) or SPATIAL not in kinds:
        return None
    count = kinds.count(SPATIAL)
    spatial, reduce = list(loops[:count]), list(loops[count:])
    vec = _divisor(_extent(sch, spatial[-1]), (2 * lanes, lanes, lanes // 2, lanes // 4))
    v_out, v_in = sch.split(spatial[-1], [None, vec])
    outer, tile = spatial[:-1] + [v_out], [v_in]
    if len(spatial) >= 2:
        r_out, r_in = sch.split(spatial[-2], [None, _divisor(_extent(sch, spatial[-2]), ROW_TILES)])
        outer, tile = spatial[:-2] + [r_out, v_out], [r_in, v_in]
    sch.reorder(*outer, *reduce, *tile)
    return outer, reduce, tile


def schedule_reduction(sch: s_tir.Schedule, main, lanes: int) -> bool:
    """Register-tile the kernel's single reduction block; fold its epilogue into the write-back."""
    blocks = _blocks(sch)
    names = [sch.get(b).name_hint for b in blocks]
    position = names.index(sch.get(main).name_hint)
    groups = _tile_loops(sch, main, lanes)
    if groups is None:
        return False
    outer, reduce, tile = groups
    work = 1
    for loop in [*outer, *reduce, *tile]:
        work *= _extent(sch, loop) or PARALLEL_MIN_WORK
    fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
    write_back = sch.cache_write(main, 0, "local")
    rest = _fold_epilogue(sch, write_back, blocks[position + 1:])
    sch.reverse_compute_at(write_back, fused)
    if work >= PARALLEL_MIN_WORK:
        sch.parallel(fused)
    sch.vectorize(tile[-1])
    if len(tile) > 1:
        sch.unroll(tile[0])
    back_loops = sch.get_loops(write_back)[1:]
    if back_loops:
        sch.vectorize(back_loops[-1])
    if reduce:
        sch.decompose_reduction(main, reduce[0])
    for block in blocks[:position] + rest:
        _vectorize_rows(sch, block, lanes)
    return True


def _fold_epilogue(sch: s_tir.Schedule, write_back, epilogue: list) -> list:
    """Inline the element-wise chain after the reduction into its write-back; returns blocks left over.

    Stops where the chain forks (a value read by two blocks cannot be inlined away) or at a block
    that is not element-wise (a failed primitive leaves the schedule unchanged).
    """
    for index, block in enumerate(epilogue):
        if len(sch.get_consumers(write_back)) != 1:
            return epilogue[index:]
        try:
            sch.reverse_compute_inline(block)
        except s_tir.ScheduleError:
            return epilogue[index:]
    return []


def schedule_elementwise(sch: s_tir.Schedule, lanes: int) -> bool:
    """Inline what can be inlined, then vectorize (and parallelize, if large) what is left."""
    for block in _blocks(sch)[:-1]:
        try:
            sch.compute_inline(block)
        except s_tir.ScheduleError:
            continue
    for block in _blocks(sch):
        total = 1
        for loop in sch.get_loops(block):
            total *= _extent(sch, loop) or 1
        outer = _vectorize_rows(sch, block, lanes)
        if total >= PARALLEL_MIN and outer:
            sch.parallel(sch.fuse(*outer) if len(outer) > 1 else outer[0])
    return True


class CPUKernels(dlight.ScheduleRule):
    """The rule above for LLVM targets; ``None`` (keep the default loops) when it does not apply."""

    def apply(self, func, target, tunable):  # noqa: D102 - dlight interface
        if target.kind.name != "llvm" or not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        reductions = [b for b in _blocks(sch) if REDUCE in _kinds(sch, b)]
        if len(reductions) > 1:
            return None
        try:
            done = (schedule_reduction(sch, reductions[0], vector_lanes(target)) if reductions
                    else schedule_elementwise(sch, vector_lanes(target)))
        except Exception:  # noqa: BLE001 - any primitive may refuse an odd kernel: keep the default loops
            return None
        return sch if done else None


class LargeOnly(dlight.ScheduleRule):
    """Apply ``rule`` only to kernels with a block of at least ``PARALLEL_MIN`` iterations.

    dlight's CPU rules parallelize unconditionally; on a tiny kernel (a softmax
    over 10 logits) waking the thread pool costs more than the work.
    """

    def __init__(self, rule: dlight.ScheduleRule) -> None:
        self.rule = rule

    def apply(self, func, target, tunable):  # noqa: D102 - dlight interface
        if not isinstance(func, tirx.PrimFunc):
            return None
        sch = s_tir.Schedule(func)
        sizes = []
        for block in _blocks(sch):
            size = 1
            for loop in sch.get_loops(block):
                size *= _extent(sch, loop) or PARALLEL_MIN
            sizes.append(size)
        return self.rule.apply(func, target, tunable) if max(sizes, default=0) >= PARALLEL_MIN else None
