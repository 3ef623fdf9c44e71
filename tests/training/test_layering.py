"""The training package's imports read one way: no module imports one that imports it back.

Every import counts: top level, inside functions, and under ``TYPE_CHECKING`` (a cycle there is
still two files that each need the other to be understood).
"""

from __future__ import annotations

import ast
from pathlib import Path

import rvc_lora

PACKAGE = Path(rvc_lora.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_in(source: str, module: str, is_package: bool = False) -> set[str]:
    """Dotted names the code of ``module`` imports (``from x import y`` gives ``x`` and
    ``x.y``; relative imports resolved)."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join([*base, *([node.module] if node.module else [])])
            names.add(target)
            names.update(f"{target}.{a.name}" for a in node.names)
    return names


def imports_of(path: Path) -> set[str]:
    return imports_in(path.read_text(encoding="utf-8"), _module_name(path), path.stem == "__init__")


def import_graph(subpackage: str) -> dict[str, set[str]]:
    """``module -> modules of the same subpackage it imports``."""
    files = {_module_name(p): p for p in (PACKAGE / subpackage).rglob("*.py")}
    return {name: imports_of(path) & set(files) - {name} for name, path in files.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import cycle once, as the path that closes it (``[a, b, a]``)."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def walk(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                loop = path[path.index(nxt) :]
                if frozenset(loop) not in seen:
                    seen.add(frozenset(loop))
                    found.append([*loop, nxt])
            else:
                walk(nxt, [*path, nxt])

    for start in sorted(graph):
        walk(start, [start])
    return found


def test_the_cycle_finder_finds_cycles_of_any_length() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e2"}, "e2": {"e"}}
    assert cycles(graph) == [["a", "b", "c", "a"], ["e", "e2", "e"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_imports_under_type_checking_in_functions_and_relative_ones_count() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from rvc_lora.training.module import VoiceConversionModule\n"
        "def f():\n    import rvc_lora.training.losses\n"
        "from .quality import ValQuality\nfrom . import media\n"
    )
    found = imports_in(source, "rvc_lora.training.callbacks")
    assert {
        "rvc_lora.training.module",
        "rvc_lora.training.losses",
        "rvc_lora.training.quality",
        "rvc_lora.training.media",
    } <= found
    assert "rvc_lora.training.media.log_media" in imports_of(PACKAGE / "training" / "module.py")


def test_training_has_no_import_cycle() -> None:
    graph = import_graph("training")
    assert {"rvc_lora.training.module", "rvc_lora.training.callbacks"} <= set(graph)
    assert cycles(graph) == []
    # The direction the layers read: module uses media; callbacks see the module via a Protocol.
    assert "rvc_lora.training.module" not in graph["rvc_lora.training.callbacks"]
