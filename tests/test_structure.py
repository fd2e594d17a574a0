"""The package's shape: no module imports itself back through others."""

from __future__ import annotations

import ast
from pathlib import Path

import lightning_convviz

PACKAGE = Path(lightning_convviz.__file__).parent


def _module_name(path: Path) -> str:
    parts = ("lightning_convviz", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Each module's imports of the package's modules (type-only imports too), without the
    edges from a package to its own submodules (its ``__init__`` re-exports them)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            graph[name] |= {
                t for t in targets if t in modules and t != name and not t.startswith(name + ".")
            }
    return graph


def test_no_circle_of_imports() -> None:
    graph = _imports()
    assert len(graph) > 50 and "lightning_convviz.callbacks.base" in graph
    circles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for imported in sorted(graph[module]):
            if state.get(imported) == 1:
                circles.append([*path[path.index(imported) :], imported])
            elif imported not in state:
                visit(imported, [*path, imported])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []
