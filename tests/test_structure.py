"""Structure of the package, read from the code's syntax tree.

Two rules of the design hold for every module under ``pointset/``:

- a module never imports another package's private name: neither a private module inside
  another subpackage (``pointset.ops._backend``) nor a ``_name`` defined there. Shared
  internals live in top-level neutral modules (``pointset/_checks.py``, ``pointset/_files.py``),
  whose public names anyone may import; within one subpackage anything goes;
- the modules of ``pointset/data`` import one another without a circle. Imports deferred
  into a function body count too: a lazy import still ties the two modules together.

Oracle: the AST of the source files (``ast.parse``), resolved by the import rules of the
language; the self-tests run the same scanner on small synthetic sources with known answers.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "pointset"

#: Source of each module: dotted name -> (source text, whether it is a package ``__init__``).
Sources = Mapping[str, "tuple[str, bool]"]


@dataclass(frozen=True)
class ImportRef:
    """One ``import`` statement of a module, resolved to absolute dotted names."""

    importer: str
    line: int
    target: str  # the module named after ``from`` / ``import``
    names: tuple[str, ...]  # names of a ``from`` import; empty for ``import target``
    type_only: bool  # inside ``if TYPE_CHECKING:``


def read_package(root: Path = PACKAGE_DIR) -> dict[str, tuple[str, bool]]:
    """Every module under ``root`` as ``{dotted name: (source, is_package)}``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        out[".".join(parts)] = (path.read_text(encoding="utf-8"), is_package)
    return out


