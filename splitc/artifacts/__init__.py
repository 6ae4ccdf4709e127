"""The artifacts' contract: the typed plan manifest the backends write and the runtime reads.

It imports nothing from the compiler or the runtime (only the standard library), so both, and any app
that embeds the artifacts, can read a plan through it. The JSON format is specified in ``docs/plan.md``.
"""

from splitc.artifacts.plan import SCHEMA, CutEntry, Half, Plan, PlanFormatError, TensorSpec

__all__ = ["SCHEMA", "CutEntry", "Half", "Plan", "PlanFormatError", "TensorSpec"]
