"""Who made a results file: the command, the date and the machine, stored beside its figures.

Every figure in the README is rendered from a file under ``results/`` (see
:mod:`rvc_lora.report.readme`), and each such file carries this stamp so the README can say
which command produced it, when and where.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rvc_lora.utils.atomic import atomic_write_text


def machine() -> str:
    """CPU cores this process may use, the GPU (or none) and torch's version."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        import torch
    except ImportError:
        return f"{cores} CPU cores"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cores} CPU cores, {gpu}, torch {torch.__version__}"


def stamp(argv: Sequence[str], wall_s: float | None = None) -> dict[str, Any]:
    """The provenance keys of a results file.

    Args:
        argv: the command as run, e.g. ``["python", "scripts/demo.py", "--steps", "200"]``;
            the interpreter's absolute path is written as ``python`` so no machine path ends
            up in the repository.
        wall_s: how long the command took, when it is known.
    """
    args = list(argv)
    if args and (args[0] == sys.executable or Path(args[0]).name.startswith("python")):
        args[0] = "python"
    rec: dict[str, Any] = {
        "command": shlex.join(args),
        "date": dt.datetime.now(dt.timezone.utc).date().isoformat(),
        "machine": machine(),
    }
    if wall_s is not None:
        rec["wall_s"] = round(float(wall_s), 1)
    return rec


def write_json(path: str | os.PathLike[str], record: dict[str, Any]) -> Path:
    """``record`` as indented JSON, written atomically."""
    return atomic_write_text(path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
