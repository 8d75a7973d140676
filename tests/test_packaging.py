"""`pip install tokenrelay` (and so `make serve` and the image) installs only the runtime
dependencies: every module the package imports must come from them, and none of the test
tools may be among them."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
TEST_TOOLS = {"pytest", "playwright", "schemathesis", "mypy", "ruff", "openai", "anthropic"}


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_top_modules() -> set[str]:
    """Top-level names of the absolute imports in src/tokenrelay, stdlib left out."""
    found: set[str] = set()
    for path in (ROOT / "src" / "tokenrelay").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - {"tokenrelay", "__future__"}


def runtime_closure() -> set[str]:
    """Every distribution `pip install tokenrelay` brings in, from the installed metadata."""
    todo = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]]
    seen: set[tuple[str, frozenset[str]]] = set()
    names: set[str] = set()
    while todo:
        req = todo.pop()
        key = (_canonical(req.name), frozenset(req.extras))
        if key in seen:
            continue
        seen.add(key)
        names.add(key[0])
        for line in metadata.requires(req.name) or []:
            sub = Requirement(line)
            marker = sub.marker
            wanted = marker is None or any(
                marker.evaluate({"extra": extra}) for extra in (req.extras or {""})
            )
            if wanted:
                todo.append(sub)
    return names


def test_every_module_the_package_imports_comes_with_the_runtime_dependencies() -> None:
    closure = runtime_closure()
    providers = metadata.packages_distributions()
    missing = {
        module: providers.get(module, ["?"])
        for module in imported_top_modules()
        if not any(_canonical(d) in closure for d in providers.get(module, []))
    }
    assert not missing, f"imported but not a runtime dependency: {missing}"


def test_the_test_tools_are_not_runtime_dependencies() -> None:
    leaked = TEST_TOOLS & runtime_closure()
    assert not leaked, f"`pip install tokenrelay` would pull {leaked}"
    dev = {
        _canonical(Requirement(r).name)
        for r in PYPROJECT["project"]["optional-dependencies"]["dev"]
    }
    assert dev >= TEST_TOOLS, "the test tools live in the dev extra (make test installs it)"
