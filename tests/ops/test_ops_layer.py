"""detector.ops is the bottom layer: it imports nothing else of the project (so the variant
table can be read by models, evaluation, analysis and the ablation without an import cycle)."""

import ast
from pathlib import Path

OPS = Path(__file__).resolve().parents[2] / "detector" / "ops"


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_ops_imports_no_other_detector_package():
    outside = {
        f"{path.name}: {name}"
        for path in OPS.glob("*.py")
        for name in _imports(path)
        if (name == "detector" or name.startswith("detector.")) and not name.startswith("detector.ops")
    }
    assert outside == set()
