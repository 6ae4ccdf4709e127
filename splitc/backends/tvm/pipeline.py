"""The Relax pass pipelines the TVM backend compiles with.

``"default"`` is ``relax.get_default_pipeline(target)`` unchanged. ``"splitc"``
(the default for CPU targets) is the same CPU pipeline with three additions:
convolutions in NHWC/HWIO layout, batch norm decomposed and constant-folded for
inference, and the tuning-free kernel schedules of ``schedule.py`` applied
after fusion. GPU targets always use TVM's default pipeline (it already
schedules every kernel with dlight's GPU rules).
"""

from __future__ import annotations

import tvm
from tvm import relax
from tvm.relax.backend.cpu_generic import pipeline as cpu
from tvm.s_tir import dlight

from splitc.backends.tvm.schedule import CPUKernels, LargeOnly

PIPELINES = ("splitc", "default")

# Ops that ConvertLayout is known to handle. It aborts the process (SIGFPE) on
# others, e.g. ONNX Max of two scalars (relax.stack of 0-d tensors), so a module
# with anything else keeps NCHW (and still gets the schedules).
LAYOUT_SAFE = {
    "relax." + op for op in (
        "add subtract multiply divide maximum minimum power concat matmul mean sum max min reshape "
        "permute_dims flatten squeeze expand_dims sigmoid tanh erf exp sqrt rsqrt clip "
        "nn.conv2d nn.relu nn.gelu nn.silu nn.softmax nn.layer_norm nn.batch_norm nn.max_pool2d "
        "nn.avg_pool2d nn.adaptive_avg_pool2d"
    ).split()
}


def relax_ops(mod: tvm.IRModule) -> set[str]:
    """Names of the Relax operators called in the module's Relax functions."""
    names: set[str] = set()

    def visit(expr) -> None:
        if isinstance(expr, relax.Call) and isinstance(expr.op, tvm.ir.Op):
            names.add(expr.op.name)

    for _, func in mod.functions_items():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func.body, visit)
    return names


def _prepare(mod: tvm.IRModule) -> list:
    ops = relax_ops(mod)
    nhwc = "relax.nn.conv2d" in ops and ops <= LAYOUT_SAFE
    layout = [relax.transform.ConvertLayout({"relax.nn.conv2d": ["NHWC", "HWIO"]})] if nhwc else []
    return [relax.transform.ConvertToDataflow()] + layout + [  # an If leaves ops outside dataflow: unfused
        relax.transform.Normalize(),
        relax.transform.DecomposeOpsForInference(),
        relax.transform.CanonicalizeBindings(),
        relax.transform.FoldConstant(),
    ]


def splitc_cpu_pipeline(target: tvm.target.Target) -> tvm.transform.Pass:
    """TVM's default CPU pipeline plus NHWC layout and the ``CPUKernels`` schedules."""

    @tvm.transform.module_pass(opt_level=0, name="SplitcCPUPipeline")
    def _pipeline(mod: tvm.IRModule, _ctx: tvm.transform.PassContext) -> tvm.IRModule:
        with target:
            passes = (_prepare(mod) + cpu.library_dispatch_passes(target) + cpu.legalize_passes(target)
                      + [dlight.ApplyDefaultSchedule(CPUKernels(), LargeOnly(dlight.cpu.Reduction()))]
                      + cpu.dataflow_lower_passes(target) + cpu.finalize_passes(target))
            return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def relax_pipeline(target: tvm.target.Target, name: str = "splitc") -> tvm.transform.Pass:
    """The pipeline called ``name`` (see ``PIPELINES``) for ``target``."""
    if name not in PIPELINES:
        raise ValueError(f"unknown TVM pipeline {name!r}; choose from {', '.join(PIPELINES)}")
    if name == "default" or target.kind.name != "llvm":
        return relax.get_default_pipeline(target)
    return splitc_cpu_pipeline(target)
