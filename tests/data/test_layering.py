"""Lower layers never import the data layer: audio I/O lives on the floor (rvc_lora.audio)."""

from __future__ import annotations

import ast
from pathlib import Path

import rvc_lora

PACKAGE = Path(rvc_lora.__file__).parent
LOWER = ["features", "models", "lora", "metrics", "spectral.py", "audio.py"]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_lower_layers_do_not_import_data() -> None:
    files = [
        f
        for part in LOWER
        for f in ([PACKAGE / part] if part.endswith(".py") else (PACKAGE / part).rglob("*.py"))
    ]
    assert len(files) > 20  # the walk found the packages
    offenders = {
        f.relative_to(PACKAGE).as_posix(): sorted(
            m for m in _imports(f) if m == "rvc_lora.data" or m.startswith("rvc_lora.data.")
        )
        for f in files
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_nobody_reaches_into_data_for_audio_io() -> None:
    users = [
        f.relative_to(PACKAGE).as_posix()
        for f in PACKAGE.rglob("*.py")
        if not f.is_relative_to(PACKAGE / "data") and "rvc_lora.data.audio" in _imports(f)
    ]
    assert users == []
