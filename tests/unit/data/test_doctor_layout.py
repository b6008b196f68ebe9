"""The dataset doctor package: imports point one way (no cycle) and every module imports on its own."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "tuneforge.data.doctor"
PACKAGE_DIR = Path(importlib.util.find_spec(PACKAGE).origin).parent
MODULES = sorted(p.stem for p in PACKAGE_DIR.glob("*.py") if p.stem != "__init__")


def _doctor_imports(module: str) -> set[str]:
    """Sibling doctor modules that `module` imports anywhere in its source (function-level imports included)."""
    tree = ast.parse((PACKAGE_DIR / f"{module}.py").read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found |= {n.rsplit(".", 1)[1] for n in names if n.startswith(PACKAGE + ".")}
    return found & set(MODULES)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as a path [a, b, ..., a], or None."""
    state: dict[str, str] = {}

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = "open"
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                return path[path.index(dep):] + [dep]
            if dep not in state and (found := visit(dep, path + [dep])):
                return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_cycle_finder_sees_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_doctor_imports_have_no_cycle():
    graph = {m: _doctor_imports(m) for m in MODULES}
    assert graph["check"] >= {"content", "duplicates", "lengths", "distribution", "result"}  # the walk sees imports
    assert _cycle(graph) is None, f"import cycle in {PACKAGE}: {' -> '.join(_cycle(graph))}"


def test_the_old_stdlib_shadowing_modules_are_gone():
    data_dir = PACKAGE_DIR.parent
    assert not list(data_dir.glob("inspect*.py")), "tuneforge.data.inspect* was replaced by tuneforge.data.doctor"


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_alone(module):
    proc = subprocess.run([sys.executable, "-c", f"import {PACKAGE}.{module}"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def _writes_and_plots(module: str) -> list[str]:
    """Direct file writes and matplotlib use in `module` (what tuneforge.utils.io / utils.plots are for)."""
    tree = ast.parse((PACKAGE_DIR / f"{module}.py").read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            found += [f"imports {n}" for n in names if n.split(".")[0] == "matplotlib"]
        elif isinstance(node, ast.Attribute) and node.attr in {"write_text", "write_bytes", "savefig", "dump"}:
            found.append(f".{node.attr}")
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open":
            modes = [a.value for a in node.args[1:2] if isinstance(a, ast.Constant)]
            found += [f"open(..., {m!r})" for m in modes if set(m) & set("wxa")]
    return found


@pytest.mark.parametrize("module", MODULES)
def test_doctor_writes_and_plots_through_the_shared_helpers(module):
    assert _writes_and_plots(module) == [], "use tuneforge.utils.io (atomic_write_*) and tuneforge.utils.plots.figure"
