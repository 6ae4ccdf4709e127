"""The pass contract: a pass takes the IR and returns ``PassResult(graph, modified)``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

from splitc.ir.graph import Graph
from splitc.ir.verify import verify


@dataclass
class PassResult:
    graph: Graph
    modified: bool


class Pass(ABC):
    """Base class for graph transforms. Subclasses implement ``run``."""

    name = "pass"

    @abstractmethod
    def run(self, graph: Graph) -> PassResult:
        """Transform ``graph`` (in place or not) and say whether it changed."""

    def __call__(self, graph: Graph) -> PassResult:
        return self.run(graph)


class PassError(RuntimeError):
    """A pass failed; the message names the passes that already ran."""


class PassManager:
    """Runs passes in order, optionally verifying the IR after each one."""

    def __init__(self, passes: Sequence[Pass], verify_each: bool = True) -> None:
        self.passes = list(passes)
        self.verify_each = verify_each

    def __call__(self, graph: Graph) -> PassResult:
        modified = False
        done: list[str] = []
        for step in self.passes:
            try:
                result = step(graph)
                if self.verify_each:
                    verify(result.graph)
            except Exception as exc:
                raise PassError(f"pass {step.name!r} failed (after: {', '.join(done) or 'none'}): {exc}") from exc
            graph, modified = result.graph, modified or result.modified
            done.append(step.name)
        return PassResult(graph, modified)
