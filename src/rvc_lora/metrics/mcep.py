"""Mel-cepstra from WORLD spectral envelopes, with the all-pass frequency warping done here.

A mel-cepstrum ``c~`` of order ``M`` describes a log amplitude envelope on a warped axis:
``log|H(w)| = sum_{m=0..M} c~(m) cos(m * beta(w))``, with ``beta`` the phase of the first-order
all-pass ``(z^-1 - alpha) / (1 - alpha z^-1)``. ``alpha`` is chosen per sample rate so that
``beta`` follows the mel scale (SPTK's table). :func:`sp_to_mcep` takes the real cepstrum of
``log|sp|`` and warps it with the ``freqt`` recursion (Oppenheim & Johnson, 1972);
:func:`mcep_to_sp` evaluates the cosine sum above directly, which is the independent inverse
the round-trip test checks against.
"""

from __future__ import annotations

import functools

import numpy as np

from rvc_lora.metrics.audio import import_pyworld

MCEP_ORDER = 24
FRAME_PERIOD_MS = 5.0

# All-pass constants for the common rates (the values VC toolkits use, so MCDs compare).
MEL_ALPHA: dict[int, float] = {
    8000: 0.41,
    16000: 0.42,
    22050: 0.455,
    24000: 0.466,
    44100: 0.544,
    48000: 0.544,
}


def alpha_for_sr(sr: int) -> float:
    """The frequency-warping constant for ``sr``: :data:`MEL_ALPHA`, else :func:`fit_mel_alpha`
    (RVC's 32 and 40 kHz get 0.504 and 0.532)."""
    if sr in MEL_ALPHA:
        return MEL_ALPHA[sr]
    if sr < 8000:
        raise ValueError(f"mel-cepstral analysis needs at least 8 kHz audio, got {sr} Hz")
    return fit_mel_alpha(sr)


@functools.lru_cache(maxsize=16)
def fit_mel_alpha(sr: int, points: int = 1000) -> float:
    """The ``alpha`` (step 0.001) whose warped axis is closest (RMS) to the mel scale
    ``log(1 + f / 1000)`` on ``[0, sr / 2)``, both normalised to end at 1.

    This criterion gives 0.41, 0.455, 0.466, 0.544 at 16, 22.05, 24, 44.1 kHz: the table above
    up to 0.01 at 16 kHz.
    """
    f = np.arange(points) * (sr / 2) / points
    mel = np.log1p(f / 1000.0)
    mel /= mel[-1]
    alphas = np.arange(0.0, 1.0, 0.001)[:, None]  # [A, 1]
    w = np.arange(points) * np.pi / points  # [P]
    warped = w + 2.0 * np.arctan2(alphas * np.sin(w), 1.0 - alphas * np.cos(w))  # [A, P]
    warped /= warped[:, -1:]
    best = np.argmin(np.sqrt(np.mean((warped - mel) ** 2, axis=1)))
    return round(float(alphas[best, 0]), 3)


def freqt(c: np.ndarray, order: int, alpha: float) -> np.ndarray:
    """Frequency-warp cepstra ``c`` ``[..., K]`` to order ``order`` -> ``[..., order + 1]``.

    The recursion feeds the input coefficients from the highest quefrency down through a chain
    of first-order all-pass sections; ``alpha < 0`` un-warps.
    """
    c = np.asarray(c, dtype=np.float64)
    out = np.zeros(c.shape[:-1] + (order + 1,))
    beta = 1.0 - alpha * alpha
    for k in range(c.shape[-1] - 1, -1, -1):
        prev = out.copy()
        out[..., 0] = c[..., k] + alpha * prev[..., 0]
        if order >= 1:
            out[..., 1] = beta * prev[..., 0] + alpha * prev[..., 1]
        for m in range(2, order + 1):
            out[..., m] = prev[..., m - 1] + alpha * (prev[..., m] - out[..., m - 1])
    return out


