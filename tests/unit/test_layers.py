"""The package's layers (docs/extending.md): a module imports only from its own folder or from a
lower layer, and no import circle exists between modules, lazy imports included.

The graph is read from the source with `ast`, so it covers imports inside functions too: a lazy
import is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "alloylm"

# From the bottom up; a folder (or top-level module) may import from its own layer's folder and
# from any layer below it, never from a sibling of the same layer or from above.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors"),
    ("atomic", "memory_policy", "hashing", "registry", "resources"),
    ("config",),
    ("data",),
    ("models",),
    ("contract", "lineage", "generation"),
    ("distill", "merge", "train"),
    ("chat",),
    ("evals",),
    ("stages", "analysis"),
    ("pipeline",),
    ("cli",),
)
RANK = {part: rank for rank, parts in enumerate(LAYERS) for part in parts}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """alloylm modules that `path` imports (a `from package import name` of a submodule counts
    as that submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            targets = [target] + [f"{target}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t in modules and t != name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(f) for f in files}
    return {module_name(f): imported_modules(f, modules) for f in files}


def part_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_folder_has_a_layer():
    parts = {part_of(module) for module in import_graph()}
    assert parts <= set(RANK), f"give these a layer in LAYERS: {sorted(parts - set(RANK))}"


def test_no_module_imports_from_a_higher_or_sibling_layer():
    wrong = []
    for module, targets in import_graph().items():
        mine = part_of(module)
        for target in targets:
            theirs = part_of(target)
            if theirs != mine and RANK.get(theirs, -1) >= RANK.get(mine, -1):
                wrong.append(f"{module} -> {target}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_circles():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    circles: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append([*path[path.index(target) :], target])
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


@pytest.mark.parametrize("layer", LAYERS, ids=lambda parts: "+".join(parts))
def test_each_layer_exists(layer):
    # a stale entry would hide a folder that moved
    for part in layer:
        assert (PACKAGE / part).is_dir() or (PACKAGE / f"{part}.py").is_file(), part
