"""Cost models: the roofline (plain and host-calibrated), measured profiles, and ``cost_model_for(target)``."""

from splitc.cost.model import CostModel, CostTable, RooflineCostModel, annotate_costs
from splitc.cost.resolve import cost_model_for

__all__ = ["CostModel", "CostTable", "RooflineCostModel", "annotate_costs", "cost_model_for"]
