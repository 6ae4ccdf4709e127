"""The compression-rewrite contract: calibration activations, rewrite passes and their variants.

A compression rewrite is a :class:`~splitc.passes.base.Pass` on a whole ``onnx.ModelProto``, limited to a
*scope* (the node names that run on the edge). It is fitted in closed form or by least squares on the
activations of a calibration set (:class:`Activations`), never by training. A rewrite keeps the name and
shape of every tensor outside the nodes it replaces, unless it says otherwise in ``renamed`` (a
bottleneck changes the tensor at the cut), so the partitioner's cut stays valid on the rewritten model.

A rewrite that does not apply returns ``PassResult.fail(model, reason)``; a rewrite that cannot be fitted
(fewer samples than the channels it fits, a singular system) fails the same way, with the reason, and never
raises a numerical traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, shape_inference

from splitc.passes.base import Pass


class Activations:
    """Runs a model on calibration samples and returns named intermediate tensors, stacked over samples.

    ``samples`` is a list of feeds (input name -> array), as in ``CalibrationSet.samples``. Results are
    cached per tensor name for the model the object was built with; build a new one after a rewrite.
    """

    def __init__(self, model: onnx.ModelProto, samples: list[Mapping[str, np.ndarray]]) -> None:
        self.model = model
        self.samples = list(samples)
        self._cache: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.samples)

    def get(self, names: Iterable[str]) -> dict[str, np.ndarray]:
        """``{name: array}``; each array is the per-sample tensors concatenated along axis 0."""
        names = list(dict.fromkeys(names))
        missing = [n for n in names if n not in self._cache]
        if missing:
            session = _session(_with_outputs(self.model, missing))
            runs = [session.run(missing, dict(feed)) for feed in self.samples]
            for k, name in enumerate(missing):
                self._cache[name] = np.concatenate([np.asarray(r[k]) for r in runs], axis=0)
        return {n: self._cache[n] for n in names}


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` with ``names`` added as graph outputs (types from shape inference)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    present = {o.name for o in probe.graph.output}
    known = {v.name: v for v in shape_inference.infer_shapes(probe).graph.value_info}
    for name in names:
        if name in present:
            continue
        if name in known:
            probe.graph.output.append(known[name])
        else:
            probe.graph.output.append(helper.make_empty_tensor_value_info(name))
    return probe


@dataclass(frozen=True)
class Variant:
    """One rewritten model and what the rewrite did.

    ``rewrite`` names the family (``bottleneck``, ``lowrank``, ``prune``, ``int8``, ``fp16``); ``level`` is
    the family's knob (fraction of FLOPs or channels kept, rank fraction); ``flops`` are the scope's FLOPs
    before and after; ``detail`` holds per-layer facts for the plan (ranks, kept channels, fit error);
    ``renamed`` maps an old tensor name to its new one when the rewrite replaces a tensor the partitioner
    may cut (the bottleneck's projected cut tensor).
    """

    rewrite: str
    level: float
    model: onnx.ModelProto = field(repr=False)
    flops_before: float
    flops_after: float
    detail: dict = field(default_factory=dict)
    renamed: dict = field(default_factory=dict)

    @property
    def flops_saved(self) -> float:
        """Fraction of the scope's FLOPs removed (0 when nothing changed)."""
        return 0.0 if self.flops_before <= 0 else 1.0 - self.flops_after / self.flops_before


class Rewrite(Pass):
    """A compression rewrite fitted on calibration activations, limited to ``scope`` (node names).

    Subclasses implement ``run(model) -> PassResult`` (``PassResult.fail(model, reason)`` when it does not
    apply) and set ``name``. ``scope=None`` means every node of the model.
    """

    def __init__(self, activations: Activations, scope: Iterable[str] | None = None, level: float = 0.5) -> None:
        self.activations = activations
        self.scope = None if scope is None else frozenset(scope)
        self.level = float(level)

    def in_scope(self, node: onnx.NodeProto) -> bool:
        """Whether the rewrite may touch ``node``."""
        return self.scope is None or node.name in self.scope
