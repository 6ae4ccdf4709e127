"""Cut vertices (the linear-time sweep) against networkx dominators.

The cut vertices are the values on every path from the virtual source to the
virtual sink, i.e. the value vertices among the dominators of the sink. The
reference builds that vertex graph explicitly and walks the immediate
dominator chain of the sink with ``networkx.immediate_dominators``.
"""

from __future__ import annotations

import glob
import os

import networkx as nx
import numpy as np
import onnx
import onnx.numpy_helper
import onnx.parser
import pytest

from splitc.testing import zoo
from splitc.frontend import import_model
from splitc.passes.base import PassManager
from splitc.testing.baselines import random_dag_problem
from splitc.cost.model import annotate_costs
from splitc.cost.resolve import cost_model_for
from splitc.partition.cut_vertices import find_cut_vertices
from splitc.passes.dce import DeadCodeElimination
from splitc.partition.problem import SplitProblem, problem_from_graph

SOURCE, SINK = "source", "sink"


def vertex_graph(problem: SplitProblem) -> nx.DiGraph:
    """source -> graph inputs and input-less nodes; value -> consumer; node -> its values; outputs -> sink."""
    g = nx.DiGraph()
    g.add_nodes_from([SOURCE, SINK])
    g.add_nodes_from(("node", i) for i in range(problem.num_nodes))
    fed = np.zeros(problem.num_nodes, dtype=bool)
    fed[problem.cons_idx] = True
    for i in np.flatnonzero(~fed):
        g.add_edge(SOURCE, ("node", int(i)))
    for v in range(problem.num_values):
        prod = int(problem.producer[v])
        g.add_edge(SOURCE if prod < 0 else ("node", prod), ("value", v))
        for c in problem.cons_idx[problem.cons_ptr[v] : problem.cons_ptr[v + 1]]:
            g.add_edge(("value", v), ("node", int(c)))
        if problem.is_output[v]:
            g.add_edge(("value", v), SINK)
    return g


def dominator_cut_values(problem: SplitProblem) -> list[int]:
    """Values (not graph inputs) that dominate the sink, from the source side to the sink side."""
    idom = nx.immediate_dominators(vertex_graph(problem), SOURCE)
    if SINK not in idom:
        raise ValueError("the sink is unreachable")
    chain = []
    vertex = idom[SINK]
    while vertex != SOURCE:
        if vertex[0] == "value" and problem.producer[vertex[1]] >= 0:
            chain.append(vertex[1])
        vertex = idom[vertex]
    return chain[::-1]


def _check(problem: SplitProblem, label: str) -> None:
    got = find_cut_vertices(problem).tolist()
    assert got == dominator_cut_values(problem), label


def test_random_dags_match_dominators():
    for seed in range(500):
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 19)) if seed % 4 else int(rng.integers(20, 200))
        _check(random_dag_problem(rng, n), f"seed {seed}")


def test_dead_nodes_only_hide_cut_vertices():
    """With dead code the sweep is conservative: an edge into a dead end can jump over a dominator.

    The sweep's "no edge jumps over it" is exact only when every edge lies on
    some source-to-sink path, which dead-code elimination guarantees. With dead
    nodes it returns a subset of the dominators (never a non-dominator), which
    keeps the segment decomposition sound.
    """
    hidden = 0
    for seed in range(400):
        rng = np.random.default_rng(seed)
        problem = random_dag_problem(rng, int(rng.integers(1, 30)), allow_dead=True)
        got, want = find_cut_vertices(problem).tolist(), dominator_cut_values(problem)
        assert got == [v for v in want if v in set(got)], f"seed {seed}: {got} not an ordered subset of {want}"
        hidden += len(want) - len(got)
    assert hidden > 0


def test_chains_have_every_activation_as_a_cut_vertex():
    rng = np.random.default_rng(0)
    for _ in range(20):
        problem = random_dag_problem(rng, 1)  # one node: its values are the outputs
        _check(problem, "single node")
    # x -> N0 -> v1 -> N1 -> v2 -> N2 -> v3 (output)
    chain = SplitProblem(
        edge_ms=np.ones(3), cloud_ms=np.ones(3), producer=np.array([-1, 0, 1, 2]), nbytes=np.ones(4, np.int64),
        is_output=np.array([0, 0, 0, 1], bool), cons_ptr=np.array([0, 1, 2, 3, 3]), cons_idx=np.array([0, 1, 2]),
        bandwidth=1.0,
    )
    assert find_cut_vertices(chain).tolist() == [1, 2, 3]
    _check(chain, "chain")


LIGHT_DIR = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
REAL_MODELS = [os.path.basename(p)[: -len(".onnx")] for p in sorted(glob.glob(os.path.join(LIGHT_DIR, "light_*.onnx")))]
REAL_MODELS += list(zoo.MODELS)


def _real_problem(model) -> SplitProblem:
    graph = PassManager([DeadCodeElimination()])(import_model(model)).graph
    costs = annotate_costs(graph, cost_model_for("jetson-tx2"), cost_model_for("t4"))
    return problem_from_graph(graph, costs, 1e6, 20.0)


@pytest.mark.parametrize("name", REAL_MODELS)
def test_real_models_match_dominators(name):
    model = os.path.join(LIGHT_DIR, name + ".onnx") if name.startswith("light_") else zoo.build(name)
    _check(_real_problem(model), name)


def test_layered_dag_matches_dominators():
    problem = _real_problem(zoo.layered_dag(1000))
    _check(problem, "layered_dag(1000)")
    assert len(find_cut_vertices(problem)) > 10  # blocks are joined by single tensors


RESIDUAL = """
<ir_version: 8, opset_import: ["" : 13]>
residual (float[1,4,8,8] x) => (float[1,4,8,8] y) {
    h0 = Relu(x)
    c1 = Conv<pads = [1, 1, 1, 1]>(h0, w1)
    r1 = Relu(c1)
    c2 = Conv<pads = [1, 1, 1, 1]>(r1, w2)
    s = Add(c2, h0)
    y = Relu(s)
}
"""


def test_golden_residual_block():
    model = onnx.parser.parse_model(RESIDUAL)
    rng = np.random.default_rng(0)
    model.graph.initializer.extend(
        onnx.numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), name)
        for name in ("w1", "w2")
    )
    problem = _real_problem(model)
    names = problem.value_names
    # The skip connection h0 -> Add jumps over c1, r1 and c2; x is a graph input.
    assert [names[v] for v in find_cut_vertices(problem)] == ["h0", "s", "y"]
    _check(problem, "residual block")
