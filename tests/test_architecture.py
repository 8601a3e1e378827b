"""The folders show the architecture: imports run one way, and no file imports itself through others.

Read from the source (``ast``), every ``import`` counted wherever it stands (inside functions and
``TYPE_CHECKING`` blocks too), so a circle cannot hide behind a lazy import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ml_backend", "segmentor", "converters")
# ml_backend's rooms, lowest first: a module may import its own room and the rooms below it, never above.
# The entry points (wsgi, gunicorn_conf, __main__) and the command modules (labels/cli.py) compose the
# service and sit on top of everything.
ML_BACKEND_LAYERS = (
    ("core",),
    ("images", "segmentation"),
    ("labels", "smart_tools"),
    ("model",),
    ("service", "preannotate"),
    ("benchmarks", "demo"),
)
TOP_LEVEL_COMMANDS = {"ml_backend", "ml_backend.__main__", "ml_backend.wsgi", "ml_backend.gunicorn_conf",
                      "ml_backend.labels.cli"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports (``from a.b import c`` counts a.b.c when that is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def import_graph() -> dict[str, set[str]]:
    files = [path for package in PACKAGES for path in (ROOT / package).rglob("*.py")]
    known = {module_name(path) for path in files}
    # Packages' __init__ files only re-export: ``from segmentor import load_model`` is an edge to the
    # module that defines it, which the package's own imports already show.
    packages = {module_name(path) for path in files if path.name == "__init__.py"}
    return {module_name(path): imports_of(path, known) - packages - {module_name(path)}
            for path in files if path.name != "__init__.py"}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of more than one module (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def room_layer(module: str) -> int | None:
    parts = module.split(".")
    if module in TOP_LEVEL_COMMANDS or parts[0] != "ml_backend" or len(parts) < 2:
        return None
    for layer, rooms in enumerate(ML_BACKEND_LAYERS):
        if parts[1] in rooms:
            return layer
    raise AssertionError(f"{module}: not in any room of ML_BACKEND_LAYERS; put it in one (or add the room)")


def test_no_module_imports_itself_through_others() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_sees_a_circle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_ml_backend_rooms_import_only_their_own_room_and_those_below() -> None:
    upward = []
    for module, targets in import_graph().items():
        layer = room_layer(module)
        if layer is None:
            continue
        for target in targets:
            target_layer = room_layer(target)
            if target_layer is not None and target_layer > layer:
                upward.append(f"{module} -> {target}")
    assert upward == []


@pytest.mark.parametrize("package", ["segmentor", "converters"])
def test_the_method_and_the_converters_never_import_the_service(package: str) -> None:
    graph = import_graph()
    offending = sorted(f"{module} -> {target}" for module, targets in graph.items() if module.startswith(package)
                       for target in targets if target.startswith("ml_backend"))
    assert offending == []


def test_converters_never_import_torch() -> None:
    for path in (ROOT / "converters").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                assert not any(name.split(".")[0] == "torch" for name in names), path
