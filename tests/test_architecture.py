"""The package's import structure: no cycles, and each layer imports only what is below it.

Imports are read with ``ast`` (top-level and function-local alike), so a cycle hidden behind a
function-local import is still a cycle. ``from package import module`` counts as an import of
the module, not of the package's ``__init__``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1] / "splitc"

# layer -> packages or modules it must never import (directly or in a function)
FORBIDDEN = {
    "splitc.runtime": ["splitc.cli", "splitc.api", "splitc.passes", "splitc.partition", "splitc.backends",
                       "splitc.frontend", "splitc.cost", "splitc.calibration", "splitc.joint", "splitc.adaptive",
                       "splitc.testing", "splitc.tools", "splitc.schedule", "splitc.profiling", "splitc.compress"],
    "splitc.wire": ["splitc.cli", "splitc.api", "splitc.passes", "splitc.partition", "splitc.backends",
                    "splitc.frontend", "splitc.cost", "splitc.calibration", "splitc.joint", "splitc.adaptive",
                    "splitc.runtime", "splitc.testing", "splitc.tools", "splitc.schedule", "splitc.profiling",
                    "splitc.compress", "splitc.tree"],
    "splitc.artifacts": ["splitc.cli", "splitc.api", "splitc.passes", "splitc.partition", "splitc.backends",
                         "splitc.frontend", "splitc.cost", "splitc.calibration", "splitc.joint", "splitc.adaptive",
                         "splitc.runtime", "splitc.wire", "splitc.ir", "splitc.testing", "splitc.tools",
                         "splitc.schedule", "splitc.profiling", "splitc.compress", "splitc.tree"],
    "splitc.cost": ["splitc.cli", "splitc.api", "splitc.passes", "splitc.partition", "splitc.backends",
                    "splitc.frontend", "splitc.calibration", "splitc.joint", "splitc.runtime", "splitc.profiling"],
    "splitc.partition": ["splitc.cli", "splitc.api", "splitc.passes", "splitc.backends", "splitc.frontend",
                         "splitc.calibration", "splitc.joint", "splitc.runtime", "splitc.profiling"],
    "splitc.ir": ["splitc.cli", "splitc.api", "splitc.passes", "splitc.partition", "splitc.backends",
                  "splitc.frontend", "splitc.cost", "splitc.calibration", "splitc.joint", "splitc.runtime"],
    "splitc.backends": ["splitc.cli", "splitc.api", "splitc.joint", "splitc.adaptive", "splitc.calibration"],
    "splitc.frontend": ["splitc.cli", "splitc.api", "splitc.passes", "splitc.partition", "splitc.backends",
                        "splitc.cost", "splitc.calibration", "splitc.joint", "splitc.runtime"],
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def _targets(module: str, path: Path, node: ast.AST, modules: dict[str, Path]) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join(package + ([base] if base else []))
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
    resolved = []
    for name in names:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name != module:
            resolved.append(name)
    return resolved


def import_graph() -> nx.DiGraph:
    modules = _modules()
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(module, path, node, modules):
                    graph.add_edge(module, target)
    return graph


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("layer", sorted(FORBIDDEN))
def test_layers_import_only_downwards(layer: str) -> None:
    graph = import_graph()
    bad = [(src, dst) for src, dst in graph.edges
           if (src == layer or src.startswith(layer + ".")) and
           any(dst == f or dst.startswith(f + ".") for f in FORBIDDEN[layer])]
    assert not bad, f"{layer} imports above itself: {bad}"


def test_passes_hold_only_transforms() -> None:
    """Solvers, cost models, measurement and test oracles live in their own packages."""
    names = {p.stem for p in (ROOT / "passes").glob("*.py")}
    assert names <= {"base", "dce", "qdq", "precision"}, names


def test_the_checker_sees_function_local_cycles(tmp_path: Path) -> None:
    """The checker itself: a cycle through a function-local import is found."""
    a = ast.parse("def f():\n    from splitc.b import x\n")
    found = [n for n in ast.walk(a) if isinstance(n, ast.ImportFrom)]
    assert found and found[0].module == "splitc.b"
