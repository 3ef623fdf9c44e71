"""F0 tracks at RVC's frame rate (16 kHz audio, hop 160 = 10 ms) with RVC's parameters.

One entry point, :func:`compute_f0`, for every method (RVC_FACTS.md §7.3):

- ``pm``: Praat autocorrelation (parselmouth), zero-padded centrally to ``p_len`` as RVC does;
- ``harvest``: WORLD harvest + stonemask; a 3-tap median filter when ``filter_radius > 2``
  (RVC applies it at inference only: pass ``filter_radius=0`` to reproduce training files);
- ``dio``: WORLD dio + stonemask (RVC offers it for training);
- ``rmvpe``: the RMVPE network (:mod:`rvc_lora.features.rmvpe`), threshold 0.03;
- ``fcpe``: the FCPE network (:mod:`rvc_lora.features.fcpe`), threshold 0.006; frames below
  ``f0_min`` are unvoiced and those above ``f0_max`` clamped, as RVC and Applio call it.

parselmouth and pyworld are imported only when their method is used.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.signal import medfilt

from rvc_lora.features.rmvpe import DEFAULT_THRESHOLD, HOP_LENGTH, RMVPE, SAMPLE_RATE
from rvc_lora.utils.errors import CheckpointError

if TYPE_CHECKING:
    import torch

    from rvc_lora.features.fcpe import FCPE

log = logging.getLogger(__name__)

F0Fn = Callable[..., np.ndarray]


def _import(module: str, package: str) -> ModuleType:
    try:
        with warnings.catch_warnings():
            # pyworld 0.3.x imports pkg_resources at import time, which warns on setuptools>=70.
            warnings.simplefilter("ignore", UserWarning)
            return __import__(module)
    except ImportError:
        raise ImportError(
            f"F0 method needs the '{package}' package: pip install {package}"
        ) from None


def _fit_right(f0: np.ndarray, p_len: int) -> np.ndarray:
    """Trim the tail or zero-pad on the right to ``p_len`` frames."""
    f0 = f0[:p_len]
    return np.pad(f0, (0, p_len - len(f0)))


def _fit_center(f0: np.ndarray, p_len: int) -> np.ndarray:
    """RVC's pm alignment: ``(p_len - len + 1) // 2`` zeros on the left, the rest on the right."""
    if len(f0) > p_len:  # never happens with pm's frame count; trim symmetrically to be safe
        start = (len(f0) - p_len) // 2
        return f0[start : start + p_len]
    left = (p_len - len(f0) + 1) // 2
    return np.pad(f0, (left, p_len - len(f0) - left))


def f0_pm(x: np.ndarray, *, p_len: int, f0_min: float, f0_max: float, **_: object) -> np.ndarray:
    """Praat ``to_pitch_ac`` (time step 10 ms, voicing threshold 0.6)."""
    if len(x) < 3 * SAMPLE_RATE / f0_min:  # Praat needs 3 periods of the floor pitch per window
        return np.zeros(p_len)
    parselmouth = _import("parselmouth", "praat-parselmouth")
    pitch = parselmouth.Sound(x, SAMPLE_RATE).to_pitch_ac(
        time_step=HOP_LENGTH / SAMPLE_RATE,
        voicing_threshold=0.6,
        pitch_floor=f0_min,
        pitch_ceiling=f0_max,
    )
    return _fit_center(pitch.selected_array["frequency"], p_len)


def _world(kind: str, x: np.ndarray, f0_min: float, f0_max: float) -> np.ndarray:
    pyworld = _import("pyworld", "pyworld")
    track = getattr(pyworld, kind)
    f0, t = track(
        x,
        fs=SAMPLE_RATE,
        f0_floor=f0_min,
        f0_ceil=f0_max,
        frame_period=1000 * HOP_LENGTH / SAMPLE_RATE,
    )
    return pyworld.stonemask(x, f0, t, SAMPLE_RATE)


def f0_harvest(
    x: np.ndarray, *, p_len: int, f0_min: float, f0_max: float, filter_radius: int = 3, **_: object
) -> np.ndarray:
    """WORLD harvest + stonemask; 3-tap median filter if ``filter_radius > 2`` (as RVC)."""
    f0 = _world("harvest", x, f0_min, f0_max)
    if filter_radius > 2:
        f0 = medfilt(f0, 3)  # RVC's kernel is always 3; the radius only switches it on
    return _fit_right(f0, p_len)


def f0_dio(x: np.ndarray, *, p_len: int, f0_min: float, f0_max: float, **_: object) -> np.ndarray:
    """WORLD dio + stonemask."""
    return _fit_right(_world("dio", x, f0_min, f0_max), p_len)


def _require_rmvpe(rmvpe: RMVPE | None) -> RMVPE:
    if rmvpe is None:
        raise ValueError(
            "f0 method 'rmvpe' needs a loaded model: pass rmvpe=load_rmvpe(path) "
            "(rvc_lora.features.rmvpe). The weights are RVC's rmvpe.pt from the Hugging Face "
            "repo lj1995/VoiceConversionWebUI"
        )
    return rmvpe


