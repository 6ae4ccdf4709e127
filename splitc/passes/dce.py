"""Dead-code elimination: drop nodes whose outputs reach no graph output."""

from __future__ import annotations

from splitc.ir.graph import Graph
from splitc.passes.base import Pass, PassResult


class DeadCodeElimination(Pass):
    name = "dead-code-elimination"

    def run(self, graph: Graph) -> PassResult:
        live: set[int] = set()
        for node in reversed(graph.nodes):
            used = any(v.is_graph_output or any(id(c) in live for c in v.consumers) for v in node.outputs)
            if used:
                live.add(id(node))
        dead = [node for node in graph.nodes if id(node) not in live]
        if dead:
            graph.remove_nodes(dead)
        return PassResult(graph, bool(dead))
