"""The import graph: no circles, and layers point one way.

- `schemas` (the contracts) imports nothing of the project;
- runtime packages never import the dev stack (`radalign.stack`), the test harnesses
  (`radalign.testing`) or the service adapters (`services`);
- training (`radalign.concepts.train`) pulls in no database or Kafka client.

Imports inside functions count too: a lazy import that hides a circle is still a circle. Imports
under `if TYPE_CHECKING:` do not: they never run.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PACKAGES = ("radalign", "schemas", "services")
#: Code that may import the dev stack: the CLI entry point, the stack itself, the demo, the
#: harnesses, and the adapters' runner.
# radalign.bench drives a private dev stack and the stages' own code, as the demo does (dev-only).
STACK_USERS = ("radalign.cli", "radalign.stack", "radalign.demo", "radalign.testing", "radalign.bench")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an import names (a `from pkg import mod` may name a submodule)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except what sits under `if TYPE_CHECKING:`."""
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", None)) == "TYPE_CHECKING":
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    return [n for n in ast.walk(tree) if id(n) not in skip]


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, path in modules.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" for a in node.names] + [base]
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved and resolved != mod and not mod.startswith(resolved + "."):
                    graph[mod].add(resolved)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_circles():
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle or [])


def test_contracts_import_nothing_of_the_runtime():
    graph = import_graph()
    for mod, deps in graph.items():
        if mod.startswith("schemas") and mod != "schemas.export":
            assert not {d for d in deps if not d.startswith("schemas")}, f"{mod} imports {deps}"


def test_runtime_never_imports_the_dev_stack_or_test_harnesses():
    graph = import_graph()
    for mod, deps in graph.items():
        if mod.startswith(STACK_USERS) or mod.startswith("services"):
            continue
        bad = {d for d in deps if d.startswith(("radalign.stack", "radalign.testing", "services"))}
        assert not bad, f"{mod} imports {sorted(bad)}"


def test_training_pulls_in_no_database_or_kafka_client():
    code = (
        "import sys, radalign.concepts.train, radalign.concepts.data;"
        "bad = sorted(m for m in ('psycopg', 'psycopg_pool', 'aiokafka', 'faust', 'pynetdicom') if m in sys.modules);"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
