"""The stitching runtime. It reads only the emitted artifacts: it never imports the compiler."""

from splitc.runtime.pipeline import InputError, Pipeline, PlanError, load_plan

__all__ = ["InputError", "Pipeline", "PlanError", "load_plan"]
