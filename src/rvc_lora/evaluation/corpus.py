"""The evaluation sets: held-out target utterances, parallel source utterances, references."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rvc_lora.audio import find_audio_files
from rvc_lora.utils.errors import RvcLoraError


class EvalError(RvcLoraError, ValueError):
    """Bad evaluation input: the message names the path or key and the fix."""


@dataclass(frozen=True)
class Utterance:
    """One held-out target utterance and, when parallel data exists, the source's utterance of
    the same sentence (same file stem)."""

    name: str
    target: Path
    source: Path | None


def audio_files(folder: str | os.PathLike[str], key: str) -> list[Path]:
    """Audio files under ``folder`` (recursive, sorted).

    Raises:
        EvalError: the folder is missing or has no audio; names the config ``key`` to fix.
    """
    path = Path(folder)
    if not path.is_dir():
        raise EvalError(f"{key}={path}: no such folder; pass {key}=<folder of audio files>")
    files = find_audio_files(path)
    if not files:
        raise EvalError(f"{key}={path}: no audio files in this folder")
    return files


def pair_utterances(
    eval_dir: str | os.PathLike[str], source_dir: str | os.PathLike[str] | None
) -> list[Utterance]:
    """Pair each file of ``eval_dir`` with the same-stem file of ``source_dir``.

    Returns:
        Every eval file, in order; ``source`` is None where no parallel file exists (or when
        ``source_dir`` is None).
    Raises:
        EvalError: a folder is missing or empty, or two eval files share a stem.
    """
    targets = audio_files(eval_dir, "eval_dir")
    stems = [t.stem for t in targets]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise EvalError(
            f"eval_dir={eval_dir}: several files named {duplicates[0]!r} (other extensions or "
            f"subfolders); keep one file per sentence name"
        )
    sources: dict[str, Path] = {}
    if source_dir is not None:
        for path in audio_files(source_dir, "source_dir"):
            sources.setdefault(path.stem, path)
    return [Utterance(t.stem, t, sources.get(t.stem)) for t in targets]
