"""``cost_model_for``: a target name, a measured profile or a cost model, resolved to a cost model."""

from __future__ import annotations

import os

from splitc.cost.model import CostModel
from splitc.cost.profile import is_profile_path, load_cost_model
from splitc.cost.roofline import roofline_for
from splitc.targets import get_target


def cost_model_for(spec: str | os.PathLike | CostModel) -> CostModel:
    """Resolve a target name or a measured profile (a path ending in .json), or pass a cost model through.

    Built-in targets get the roofline calibrated per op type on the ``host``
    machine (``splitc/data/host_calibration.json``).
    """
    if is_profile_path(spec):
        return load_cost_model(spec)
    if isinstance(spec, str):
        return roofline_for(get_target(spec))
    return spec
