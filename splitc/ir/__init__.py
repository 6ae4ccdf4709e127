"""The DAG IR: graphs of nodes and values with use-def links."""

from splitc.ir.flops import node_flops
from splitc.ir.graph import Graph, Node, Value
from splitc.ir.verify import VerificationError, verify

__all__ = ["Graph", "Node", "Value", "node_flops", "verify", "VerificationError"]
