"""Imports point one way (docs/architecture.md): a module may import its own package and the tiers below it.

    cli → serve → sweep, jobs → train / eval / export / infer / registry.api → stages, methods → data, models →
    registry, config → utils

(sweep, not in the architecture diagram, runs training and evaluation, so it sits above them, beside jobs.)

Packages in one tier may import each other (data and models do, for tokenizers and chat templates). Every import
counts, also those inside functions: a lazy import is still a dependency. Sources are parsed with `ast`, nothing is
imported.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

SRC = Path(importlib.util.find_spec("tuneforge").origin).parent

TIERS = {
    "utils": 0,
    "config": 1, "registry": 1,
    "data": 2, "models": 2,
    "stages": 3, "methods": 3,
    "train": 4, "eval": 4, "export": 4, "infer": 4,
    "sweep": 5, "jobs": 5, "synth": 5,
    "serve": 6, "ui": 6,
    "cli": 7,
}
# Single modules that sit in another tier than their package.
MODULE_TIERS = {
    "tuneforge.registry.api": 4,  # the registry's user-facing API ("registry-api" in the architecture diagram)
}

# Imports that break the rule today, (importing module, imported package). Each is a bug in a file owned elsewhere;
# remove its entry when it is fixed. The test fails on any violation not listed here, and on entries that no longer
# occur (so the list only shrinks).
KNOWN_EXCEPTIONS: set[tuple[str, str]] = set()


def module_name(path: Path, root: Path = SRC) -> str:
    """Dotted name of a source file under `root` (the `tuneforge` package folder)."""
    parts = ["tuneforge", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path = SRC) -> set[str]:
    """Every tuneforge module `path` imports, at module level or inside functions; relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    name = module_name(path, root)
    package = name if path.stem == "__init__" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
    return {m for m in found if m == "tuneforge" or m.startswith("tuneforge.")}


def tier(module: str) -> int | None:
    """The tier of a tuneforge module; None for the top-level package (`tuneforge`, `tuneforge.__main__`)."""
    for name, t in MODULE_TIERS.items():
        if module == name or module.startswith(name + "."):
            return t
    parts = module.split(".")
    return TIERS.get(parts[1]) if len(parts) > 1 else None


def violations(root: Path = SRC) -> set[tuple[str, str]]:
    """(importing module, imported package) for every import of a higher tier than the importer's own."""
    found = set()
    for path in sorted(root.rglob("*.py")):
        importer = module_name(path, root)
        own = tier(importer)
        if own is None:
            continue
        for target in imported_modules(path, root):
            theirs = tier(target)
            same_package = target.split(".")[:2] == importer.split(".")[:2]
            if theirs is not None and theirs > own and not same_package:
                found.add((importer, ".".join(target.split(".")[:2])))
    return found


def test_every_package_has_a_tier():
    packages = {p.name for p in SRC.iterdir() if (p / "__init__.py").is_file()}
    assert packages == set(TIERS), f"give these packages a tier in TIERS: {sorted(packages ^ set(TIERS))}"


def test_imports_point_down():
    found = violations()
    new = sorted(found - KNOWN_EXCEPTIONS)
    assert not new, "imports against the layering (importer, imported):\n" + "\n".join(map(str, new))
    fixed = sorted(KNOWN_EXCEPTIONS - found)
    assert not fixed, f"fixed; remove from KNOWN_EXCEPTIONS: {fixed}"


def test_data_imports_nothing_above_it():
    """The rule the data layer relies on, spelled out: no train, stages, eval or cli (lazy imports included)."""
    for path in sorted((SRC / "data").rglob("*.py")):
        bad = {m for m in imported_modules(path)
               if m.split(".")[1:2] and m.split(".")[1] in {"train", "stages", "eval", "cli", "export", "infer"}}
        assert not bad, f"{path.relative_to(SRC.parent)} imports {sorted(bad)}"


def test_utils_imports_nothing_from_tuneforge_outside_utils():
    for path in sorted((SRC / "utils").rglob("*.py")):
        outside = {m for m in imported_modules(path) if not m.startswith("tuneforge.utils")}
        assert not outside, f"{path.relative_to(SRC.parent)} imports {sorted(outside)}"


def test_the_walk_sees_lazy_and_relative_imports(tmp_path):
    pkg = tmp_path / "tuneforge" / "data"
    pkg.mkdir(parents=True)
    (tmp_path / "tuneforge" / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "bad.py").write_text("def f():\n    from tuneforge.train import runner\n    from ..stages import x\n")
    (pkg / "fine.py").write_text("from tuneforge.utils import io\nfrom . import bad\nimport tuneforge.models.load\n")
    assert violations(tmp_path / "tuneforge") == {("tuneforge.data.bad", "tuneforge.train"),
                                                  ("tuneforge.data.bad", "tuneforge.stages")}
