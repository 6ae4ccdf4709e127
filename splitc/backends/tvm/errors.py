"""Errors of the TVM backend. All are ``SplitcError``s: the CLI prints one line and exits with 2."""

from __future__ import annotations

from splitc.errors import SplitcError, TargetError

INSTALL_HINT = "pip install 'splitc[tvm]'"


class TVMNotInstalled(SplitcError):
    """apache-tvm is not importable here."""

    def __init__(self, reason: str = "") -> None:
        detail = f" ({reason})" if reason else ""
        super().__init__(f"--backend tvm needs apache-tvm{detail}; install it with: {INSTALL_HINT}")


class TVMTargetError(TargetError):
    """The device has no TVM build in splitc (for example a 32-bit ARM board)."""


class UnsupportedOpsError(SplitcError):
    """Nodes that TVM's ONNX importer cannot translate, listed all at once.

    ``nodes`` holds ``(half, op_type, node_name, reason)`` tuples.
    """

    def __init__(self, nodes: list[tuple[str, str, str, str]]) -> None:
        self.nodes = list(nodes)
        listed = "; ".join(f"{half}: {op} {name!r} ({why})" for half, op, name, why in self.nodes)
        super().__init__(
            f"TVM's ONNX importer does not support {len(self.nodes)} node(s): {listed}. "
            "Use --backend onnx, or --tvm-fallback onnx to emit the affected half as ONNX"
        )


class TVMBuildError(SplitcError):
    """TVM failed to import or compile a half that passed the op check."""


class TVMWarning(UserWarning):
    """A TVM-backend decision the user should know about (a CPU instead of a CUDA build, an ONNX fallback)."""
