"""The stitching runtime. It reads only the emitted artifacts: it never imports the compiler."""

from splitc.runtime.pipeline import InputError, Pipeline, PlanError, load_plan
from splitc.runtime.client import CloudError, EdgeClient, Result
from splitc.runtime.plans import PlanSet

__all__ = ["InputError", "Pipeline", "PlanError", "load_plan", "CloudError", "EdgeClient", "Result", "PlanSet"]