def sp_to_mcep(sp: np.ndarray, order: int = MCEP_ORDER, alpha: float = 0.42) -> np.ndarray:
    """Power spectral envelope ``[T, F]`` (``F = n_fft // 2 + 1``, WORLD's layout) -> ``[T, order+1]``.

    ``c~(0)`` is the log gain; ``c~(1..order)`` the shape. Natural-log amplitude units.
    """
    sp = np.asarray(sp, dtype=np.float64)
    log_amp = 0.5 * np.log(np.maximum(sp, 1e-300))
    # Real cepstrum of the log amplitude. The one-sided cepstrum of a minimum-phase filter with
    # that amplitude is r(0), 2r(1), 2r(2), ...; the Nyquist term r(K) appears only once.
    real = np.fft.irfft(log_amp, axis=-1)[..., : sp.shape[-1]]
    real[..., 1 : sp.shape[-1] - 1] *= 2.0
    return real @ _warp_matrix(sp.shape[-1], order, float(alpha))


@functools.lru_cache(maxsize=16)
def _warp_matrix(n_in: int, order: int, alpha: float) -> np.ndarray:
    """freqt is linear: its matrix ``[n_in, order + 1]``, built once per shape and alpha."""
    matrix = freqt(np.eye(n_in), order, alpha)
    matrix.flags.writeable = False  # shared through the cache
    return matrix


def warped_frequencies(n_bins: int, alpha: float) -> np.ndarray:
    """``beta(w)`` at the ``n_bins`` rfft bin centres ``w = pi k / (n_bins - 1)``."""
    w = np.linspace(0.0, np.pi, n_bins)
    return w + 2.0 * np.arctan2(alpha * np.sin(w), 1.0 - alpha * np.cos(w))


def mcep_to_sp(mcep: np.ndarray, n_fft: int, alpha: float = 0.42) -> np.ndarray:
    """Mel-cepstra ``[T, M+1]`` -> power spectral envelope ``[T, n_fft // 2 + 1]``."""
    mcep = np.asarray(mcep, dtype=np.float64)
    beta = warped_frequencies(n_fft // 2 + 1, alpha)  # [F]
    basis = np.cos(np.outer(np.arange(mcep.shape[-1]), beta))  # [M+1, F]
    return np.exp(2.0 * (mcep @ basis))


def world_envelope(
    x: np.ndarray, sr: int, *, f0_method: str = "dio", frame_period: float = FRAME_PERIOD_MS
) -> tuple[np.ndarray, np.ndarray]:
    """WORLD F0 and spectral envelope of ``x`` ``[N]`` (float64).

    Returns:
        ``(f0 [T], sp [T, F])``: F0 in Hz (0 = unvoiced) from dio or harvest refined by
        stonemask, and cheaptrick's power spectral envelope.
    """
    if f0_method not in ("dio", "harvest"):
        raise ValueError(
            f"f0_method for WORLD analysis must be 'dio' or 'harvest', got {f0_method!r}"
        )
    pw = import_pyworld()
    x = np.ascontiguousarray(x, dtype=np.float64)
    f0, t = getattr(pw, f0_method)(x, sr, frame_period=frame_period)
    f0 = pw.stonemask(x, f0, t, sr)
    sp = pw.cheaptrick(x, f0, t, sr)
    return f0, sp


def world_mcep(
    x: np.ndarray,
    sr: int,
    *,
    order: int = MCEP_ORDER,
    alpha: float | None = None,
    f0_method: str = "dio",
    frame_period: float = FRAME_PERIOD_MS,
) -> tuple[np.ndarray, np.ndarray]:
    """Mel-cepstra of ``x`` ``[N]`` -> ``(mcep [T, order + 1], frame power in dB [T])``.

    The frame power is ``10 log10`` of the envelope's mean over frequency; MCD uses it to find
    silent frames.
    """
    _, sp = world_envelope(x, sr, f0_method=f0_method, frame_period=frame_period)
    mcep = sp_to_mcep(sp, order, alpha_for_sr(sr) if alpha is None else alpha)
    power_db = 10.0 * np.log10(np.maximum(sp.mean(axis=1), 1e-30))
    return mcep, power_db
