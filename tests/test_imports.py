"""The house's layering: no import cycles anywhere in detector/, and evaluation/ is a library.

Read from the source (ast), so imports inside functions count too; imports under
``if TYPE_CHECKING:`` do not (they never run). A cycle is reported as the modules on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "detector"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path, modules: set[str]) -> set[str]:
    """The detector modules `path` imports (resolving relative imports and ``from pkg import module``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    resolved = set()
    for target in found:
        while target and target not in modules:  # `from detector.ops import roi_align` -> the module, else its package
            target = target.rpartition(".")[0]
        if target and target != name:
            resolved.add(target)
    return resolved


def import_graph() -> dict[str, set[str]]:
    paths = [p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts]
    modules = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as ``[a, b, ..., a]`` (depth-first search), or None.

    A package's ``__init__`` re-exporting its own modules is not a cycle of the design, so
    edges from a package to its own submodules are left out.
    """
    edges = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(edges):
        if node not in state and (cycle := dfs(node)):
            return cycle
    return None


def test_the_graph_is_read():
    graph = import_graph()
    assert "detector.lit.module" in graph and "detector.checkpointing" in graph["detector.lit.module"]


def test_no_import_cycles():
    assert find_cycle(import_graph()) is None, " -> ".join(find_cycle(import_graph()))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"p": {"p.x"}, "p.x": set()}) is None  # a package importing its own module


@pytest.mark.parametrize("library, forbidden", [
    ("detector.evaluation", ("detector.lit", "detector.cli", "detector.ablation")),
    ("detector.checkpointing", ("detector.lit", "detector.cli", "detector.evaluation")),
    ("detector.models", ("detector.lit", "detector.cli", "detector.evaluation", "detector.data")),
    ("detector.data", ("detector.lit", "detector.cli", "detector.evaluation", "detector.models")),
])
def test_lower_layers_import_nothing_above_them(library, forbidden):
    bad = sorted((m, t) for m, ts in import_graph().items() if m == library or m.startswith(library + ".")
                 for t in ts if t.startswith(forbidden))
    assert bad == []
