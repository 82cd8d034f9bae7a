"""The import rules of regwatch/ (STYLE.md, habit 10): commands -> collectors -> client, logs, probes, drill
-> config. Read from the source with ast, so a lazy import inside a function counts too."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "regwatch"
LOWER = ("regwatch.logs", "regwatch.probes", "regwatch.drill")
UPPER = ("regwatch.collectors", "regwatch.commands")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every regwatch module ``path`` imports, anywhere in the file (``from regwatch.x import y`` counts
    ``regwatch.x.y`` when that is a module)."""
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("regwatch"))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("regwatch") \
                and node.level == 0:
            found.add(node.module)
            for alias in node.names:
                if (PACKAGE.parent / (node.module + "." + alias.name).replace(".", "/")).with_suffix(".py").exists():
                    found.add(node.module + "." + alias.name)
    return found


def is_type_checking_only(path: Path, module: str) -> bool:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module == module:
                    return True
    return False


@functools.cache
def graph() -> dict[str, frozenset[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges[name] = frozenset(m for m in imports(path) if m in modules and m != name
                                and not is_type_checking_only(path, m))
    return edges


def under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_no_import_cycle_in_regwatch():
    # A package's __init__ importing its own submodules is how a package re-exports; not a cycle of ours.
    edges = {name: {m for m in targets if not m.startswith(name + ".")} for name, targets in graph().items()}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert cycles == []


@pytest.mark.parametrize("lower", LOWER)
def test_lower_layers_never_import_collectors_or_commands(lower):
    upward = {f"{name} -> {m}" for name, targets in graph().items() if under(name, (lower,))
              for m in targets if under(m, UPPER)}
    assert upward == set()


def test_collectors_never_import_commands():
    upward = {f"{name} -> {m}" for name, targets in graph().items() if under(name, ("regwatch.collectors",))
              for m in targets if under(m, ("regwatch.commands",))}
    assert upward == set()


def test_only_the_client_imports_requests():
    users = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(n == "requests" or n.startswith("requests.") for n in names):
                users.add(module_name(path))
    assert users == {"regwatch.client"}


def test_the_walker_sees_lazy_imports(tmp_path):
    """The test itself can fail: an import inside a function is found."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from regwatch.collectors import Collector\n")
    assert "regwatch.collectors" in imports(source)
