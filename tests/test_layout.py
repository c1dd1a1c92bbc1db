"""The package's shape: no import circles, a core without pytest, modules of a readable size."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest_ilp

PACKAGE = Path(pytest_ilp.__file__).resolve().parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_imports() -> dict[str, set[str]]:
    """Each module of the package -> the package's modules it imports, wherever the import
    statement stands (top level, a function, an `if TYPE_CHECKING:` block): a circle through a
    lazy or a type-only import is still a circle in the design."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + is_package]
                    base = ".".join([*anchor, *([base] if base else [])])
                # `from pkg import mod` imports the module pkg.mod when there is one.
                targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
            else:
                continue
            found.update(t for t in targets if t in modules and t != name)
        graph[name] = found
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle (its modules in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_package_has_no_import_circles() -> None:
    graph = package_imports()
    # Parents import their children only through the package's own `__init__`: leave those
    # edges out (`pytest_ilp` -> `pytest_ilp.checks` -> `pytest_ilp.core...` is no circle).
    graph = {
        m: {t for t in targets if not m.startswith(t + ".") and t != "pytest_ilp"}
        for m, targets in graph.items()
    }
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph) or [])


def test_the_circle_finder_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


#: the longest a module may grow: past it, split it by job.
MOST_LINES = 420
#: modules still over it, each awaiting its split (issue 20); listed here so that no other
#: module grows past it meanwhile, and removed as each one is split (the test says when).
NOT_YET_SPLIT: set[str] = set()


def test_no_module_grows_past_the_line_limit() -> None:
    lengths = {
        p.relative_to(PACKAGE.parent).as_posix(): len(p.read_text(encoding="utf-8").splitlines())
        for p in PACKAGE.rglob("*.py")
    }
    too_long = {path for path, lines in lengths.items() if lines > MOST_LINES}
    assert too_long - NOT_YET_SPLIT == set(), "split these by job"
    assert NOT_YET_SPLIT - too_long == set(), "split: take these off NOT_YET_SPLIT"


#: what importing the plugin's entry module may load. pytest imports it on every run of every
#: project that has pytest-ilp installed, checkpoint or not (benchmarks/README.md, "What the
#: installed plugin costs a project that does not use it"): the hook specs and two modules of
#: literals.
ENTRY_MODULES = {
    "pytest_ilp",
    "pytest_ilp.plugin",
    "pytest_ilp.hooks",
    "pytest_ilp.markers",
    "pytest_ilp.config",
    "pytest_ilp.config.option_table",
}

#: the modules each statement loads, in a fresh interpreter, in order.
LOADS = """
import json, sys

def loads(statement):
    before = set(sys.modules)
    exec(statement)
    return sorted(set(sys.modules) - before)

print(json.dumps([loads(s) for s in sys.argv[1:]]))
"""


def test_the_entry_module_loads_no_more_than_its_literals() -> None:
    statements = ["import pytest", "import pytest_ilp.plugin", "import pytest_ilp.config.settings"]
    done = subprocess.run(
        [sys.executable, "-c", LOADS, *statements], capture_output=True, text=True, check=True
    )
    _, entry, settings = json.loads(done.stdout)
    assert {m for m in entry if m.startswith("pytest_ilp")} == ENTRY_MODULES
    others = {m.split(".")[0] for m in entry if not m.startswith(("pytest_ilp", "_"))}
    assert others - set(sys.stdlib_module_names) == set(), "third-party modules"
    # What the entry loaded before its options became literals: the probe sees it.
    assert {"pytest_ilp.core.criteria", "pytest_ilp.config.values"} <= set(settings)