def f0_rmvpe(x: np.ndarray, *, p_len: int, rmvpe: RMVPE | None = None, **_: object) -> np.ndarray:
    """RMVPE (ignores f0_min/f0_max, as RVC). Returns N//160 + 1 frames, fitted to ``p_len``."""
    rmvpe = _require_rmvpe(rmvpe)
    return _fit_right(rmvpe.infer_from_audio(x.astype(np.float32), thred=DEFAULT_THRESHOLD), p_len)


def _require_fcpe(fcpe: FCPE | None) -> FCPE:
    if fcpe is None:
        raise ValueError(
            "f0 method 'fcpe' needs a loaded model: pass fcpe=load_fcpe(path) "
            "(rvc_lora.features.fcpe); `rvc-lora download fcpe` gets models/fcpe_c_v001.pt"
        )
    return fcpe


def fcpe_range(f0: np.ndarray, f0_min: float, f0_max: float) -> np.ndarray:
    """FCPE's post-processing: below ``f0_min`` is unvoiced (0), above ``f0_max`` clamped."""
    f0 = np.where(f0 < f0_min, 0.0, f0)
    return np.minimum(f0, f0_max)


def f0_fcpe(
    x: np.ndarray,
    *,
    p_len: int,
    f0_min: float,
    f0_max: float,
    fcpe: FCPE | None = None,
    **_: object,
) -> np.ndarray:
    """FCPE: ``N//160 + 1`` frames, range-limited, fitted to ``p_len`` (the tail trimmed)."""
    f0 = _require_fcpe(fcpe).infer(x.astype(np.float32))
    return _fit_right(fcpe_range(f0, f0_min, f0_max), p_len)


F0_METHODS: dict[str, F0Fn] = {
    "pm": f0_pm,
    "harvest": f0_harvest,
    "dio": f0_dio,
    "rmvpe": f0_rmvpe,
    "fcpe": f0_fcpe,
}
# Methods that run a network, loaded once in the main process (never in preparation workers).
NETWORK_METHODS = ("rmvpe", "fcpe")
# features.f0_method that picks a network by which weights exist (:func:`resolve_f0_method`).
AUTO = "auto"


