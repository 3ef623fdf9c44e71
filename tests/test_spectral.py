"""Spectrogram helpers reproduce RVC's numerics (reflect pad, center=False STFT, Slaney mel)."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import scipy.signal
import torch

from rvc_lora.spectral import (
    MEL_NUMERICS,
    RVC_MAIN,
    RVC_RELEASE,
    linear_spectrogram,
    mel_numerics,
    mel_spectrogram,
    spec_to_mel,
)
from rvc_lora.utils.errors import ConfigError


def _reference_spec(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """Independent numpy version of RVC's ``spectrogram_torch``."""
    pad = (n_fft - hop) // 2
    y = np.pad(y, (pad, pad), mode="reflect")
    window = scipy.signal.get_window("hann", n_fft, fftbins=True)
    n_frames = 1 + (len(y) - n_fft) // hop
    frames = np.stack([y[i * hop : i * hop + n_fft] * window for i in range(n_frames)], axis=1)
    spec = np.fft.rfft(frames, axis=0)
    return np.sqrt(spec.real**2 + spec.imag**2 + 1e-6)


@pytest.mark.parametrize(("n_fft", "hop"), [(2048, 400), (1024, 320), (512, 160)])
def test_linear_spectrogram_matches_numpy_reference(n_fft: int, hop: int) -> None:
    rng = np.random.default_rng(0)
    y = (rng.standard_normal(hop * 50) * 0.1).astype(np.float32)
    ours = linear_spectrogram(torch.from_numpy(y)[None], n_fft, hop)[0].numpy()
    ref = _reference_spec(y.astype(np.float64), n_fft, hop)
    assert ours.shape == (n_fft // 2 + 1, 50) == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


def test_sine_peaks_at_its_bin() -> None:
    sr, n_fft, hop = 16000, 512, 160
    freq = 40 * sr / n_fft  # exactly bin 40
    t = torch.arange(sr) / sr
    spec = linear_spectrogram(torch.sin(2 * torch.pi * freq * t)[None], n_fft, hop)
    assert spec.shape == (1, 257, 100)
    # The first and last frames see the reflected padding, which breaks the sine's phase.
    assert (spec[0, :, 1:-1].argmax(dim=0) == 40).all()


def test_mel_uses_librosa_slaney_filters_and_log_clamp() -> None:
    spec = torch.rand(1, 1025, 7)
    mel = spec_to_mel(spec, sr=40000, n_fft=2048, n_mels=125)
    basis = librosa.filters.mel(sr=40000, n_fft=2048, n_mels=125, fmin=0.0, fmax=None)
    ref = np.log(np.clip(basis @ spec[0].numpy(), 1e-5, None))
    assert mel.shape == (1, 125, 7)
    np.testing.assert_allclose(mel[0].numpy(), ref, rtol=1e-5, atol=1e-5)


def test_mel_is_float32_under_autocast() -> None:
    y = torch.randn(2, 1, 6400) * 0.1
    plain = mel_spectrogram(y, 32000, 1024, 320, 80)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = mel_spectrogram(y.bfloat16(), 32000, 1024, 320, 80)
    assert auto.dtype == torch.float32 and plain.shape == (2, 80, 20)
    # Only the bf16 rounding of the input remains.
    assert (auto - plain).abs().max() < 0.1


def test_mel_numerics_are_pinned_to_rvc_values() -> None:
    # rvc_release: RVC's training code 2023-2025, with which the official bases were trained.
    assert (RVC_RELEASE.spec_eps, RVC_RELEASE.mel_floor) == (1e-6, 1e-5)
    assert (RVC_MAIN.spec_eps, RVC_MAIN.mel_floor) == (2e-7, 2e-6)
    assert MEL_NUMERICS == {"rvc_release": RVC_RELEASE, "rvc_main": RVC_MAIN}
    assert mel_numerics("rvc_main") is RVC_MAIN


def test_default_numerics_are_rvc_release_on_silence() -> None:
    # Silence exposes both constants exactly: |X| = sqrt(eps), mel = log(floor).
    silence = torch.zeros(1, 6400)
    spec = linear_spectrogram(silence, 1024, 320)
    torch.testing.assert_close(spec, torch.full_like(spec, 1e-6**0.5))
    mel = spec_to_mel(torch.zeros(1, 513, 3), 32000, 1024, 80)
    torch.testing.assert_close(mel, torch.full_like(mel, float(np.log(np.float32(1e-5)))))
    default = mel_spectrogram(silence, 32000, 1024, 320, 80)
    torch.testing.assert_close(
        default, mel_spectrogram(silence, 32000, 1024, 320, 80, numerics=RVC_RELEASE)
    )


def test_rvc_main_numerics_change_the_mel_of_quiet_audio() -> None:
    silence = torch.zeros(1, 6400)
    spec = linear_spectrogram(silence, 1024, 320, numerics=RVC_MAIN)
    torch.testing.assert_close(spec, torch.full_like(spec, 2e-7**0.5))
    mel = spec_to_mel(torch.zeros(1, 513, 3), 32000, 1024, 80, numerics=RVC_MAIN)
    torch.testing.assert_close(mel, torch.full_like(mel, float(np.log(np.float32(2e-6)))))
    # Quiet noise (rms -80 dBFS): the constants move its log-mel by 0.15 nats on average.
    quiet = torch.randn(1, 6400, generator=torch.Generator().manual_seed(0)) * 1e-4
    release = mel_spectrogram(quiet, 32000, 1024, 320, 80, numerics=RVC_RELEASE)
    main = mel_spectrogram(quiet, 32000, 1024, 320, 80, numerics=RVC_MAIN)
    assert (release - main).abs().mean() > 0.1
    assert (release >= main - 1e-6).all()  # the release's larger constants only lift bins


def test_unknown_mel_numerics_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as err:
        mel_numerics("rvc_2024")
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(
        "features.mel_numerics='rvc_2024' unknown; choose one of ['rvc_main', 'rvc_release']"
    )
