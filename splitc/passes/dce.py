"""Dead-code elimination: drop nodes whose outputs reach no graph output."""

from __future__ import annotations

from splitc.ir.graph import Graph
from splitc.passes.base import Pass, PassError, PassResult


def _dead(graph: Graph) -> list:
    live: set[int] = set()
    for node in reversed(graph.nodes):
        used = any(v.is_graph_output or any(id(c) in live for c in v.consumers) for v in node.outputs)
        if used:
            live.add(id(node))
    return [node for node in graph.nodes if id(node) not in live]


class DeadCodeElimination(Pass):
    """Removes every node none of whose outputs reaches a graph output."""

    name = "dead-code-elimination"

    def run(self, graph: Graph) -> PassResult:
        """Drop the dead nodes; not applicable when every node reaches an output."""
        dead = _dead(graph)
        if not dead:
            return PassResult.fail(graph, "every node reaches a graph output")
        graph.remove_nodes(dead)
        return PassResult(graph, True)

    def ensures(self, graph: Graph) -> None:
        """No dead node is left."""
        left = _dead(graph)
        if left:
            raise PassError(f"dead nodes left: {[n.name for n in left[:5]]}")
