"""K-tier (device < edge < cloud) partitioning of DAGs: an exact layered min-cut.

See :mod:`splitc.partition.tiers` and docs/three-tier.md.
"""

from splitc.partition.tiers import (DEFAULT_TIERS, Link, TierBreakdown, TierProblem, TierResult, deepar_chain,
                                    evaluate_tiers, solve_tiers)

__all__ = ["DEFAULT_TIERS", "Link", "TierBreakdown", "TierProblem", "TierResult", "deepar_chain",
           "evaluate_tiers", "solve_tiers"]
