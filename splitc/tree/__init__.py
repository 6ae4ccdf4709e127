"""The context-aware model tree: a bandwidth Markov chain fitted from traces and the exact tree policy.

* :mod:`splitc.tree.traces` - mahimahi traces (parsing, rates, exact transfer times, synthetic traces);
* :mod:`splitc.tree.markov` - the K-class bandwidth chain;
* :mod:`splitc.tree.edges` - class edges where the best decision changes;
* :mod:`splitc.tree.spec` - the abstract tree (blocks, variants, offload options, costs);
* :mod:`splitc.tree.policy` - backward induction and exact policy evaluation;
* :mod:`splitc.tree.search` - random search, ε-greedy construction and the fixed plan;
* :mod:`splitc.tree.simulate` - replay over a trace and the oracle.

See docs/model-tree.md.
"""

from splitc.tree.markov import BandwidthChain, fit_chain
from splitc.tree.policy import TreePolicy, evaluate, solve
from splitc.tree.search import FixedPlan, SearchResult, epsilon_greedy, fixed_plan, fixed_policy, random_search
from splitc.tree.simulate import leaf_latencies, oracle, simulate
from splitc.tree.spec import (Action, Block, Leaf, OffloadOption, TreeSpec, Variant, feasible_actions, leaves,
                              synthetic_spec)
from splitc.tree.traces import Trace, TraceError, load_trace, synthetic_trace

__all__ = ["Action", "BandwidthChain", "Block", "FixedPlan", "Leaf", "OffloadOption", "SearchResult", "Trace",
           "TraceError", "TreePolicy", "TreeSpec", "Variant", "epsilon_greedy", "evaluate", "feasible_actions",
           "fit_chain", "fixed_plan", "fixed_policy", "leaf_latencies", "leaves", "load_trace", "oracle",
           "random_search", "simulate", "solve", "synthetic_spec", "synthetic_trace"]