def _resolve(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """Absolute module of ``from <level dots><module> import ...`` written in ``importer``."""
    if level == 0:
        return module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(importer: str, source: str, is_package: bool) -> list[ImportRef]:
    """All imports of one module, at module level and deferred into functions."""
    refs: list[ImportRef] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    refs.append(ImportRef(importer, child.lineno, alias.name, (), type_only))
            elif isinstance(child, ast.ImportFrom):
                target = _resolve(importer, is_package, child.level, child.module)
                names = tuple(alias.name for alias in child.names)
                refs.append(ImportRef(importer, child.lineno, target, names, type_only))
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                for stmt in child.body:
                    visit(ast.Module(body=[stmt], type_ignores=[]), True)
                for stmt in child.orelse:
                    visit(ast.Module(body=[stmt], type_ignores=[]), type_only)
            else:
                visit(child, type_only)

    visit(ast.parse(source, filename=importer), False)
    return refs


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _owner(dotted: str) -> str:
    """The part of pointset a module belongs to: its subpackage or top-level module."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def private_imports(sources: Sources, root: str = "pointset") -> list[str]:
    """Imports of another package's private module or name, as ``importer:line: what``."""
    offences = []
    for importer, (source, is_package) in sources.items():
        for ref in imports_of(importer, source, is_package):
            if ref.target != root and not ref.target.startswith(root + "."):
                continue
            if _owner(ref.target) == _owner(importer):
                continue
            # pointset.<x>: a private top-level <x> is a neutral module, open to all.
            inner = ref.target.split(".")[2:]
            bad = [ref.target] if any(_private(p) for p in inner) else []
            for name in ref.names:
                top_level_module = ref.target == root
                if _private(name) and not top_level_module:
                    bad.append(f"{ref.target}.{name}")
            offences += [f"{importer}:{ref.line}: {what}" for what in bad]
    return sorted(offences)


def import_graph(sources: Sources, within: str) -> dict[str, set[str]]:
    """Runtime import edges among the modules under ``within`` (a dotted package)."""
    nodes = {m for m in sources if m == within or m.startswith(within + ".")}
    graph: dict[str, set[str]] = {m: set() for m in nodes}
    for importer in nodes:
        source, is_package = sources[importer]
        for ref in imports_of(importer, source, is_package):
            if ref.type_only:
                continue
            targets = [
                f"{ref.target}.{n}" if f"{ref.target}.{n}" in nodes else ref.target
                for n in ref.names
            ] or [ref.target]
            graph[importer] |= {t for t in targets if t in nodes and t != importer}
    return graph


def cycles(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return sorted(found)


# -- the rules on pointset ------------------------------------------------------------------


def test_no_module_imports_another_packages_private_name():
    """Oracle: the AST of every module under pointset/ (see the module docstring)."""
    offences = private_imports(read_package())
    assert not offences, "imports of another package's private name:\n" + "\n".join(offences)


def test_no_import_circle_in_data():
    """Oracle: the AST of pointset/data; strongly connected components of its import graph."""
    found = cycles(import_graph(read_package(), "pointset.data"))
    assert not found, "import circles in pointset/data: " + "; ".join(
        " <-> ".join(c) for c in found
    )


def test_scanner_sees_the_package():
    """Oracle: the file tree: the scan covers known modules and finds their imports."""
    sources = read_package()
    assert {"pointset", "pointset.data.point_set", "pointset.engine.trainer"} <= set(sources)
    graph = import_graph(sources, "pointset.data")
    assert "pointset.data.point_set" in graph["pointset.data.image"]


# -- the scanner on synthetic sources (hand-written expected answers) -----------------------


def _synthetic(**modules: str) -> dict[str, tuple[str, bool]]:
    """``a__b="src"`` -> ``{"pkg.a.b": (src, False)}``; a trailing ``__init`` marks a package."""
    out = {}
    for key, source in modules.items():
        parts = key.split("__")
        is_package = parts[-1] == "init"
        if is_package:
            parts.pop()
        out[".".join(["pkg", *parts])] = (source, is_package)
    return out


def test_scanner_flags_private_imports_of_other_packages():
    """Oracle: hand-classified import lines; every spelling of a foreign private import."""
    sources = _synthetic(
        a__init="from ._x import y\n",  # own package: allowed
        a__m=(
            "from pkg.b._impl import f\n"  # line 1: private module of b
            "from pkg.b.mod import _g, h\n"  # line 2: private name of b
            "import pkg.b._impl\n"  # line 3: private module of b
            "from ..b import _impl\n"  # line 4: relative, private module as a name
            "from .._neutral import tool\n"  # line 5: neutral top-level module
            "from .. import _neutral\n"  # line 6: neutral top-level module as a name
            "from pkg.b.mod import __version__\n"  # line 7: dunder, public
            "def f():\n"
            "    from ..b.mod import _lazy\n"  # line 9: deferred, still counts
            "from ._own import z\n"  # line 10: own package
        ),
        viz="from .b.mod import _h\n",  # top-level module importing b's private name
        b__mod="from ..a._x import y\n",
    )
    got = private_imports(sources, root="pkg")
    assert got == [
        "pkg.a.m:1: pkg.b._impl",
        "pkg.a.m:2: pkg.b.mod._g",
        "pkg.a.m:3: pkg.b._impl",
        "pkg.a.m:4: pkg.b._impl",
        "pkg.a.m:9: pkg.b.mod._lazy",
        "pkg.b.mod:1: pkg.a._x",
        "pkg.viz:1: pkg.b.mod._h",
    ]


def test_scanner_finds_import_circles():
    """Oracle: hand-drawn graphs: a 3-cycle through a deferred import, a clean chain."""
    sources = _synthetic(
        d__init="from .core import C\nfrom .conv import f\n",
        d__core="def to_x():\n    from .conv import f\n",  # deferred edge core -> conv
        d__conv="from .util import u\n",
        d__util="from . import core\n",  # util -> core closes the circle
        d__leaf="from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .core import C\n",
    )
    graph = import_graph(sources, "pkg.d")
    assert graph["pkg.d.util"] == {"pkg.d.core"}
    assert graph["pkg.d.leaf"] == set()  # type-only imports do not run
    assert cycles(graph) == [["pkg.d.conv", "pkg.d.core", "pkg.d.util"]]
    clean = dict(sources, **_synthetic(d__util="import math\n"))
    assert cycles(import_graph(clean, "pkg.d")) == []
