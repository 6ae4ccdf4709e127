"""The pass contract: a pass takes the IR or a half and returns ``PassResult(model, modified, reason)``.

A pass transforms either the IR (``Graph``) or a half (``onnx.ModelProto``). ``requires`` checks its
preconditions before it runs and ``ensures`` its postconditions after it changed something; both raise.
A pass that does not apply returns ``PassResult.fail(model, reason)``: the model unchanged,
``modified=False`` and, in words, why (onnxscript's ``MatchResult.fail(reason)``). ``PassManager`` runs a
pipeline, verifies the IR after each pass, names the passes that already ran when one fails, and
records what each pass did (``PassResult.records``), so the plan can say it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Sequence

import onnx

from splitc.ir.graph import Graph
from splitc.ir.proto import larger_than
from splitc.ir.verify import verify

_TWO_GB = 2**31 - 1


@dataclass(frozen=True)
class PassRecord:
    """What one pass of a pipeline did: applied (``modified``) or not, and why not."""

    name: str
    modified: bool
    reason: str = ""

    def to_json(self) -> dict:
        """``{"name", "applied"}``, plus ``"reason"`` for a pass that did not apply."""
        entry = {"name": self.name, "applied": self.modified}
        if not self.modified:
            entry["reason"] = self.reason
        return entry


@dataclass
class PassResult:
    """The model after a pass (``Graph`` or ``onnx.ModelProto``), whether it changed, and why not."""

    model: Any
    modified: bool
    reason: str = ""  # why the pass did not apply (modified False)
    records: list[PassRecord] = field(default_factory=list)  # one per pass, from a PassManager

    @property
    def graph(self) -> Any:
        """The model under its IR name (the IR passes' callers read ``.graph``)."""
        return self.model

    @classmethod
    def fail(cls, model: Any, reason: str) -> PassResult:
        """The pass does not apply to ``model``: unchanged, with the reason."""
        return cls(model, False, reason)


class PassError(RuntimeError):
    """A pass failed; the message names the passes that already ran."""


class Pass(ABC):
    """Base class for transforms. Subclasses implement ``run``; ``requires``/``ensures`` default to no checks."""

    name = "pass"

    def requires(self, model: Any) -> None:
        """Raise ``PassError`` if ``model`` is not fit for this pass."""

    def ensures(self, model: Any) -> None:
        """Raise ``PassError`` if the transformed ``model`` breaks what this pass promises."""

    @abstractmethod
    def run(self, model: Any) -> PassResult:
        """Transform ``model`` (in place or not) and say whether it changed, or why it did not apply."""

    def __call__(self, model: Any) -> PassResult:
        """``requires``, ``run``, then ``ensures`` when the model changed."""
        self.requires(model)
        result = self.run(model)
        if result.modified:
            self.ensures(result.model)
        elif not result.reason:
            raise PassError(f"pass {self.name!r} did not apply and gave no reason")
        return result


def check_half(model: onnx.ModelProto) -> None:
    """Full ONNX check (strict shape inference included) of a half under 2 GB (the checker's limit)."""
    if not larger_than(model, _TWO_GB):
        onnx.checker.check_model(model, full_check=True)


class PassManager:
    """Runs passes in order, verifying the IR after each one (halves: each pass's ``ensures``)."""

    def __init__(self, passes: Sequence[Pass], verify_each: bool = True) -> None:
        self.passes = list(passes)
        self.verify_each = verify_each

    def __call__(self, model: Any) -> PassResult:
        """Run the pipeline; the result's ``records`` say what each pass did."""
        records: list[PassRecord] = []
        for step in self.passes:
            try:
                result = step(model)
                if self.verify_each and isinstance(result.model, Graph):
                    verify(result.model)
            except Exception as exc:
                done = ", ".join(r.name for r in records) or "none"
                raise PassError(f"pass {step.name!r} failed (after: {done}): {exc}") from exc
            model = result.model
            records.append(PassRecord(step.name, result.modified, result.reason))
        modified = any(r.modified for r in records)
        reason = "" if modified else "; ".join(f"{r.name}: {r.reason}" for r in records) or "no passes"
        return PassResult(model, modified, reason, records)
