"""``pitch=auto``: transpose the source onto the voice's typical pitch.

Training records the voice's median F0 (Hz, over the voiced frames of its cached F0) as
``voice_f0_median_hz`` in the run dir's ``run_info.json``. At conversion time the shift is
``round(12 * log2(voice_median / source_median))`` semitones, clipped to ±24, where the source's
median comes from the F0 track the pipeline computes anyway.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from rvc_lora.utils.errors import RvcLoraError

RUN_INFO = "run_info.json"
MEDIAN_KEY = "voice_f0_median_hz"
MAX_AUTO_SHIFT = 24  # semitones: two octaves either way covers any speaker pair


class AutoPitchError(RvcLoraError, ValueError):
    """``pitch=auto`` cannot be used: the voice's median F0 is unknown."""


def auto_pitch_shift(
    voice_median_hz: float, source_median_hz: float, limit: int = MAX_AUTO_SHIFT
) -> int:
    """Semitones that move ``source_median_hz`` onto ``voice_median_hz``, clipped to ±limit.

    ``round(12 * log2(voice / source))``: a 100 Hz source into a 200 Hz voice gives +12.
    """
    for name, value in (("voice", voice_median_hz), ("source", source_median_hz)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} median F0 must be a positive number of Hz, got {value}")
    shift = round(12.0 * math.log2(voice_median_hz / source_median_hz))
    return int(max(-limit, min(limit, shift)))


def recorded_voice_median(ckpt: str | os.PathLike[str]) -> float | None:
    """``voice_f0_median_hz`` from the ``run_info.json`` of the run ``ckpt`` belongs to.

    Looks next to the file and one folder up (``<run>/checkpoints/x.ckpt``). None when there
    is no run_info.json (an RVC ``.pth``) or it predates the key.
    """
    path = Path(ckpt)
    for folder in (path.parent, path.parent.parent):
        info_path = folder / RUN_INFO
        if info_path.is_file():
            try:
                value = json.loads(info_path.read_text(encoding="utf-8")).get(MEDIAN_KEY)
            except (OSError, ValueError, AttributeError):
                return None
            return float(value) if isinstance(value, (int, float)) and value > 0 else None
    return None


def require_voice_median(ckpt: str | os.PathLike[str]) -> float:
    """:func:`recorded_voice_median`, or a one-line :class:`AutoPitchError` naming the fix."""
    value = recorded_voice_median(ckpt)
    if value is None:
        raise AutoPitchError(
            f"{ckpt}: pitch=auto needs the voice's median F0 ({MEDIAN_KEY} in the run's "
            f"{RUN_INFO}), which this voice does not record (an RVC .pth or a run trained "
            f"before it was recorded); pass pitch=N (semitones) instead"
        )
    return value


def parse_pitch(value: object) -> float | str:
    """A ``pitch`` option: a number of semitones, or the string ``"auto"``."""
    if isinstance(value, str):
        if value.strip().lower() == "auto":
            return "auto"
        try:
            return float(value)
        except ValueError:
            pass
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise AutoPitchError(f"pitch={value!r}: pass a number of semitones (e.g. 12, -5) or auto")
