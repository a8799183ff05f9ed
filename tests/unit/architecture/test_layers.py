"""The import graph: no circles, and layers point one way.

- `schemas` (the contracts) imports nothing of the project;
- no two `radalign.*` packages import each other, directly or through others;
- runtime packages never import the dev stack (`radalign.stack`), the test harnesses
  (`radalign.testing`) or the service adapters (`services`);
- training (`radalign.concepts_training.train`) pulls in no database or Kafka client;
- concept serving (`radalign.concepts`) never imports concept training (`radalign.concepts_training`),
  and neither the concept stage nor the Triton model reaches it.

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
#: The concept model's serving face and its training package beside it.
CONCEPT_SERVING = "radalign.concepts"
CONCEPT_TRAINING = "radalign.concepts_training"


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


def package_of(module: str) -> str:
    """`radalign.reports.fhir` -> `radalign.drafting`; a top-level module (`radalign.cli`) is its
    own package, so the shared modules beside the packages take part in the check."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "radalign" and len(parts) > 1 else parts[0]


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The import graph between `radalign.*` packages (an edge per module-level import)."""
    packages: dict[str, set[str]] = {}
    for mod, deps in graph.items():
        if not mod.startswith("radalign"):
            continue
        edges = packages.setdefault(package_of(mod), set())
        for dep in deps:
            if dep.startswith("radalign") and package_of(dep) != package_of(mod):
                edges.add(package_of(dep))
    return {pkg: {d for d in deps if d in packages} for pkg, deps in packages.items()}


def test_the_package_graph_folds_modules_into_packages():
    graph = {"radalign.a.x": {"radalign.b.y"}, "radalign.b.y": {"radalign.a.z"}, "radalign.a.z": set()}
    assert find_cycle(package_graph(graph)) == ["radalign.a", "radalign.b", "radalign.a"]


def test_no_package_cycles():
    """Two packages that import each other (through any path) are one design question: which way
    does the data flow? The message names the packages on the cycle and a module edge of each step."""
    graph = import_graph()
    cycle = find_cycle(package_graph(graph))
    if cycle is None:
        return
    steps = []
    for src, dst in zip(cycle, cycle[1:], strict=False):
        via = next(f"{m} -> {d}" for m in sorted(graph) if package_of(m) == src for d in sorted(graph[m])
                   if package_of(d) == dst)
        steps.append(f"{src} -> {dst} (via {via})")
    raise AssertionError("package cycle: " + " -> ".join(cycle) + "\n" + "\n".join(steps))


#: The packages in the order data flows, gateway to delivery: a package imports only packages of
#: its own or an earlier layer. Shared building blocks first; what drives the whole pipeline (the
#: command line, the dev stack, the demo, test harnesses, benchmarks, evaluation) last.
LAYERS: tuple[frozenset[str], ...] = tuple(frozenset(f"radalign.{name}" for name in layer.split()) for layer in (
    "pipeline config db framework blobstore pseudonymizer text_encoder figures generated samples report_page labeler",
    "ingest", "preprocess", "concepts", "concepts_training sites", "kb", "retrieval", "drafting", "reports", "review", "delivery",
    "evaluation loopback schemas_export deploy cli demo stack testing bench",
))


def upward_imports(graph: dict[str, set[str]], layers: tuple[frozenset[str], ...]) -> list[tuple[str, str]]:
    """Package imports that run against the data flow (a later layer imported by an earlier one)."""
    layer_of = {p: i for i, layer in enumerate(layers) for p in layer}
    return sorted((p, d) for p, deps in graph.items() for d in deps if p in layer_of and d in layer_of and layer_of[d] > layer_of[p])


def test_the_layer_check_finds_an_import_up_the_layers():
    layers = (frozenset({"radalign.a"}), frozenset({"radalign.b"}))
    assert upward_imports({"radalign.a": {"radalign.b"}, "radalign.b": set()}, layers) == [("radalign.a", "radalign.b")]
    assert upward_imports({"radalign.b": {"radalign.a"}, "radalign.a": set()}, layers) == []


def test_packages_import_only_down_the_layers():
    graph = package_graph(import_graph())
    unplaced = set(graph) - {"radalign"} - set().union(*LAYERS)
    assert not unplaced, f"place each new package in LAYERS: {sorted(unplaced)}"
    upward = upward_imports(graph, LAYERS)
    assert not upward, f"imports up the layers (against the data flow): {upward}"


def test_contracts_import_nothing_of_the_project():
    graph = import_graph()
    for mod, deps in graph.items():
        if mod.startswith("schemas"):
            outside = {d for d in deps if d.startswith(("radalign", "services"))}
            assert not outside, f"{mod} imports {sorted(outside)}: the contracts import nothing of the project"


def test_runtime_never_imports_the_dev_stack_or_test_harnesses():
    graph = import_graph()
    for mod, deps in graph.items():
        if mod.startswith(STACK_USERS) or mod.startswith("services"):
            continue
        bad = {d for d in deps if d.startswith(("radalign.stack", "radalign.testing", "services"))}
        assert not bad, f"{mod} imports {sorted(bad)}"


def test_training_pulls_in_no_database_or_kafka_client():
    code = (
        "import sys, radalign.concepts_training.train, radalign.concepts_training.data;"
        "bad = sorted(m for m in ('psycopg', 'psycopg_pool', 'aiokafka', 'faust', 'pynetdicom') if m in sys.modules);"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_shipped_demo_and_stack_import_no_test_harness():
    """`radalign testing` builds on the stack; the demo and the stack ship, so they never import it
    (what they share with the tests lives in `radalign.samples` and `radalign.loopback`)."""
    graph = import_graph()
    for mod, deps in graph.items():
        if mod.startswith(("radalign.demo", "radalign.stack")):
            assert not {d for d in deps if d.startswith("radalign.testing")}, f"{mod} imports {sorted(deps)}"
def _within(package: str, module: str) -> bool:
    """`module` is `package` or one of its submodules ("radalign.concepts_training" is not within
    "radalign.concepts")."""
    return module == package or module.startswith(package + ".")


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """Every module `start` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph.get(todo.pop(), set()) - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_layer_helpers_tell_packages_apart_and_follow_imports():
    assert _within("radalign.concepts", "radalign.concepts.gate") and not _within("radalign.concepts", "radalign.concepts_training.train")
    assert _reachable({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a"}}, "a") == {"b", "c"}


def test_concept_serving_never_imports_concept_training():
    graph = import_graph()
    serving = [m for m in graph if _within(CONCEPT_SERVING, m)]
    assert f"{CONCEPT_SERVING}.inference" in serving and any(_within(CONCEPT_TRAINING, m) for m in graph)
    for mod in serving:
        bad = {d for d in graph[mod] if _within(CONCEPT_TRAINING, d)}
        assert not bad, f"{mod} imports {sorted(bad)}"


def test_the_concept_stage_reaches_no_concept_training():
    graph = import_graph()
    stage = [m for m in graph if _within("services.concepts", m)]
    assert stage
    for mod in stage:
        bad = {d for d in _reachable(graph, mod) if _within(CONCEPT_TRAINING, d)}
        assert not bad, f"{mod} reaches {sorted(bad)}"


def test_the_triton_models_import_no_concept_training():
    """Triton's python backend loads `1/model.py` on its own (outside the packages scanned above)."""
    models = sorted(REPO.glob("triton_models/*/1/model.py"))
    assert models
    for path in models:
        names: set[str] = set()
        for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
        bad = {n for n in names if _within(CONCEPT_TRAINING, n)}
        assert not bad, f"{path.relative_to(REPO)} imports {sorted(bad)}"
