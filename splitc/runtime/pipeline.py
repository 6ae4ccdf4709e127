"""Run a compiled split in one process: edge half, then cloud half.

This module reads only the emitted artifacts and ``plan.json``; it never
imports the compiler.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from splitc.runtime.cut_codec import CutCodec
from splitc.artifacts.plan import Plan, PlanFormatError
from splitc.runtime.errors import PlanError


class InputError(ValueError):
    """The inputs given to a pipeline do not match the model's inputs."""


def load_plan(out_dir: str | Path) -> Plan:
    """Read and check ``plan.json`` in a splitc output directory (``splitc.artifacts.Plan``)."""
    path = Path(out_dir) / "plan.json"
    if not path.is_file():
        raise PlanError(f"{out_dir}: no plan.json (not a splitc output directory)")
    try:
        plan = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PlanError(f"{path}: not valid JSON: {exc}") from exc
    try:
        return Plan.from_json(plan, str(path))
    except PlanFormatError as exc:
        raise PlanError(str(exc)) from None


def _session(path: Path, threads: int | None, entry: dict | None = None) -> ort.InferenceSession:
    if path.suffix == ".so":  # a TVM build (--backend tvm); onnxruntime runs everything else
        from splitc.runtime.tvm_half import TvmHalf

        return TvmHalf(path, entry or {}, threads)
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Pipeline:
    """Edge half → cut tensors → cloud half, in one process (no network)."""

    def __init__(self, out_dir: str | Path, threads: int | None = None) -> None:
        self.out_dir = Path(out_dir)
        self.plan = load_plan(self.out_dir)
        self.edge = _session(self.out_dir / self.plan.edge.file, threads, self.plan["edge"])
        cloud = self.plan.cloud
        self.cloud = _session(self.out_dir / cloud.file, threads, self.plan["cloud"]) if cloud else None
        self.output_names = self.plan.output_names
        self.codec = CutCodec(self.plan, self.out_dir)
        self.codec.warm_up()
        self.last_frames: list[bytes] = []

    def check_inputs(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Check names, shapes and dtypes of the inputs against the plan; cast where safe.

        An input given as an image file's path is loaded and prepared as the
        plan's ``preprocess`` says (``splitc.runtime.image_input``).
        """
        from splitc.runtime.image_input import prepare_feeds

        feeds = prepare_feeds(feeds, self.plan["edge"]["inputs"], self.plan.preprocess)
        checked = {}
        for spec in self.plan.edge.inputs:
            name = spec.name
            if name not in feeds:
                raise InputError(f"missing input {name!r} (the model takes {', '.join(self.input_names)})")
            array = np.asarray(feeds[name])
            if spec.shape is not None and array.shape != spec.shape:
                raise InputError(f"input {name!r} has shape {list(array.shape)}, expected {list(spec.shape)}")
            checked[name] = array.astype(spec.dtype, copy=False)
        extra = sorted(set(feeds) - set(checked))
        if extra:
            raise InputError(f"unknown input {extra[0]!r} (the model takes {', '.join(self.input_names)})")
        return checked

    @property
    def input_names(self) -> list[str]:
        return [i.name for i in self.plan.edge.inputs]

    def run_edge(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the edge half; returns the cut tensors and the outputs computed on the edge."""
        feeds = self.check_inputs(feeds)
        names = [o.name for o in self.edge.get_outputs()]
        return dict(zip(names, self.edge.run(names, feeds)))

    def run_cloud(self, cut: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the cloud half on the cut tensors."""
        if self.cloud is None:
            return {}
        names = [o.name for o in self.cloud.get_outputs()]
        return dict(zip(names, self.cloud.run(names, cut)))

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The model's outputs, in the original order.

        The cut tensors go through the wire codec exactly as they would over
        the network; ``last_frames`` keeps the frames of the latest run.
        """
        at_edge = self.run_edge(feeds)
        self.last_frames = self.codec.encode(at_edge)
        merged = {**at_edge, **self.run_cloud(self.codec.decode(self.last_frames))}
        return {name: merged[name] for name in self.output_names}
