"""Functions a newcomer can read in one screen: none over 60 lines (issue 21).

A function's length is `end_lineno - lineno + 1` of its `def` (decorators not counted, docstring
and nested functions counted), measured with `ast` over every module of the packages below.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
PACKAGES = ("radalign", "services", "schemas", "triton_models")
MAX_LINES = 60
#: (path, qualified name): functions allowed to be longer. Only generated tables or data literals
#: belong here, each with a comment saying why.
EXEMPT: dict[tuple[str, str], str] = {}


def long_functions(source: str, max_lines: int = MAX_LINES) -> list[tuple[str, int, int]]:
    """(qualified name, first line, length) of every function or method longer than `max_lines`."""
    found: list[tuple[str, int, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef) and child.end_lineno is not None:
                    length = child.end_lineno - child.lineno + 1
                    if length > max_lines:
                        found.append((name, child.lineno, length))
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(source), "")
    return found


def _measured() -> dict[tuple[str, str], tuple[int, int]]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            rel = path.relative_to(REPO).as_posix()
            for name, line, length in long_functions(path.read_text(encoding="utf-8")):
                out[(rel, name)] = (line, length)
    return out


def test_no_function_is_longer_than_one_screen():
    too_long = {key: where for key, where in _measured().items() if key not in EXEMPT}
    listing = "\n".join(f"  {path}:{line} {name}: {length} lines" for (path, name), (line, length) in sorted(too_long.items()))
    assert not too_long, f"functions over {MAX_LINES} lines (split them into well-named helpers):\n{listing}"


def test_every_exemption_is_still_needed():
    measured = _measured()
    stale = [f"{path} {name}" for path, name in EXEMPT if (path, name) not in measured]
    assert not stale, f"exempt functions that are no longer over {MAX_LINES} lines (drop them from EXEMPT): {stale}"


def test_the_measure_counts_nested_functions_and_methods():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_LINES))  # def line + 60 = 61 lines
    source = textwrap.dedent(
        """
        def short():
            return 1

        class Holder:
            def method(self):
        {method}

        def outer():
            def inner():
        {inner}
            return inner
        """
    ).format(method=textwrap.indent(body, "    "), inner=textwrap.indent(body, "    "))
    found = {name: length for name, _, length in long_functions(source)}
    assert found == {"Holder.method": MAX_LINES + 1, "outer.inner": MAX_LINES + 1, "outer": MAX_LINES + 3}
