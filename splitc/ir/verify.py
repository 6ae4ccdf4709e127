"""A standalone verifier for the IR: run it after every pass in tests."""

from __future__ import annotations

from splitc.ir.graph import Graph


class VerificationError(AssertionError):
    """The IR breaks one of its invariants (a bug in splitc, not a user error)."""


def verify(graph: Graph) -> None:
    """Check acyclicity, use-def consistency, unique names and known data shapes."""
    problems: list[str] = []
    seen_nodes: set[int] = set()
    names: set[str] = set()
    for node in graph.nodes:
        if node.name in names:
            problems.append(f"node name {node.name!r} is used twice")
        names.add(node.name)
        for value in node.all_inputs:
            if value.producer is not None and id(value.producer) not in seen_nodes:
                problems.append(f"{node.name!r} uses {value.name!r} before it is produced (cycle or bad order)")
            if node not in value.consumers:
                problems.append(f"{value.name!r} does not list its consumer {node.name!r}")
            if graph.values.get(value.name) is not value:
                problems.append(f"{value.name!r} used by {node.name!r} is not in the graph")
            if value.producer is None and not (value.is_graph_input or value.is_initializer):
                problems.append(f"{value.name!r} used by {node.name!r} has no producer")
        for value in node.outputs:
            if value.producer is not node:
                problems.append(f"{value.name!r} does not name {node.name!r} as its producer")
            if not node.constant and value.shape is None and (value.consumers or value.is_graph_output):
                problems.append(f"{value.name!r} (output of {node.name!r}) has no shape")
        seen_nodes.add(id(node))
    for value in graph.values.values():
        for consumer in value.consumers:
            if id(consumer) not in seen_nodes:
                problems.append(f"{value.name!r} lists {consumer.name!r}, which is not in the graph")
            elif value not in consumer.all_inputs:
                problems.append(f"{value.name!r} lists {consumer.name!r}, which does not use it")
    for value in graph.outputs:
        if value.producer is None and not (value.is_graph_input or value.is_initializer):
            problems.append(f"graph output {value.name!r} has no producer")
    if problems:
        raise VerificationError("; ".join(problems[:20]))
