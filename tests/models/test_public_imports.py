"""pointset.models reaches the layers only through public names.

Oracle: the import statements themselves (``ast``): no module of ``pointset/models`` imports
a module or a name starting with ``_`` from another subpackage of pointset (private modules
of ``pointset.models`` itself are allowed).
"""

from __future__ import annotations

import ast
from pathlib import Path

MODELS = Path(__file__).resolve().parents[2] / "pointset" / "models"


def _private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
            continue
        parts = node.module.split(".")
        if parts[0] != "pointset" or parts[1:2] == ["models"]:
            continue
        if any(p.startswith("_") for p in parts[1:]):
            found.append(f"{path.name}: from {node.module} import ...")
        found += [
            f"{path.name}: from {node.module} import {a.name}"
            for a in node.names
            if a.name.startswith("_")
        ]
    return found


def test_models_import_no_private_name_of_another_package():
    files = sorted(MODELS.glob("*.py"))
    assert files
    bad = [line for path in files for line in _private_imports(path)]
    assert bad == []