def compute_f0(
    wav16k: np.ndarray,
    method: str,
    *,
    p_len: int | None = None,
    f0_min: float = 50.0,
    f0_max: float = 1100.0,
    rmvpe: RMVPE | None = None,
    filter_radius: int = 3,
    fcpe: FCPE | None = None,
) -> np.ndarray:
    """F0 of mono 16 kHz audio, one value per 10 ms frame.

    Args:
        wav16k: ``[N]`` float audio in [-1, 1] at 16 kHz.
        method: one of :data:`F0_METHODS` (``pm``, ``harvest``, ``dio``, ``rmvpe``, ``fcpe``).
        p_len: frames to return; default ``N // 160`` (RVC's p_len). Shorter tracks are
            zero-padded (centrally for pm, at the end otherwise), longer ones trimmed.
        f0_min, f0_max: search range in Hz for pm/harvest/dio, and FCPE's voiced range
            (RMVPE has a fixed range).
        rmvpe: a loaded model, required for ``method="rmvpe"``.
        fcpe: a loaded model, required for ``method="fcpe"``.
        filter_radius: harvest only: > 2 applies RVC's 3-tap median filter.
    Returns:
        ``[p_len]`` float32 Hz; 0 marks unvoiced frames. Silence gives all zeros, input shorter
        than the method can analyse gives ``p_len`` zeros.
    Raises:
        ValueError: unknown method, missing RMVPE/FCPE model, or audio that is not 1-D and
            finite.
    """
    if method not in F0_METHODS:
        raise ValueError(f"unknown f0 method {method!r}; valid methods: {', '.join(F0_METHODS)}")
    x = np.asarray(wav16k, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"compute_f0 expects mono audio [N], got shape {list(x.shape)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("compute_f0: audio contains NaN or infinite samples")
    if not 0 < f0_min < f0_max:
        raise ValueError(f"compute_f0: need 0 < f0_min < f0_max, got {f0_min}, {f0_max}")
    if p_len is None:
        p_len = len(x) // HOP_LENGTH
    if p_len < 0:
        raise ValueError(f"compute_f0: p_len must be >= 0, got {p_len}")
    if method == "rmvpe":
        _require_rmvpe(rmvpe)  # fail the same way for silent or short input
    if method == "fcpe":
        _require_fcpe(fcpe)
    if len(x) < HOP_LENGTH or not np.any(x):  # under one frame, or digital silence
        return np.zeros(p_len, dtype=np.float32)
    f0 = F0_METHODS[method](
        x,
        p_len=p_len,
        f0_min=f0_min,
        f0_max=f0_max,
        rmvpe=rmvpe,
        fcpe=fcpe,
        filter_radius=filter_radius,
    )
    return np.asarray(f0, dtype=np.float32)


def compute_f0_fcpe_batch(
    wavs16k: Sequence[np.ndarray],
    fcpe: FCPE,
    *,
    p_lens: Sequence[int] | None = None,
    f0_min: float = 50.0,
    f0_max: float = 1100.0,
    max_batch: int = 16,
) -> list[np.ndarray]:
    """:func:`compute_f0` with ``method="fcpe"`` for several tracks, equal lengths in one pass.

    Each track gets what ``compute_f0(x, "fcpe", fcpe=fcpe, p_len=..., f0_min=..., f0_max=...)``
    gives, up to the float rounding of a batched forward pass (:meth:`FCPE.infer_batch`: a few
    float32 ulps of Hz, voicing the same in practice); silent or sub-frame tracks are zeros.

    Args:
        wavs16k: mono 16 kHz tracks ``[N_i]``, float in [-1, 1].
        fcpe: the loaded model.
        p_lens: frames per track (default ``N_i // 160`` each).
        f0_min, f0_max: FCPE's voiced range in Hz (:func:`fcpe_range`).
        max_batch: most tracks per forward pass.
    Returns:
        One ``[p_len_i]`` float32 Hz track per input, in input order.
    Raises:
        ValueError: a track that is not 1-D and finite, bad lengths or range.
    """
    if p_lens is None:
        p_lens = [len(w) // HOP_LENGTH for w in wavs16k]
    if len(p_lens) != len(wavs16k):
        raise ValueError(f"compute_f0_fcpe_batch: {len(wavs16k)} tracks but {len(p_lens)} p_lens")
    if not 0 < f0_min < f0_max:
        raise ValueError(f"compute_f0_fcpe_batch: need 0 < f0_min < f0_max, got {f0_min}, {f0_max}")
    out: list[np.ndarray | None] = [None] * len(wavs16k)
    todo: list[int] = []
    tracks: list[np.ndarray] = []
    for i, (w, p_len) in enumerate(zip(wavs16k, p_lens, strict=True)):
        # The same input checks and conversions as compute_f0, so the tracks are the same.
        x = np.asarray(w, dtype=np.float64)
        if x.ndim != 1 or not np.all(np.isfinite(x)) or p_len < 0:
            raise ValueError(
                f"compute_f0_fcpe_batch: track {i} must be finite mono audio [N] with p_len >= 0 "
                f"(shape {list(x.shape)}, p_len {p_len})"
            )
        if len(x) < HOP_LENGTH or not np.any(x):
            out[i] = np.zeros(p_len, dtype=np.float32)
        else:
            todo.append(i)
            tracks.append(x.astype(np.float32))
    for i, f0 in zip(todo, fcpe.infer_batch(tracks, max_batch=max_batch), strict=True):
        out[i] = np.asarray(
            _fit_right(fcpe_range(f0, f0_min, f0_max), int(p_lens[i])), dtype=np.float32
        )
    return out  # type: ignore[return-value]


def resolve_f0_method(
    method: str, rmvpe_path: str | os.PathLike[str], fcpe_path: str | os.PathLike[str]
) -> str:
    """``auto`` -> ``rmvpe`` when its weights exist, else ``fcpe`` when FCPE's do; others as given.

    Called once, before any work, so that caches, run files and inference see the real name
    (a voice trained with ``auto`` converts with the method it was trained with).

    Args:
        method: a ``features.f0_method`` setting (``auto`` or a method name).
        rmvpe_path, fcpe_path: where the two networks' weights would be.
    Returns:
        The method name (never ``auto``).
    Raises:
        CheckpointError: ``auto`` with neither weight file present (one line naming the fix).
    """
    if method != AUTO:
        return method
    if Path(rmvpe_path).exists():
        chosen, why = "rmvpe", f"{rmvpe_path} present"
    elif Path(fcpe_path).exists():
        chosen, why = "fcpe", f"{rmvpe_path} absent"
    else:
        raise CheckpointError(
            f"f0_method auto needs RMVPE or FCPE weights, found neither ({rmvpe_path}, "
            f"{fcpe_path}): run `rvc-lora download fcpe` (43 MB) or `rvc-lora download` (RVC's "
            f"rmvpe.pt), or set features.f0_method=harvest (no weights)"
        )
    log.info("f0_method auto -> %s (%s)", chosen, why)
    return chosen


def network_f0_models(
    method: str,
    *,
    rmvpe_path: str | os.PathLike[str],
    fcpe_path: str | os.PathLike[str],
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """The network ``method`` needs, loaded, as keyword arguments of :func:`compute_f0`.

    Returns:
        ``{"rmvpe": RMVPE}``, ``{"fcpe": FCPE}``, or ``{}`` for a method without a network.
    Raises:
        CheckpointError: the weights are missing or unreadable.
    """
    if method == "rmvpe":
        from rvc_lora.features.rmvpe import load_rmvpe

        return {"rmvpe": load_rmvpe(rmvpe_path, device=device)}
    if method == "fcpe":
        from rvc_lora.features.fcpe import load_fcpe

        return {"fcpe": load_fcpe(fcpe_path, device=device)}
    return {}
