"""The package reads one way: each layer imports only from the layers below it (or its own),
and no module imports itself round a cycle (imports inside functions included: a lazy import
still ties the two layers together)."""

from __future__ import annotations

import ast
from pathlib import Path

import rvc_lora

PACKAGE = Path(rvc_lora.__file__).parent

# Lowest first. A package may import its own layer and any layer below it.
LAYERS: list[set[str]] = [
    {"utils", "download_catalog"},
    {"audio", "spectral", "download", "download_wheel"},
    {"models", "features"},
    {"lora", "metrics"},
    {"data"},
    {"training"},
    {"inference", "evaluation"},
    {"report", "cli", "__init__"},
]
RANK = {name: i for i, layer in enumerate(LAYERS) for name in layer}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every rvc_lora module ``path`` imports (``from a import b`` counts ``a.b`` when that is a
    module, else ``a``)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n == "rvc_lora" or n.startswith("rvc_lora.")}


def _graph() -> dict[str, set[str]]:
    files = {_module_name(f): f for f in PACKAGE.rglob("*.py")}
    return {m: {n for n in _imports(f) if n in files and n != m} for m, f in files.items()}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_package_has_a_layer() -> None:
    packages = {_layer(m) for m in _graph()}
    assert len(packages) > 10  # the walk found the package
    assert packages - RANK.keys() == set()


def test_no_layer_imports_a_higher_one() -> None:
    upward = sorted(
        f"{m} -> {n}"
        for m, deps in _graph().items()
        for n in deps
        if RANK[_layer(n)] > RANK[_layer(m)]
    )
    assert upward == []


def test_no_import_cycles() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycles.append(path[path.index(n) :] + [n])
            elif n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    # Package __init__ files that re-export their own submodules are not cycles of behaviour.
    real = [
        c
        for c in cycles
        if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:]))
    ]
    assert real == []
