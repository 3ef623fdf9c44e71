"""features.mel_numerics reaches every place training computes a spectrogram or a mel."""

from __future__ import annotations

import math

import pytest
import torch
from hydra.utils import instantiate

from rvc_lora.features.hubert_tiny import ensure_tiny_encoder
from rvc_lora.spectral import RVC_MAIN, RVC_RELEASE, linear_spectrogram, mel_spectrogram
from tests.training.conftest import compose_train


@pytest.mark.parametrize("experiment", [[], ["experiment=demo"], ["features=default"]])
def test_the_default_is_what_the_official_bases_were_trained_with(
    tmp_path, shared_root, voice_dir, experiment
) -> None:
    cfg = compose_train(shared_root, tmp_path, voice_dir, experiment)
    assert cfg.features.mel_numerics == "rvc_release"
    assert cfg.data.mel_numerics == "rvc_release" and cfg.module.mel_numerics == "rvc_release"


@pytest.mark.parametrize(
    ("name", "numerics"), [("rvc_release", RVC_RELEASE), ("rvc_main", RVC_MAIN)]
)
def test_the_choice_sets_the_items_spec_and_the_mel_loss(
    tmp_path, shared_root, voice_dir, name, numerics
) -> None:
    cfg = compose_train(shared_root, tmp_path, voice_dir, [f"features.mel_numerics={name}"])
    datamodule, module = instantiate(cfg.data), instantiate(cfg.module)
    assert datamodule.spec.numerics == numerics
    c = module.generator.config
    other = RVC_MAIN if numerics == RVC_RELEASE else RVC_RELEASE
    # y_mel: the items' spec to mel; on a zero spectrum it is log(mel_floor) exactly.
    mel = module._mel_of_spec(torch.zeros(1, c.n_fft // 2 + 1, 4))
    torch.testing.assert_close(mel, torch.full_like(mel, math.log(numerics.mel_floor)))
    # y_hat_mel: quiet audio, where the two choices differ.
    quiet = torch.randn(1, 1, c.hop_length * 16, generator=torch.Generator().manual_seed(0)) * 1e-4
    args = (c.sr, c.n_fft, c.hop_length, c.n_mels)
    ours = module._mel_of_wav(quiet)
    torch.testing.assert_close(ours, mel_spectrogram(quiet, *args, numerics=numerics))
    assert (ours - mel_spectrogram(quiet, *args, numerics=other)).abs().mean() > 0.05
    assert module.hparams["mel_numerics"] == name


def test_an_unknown_choice_is_refused_naming_the_key(tmp_path, shared_root, voice_dir) -> None:
    cfg = compose_train(shared_root, tmp_path, voice_dir, ["features.mel_numerics=rvc_2024"])
    with pytest.raises(Exception) as err:
        instantiate(cfg.module)
    assert "features.mel_numerics='rvc_2024' unknown" in str(err.value.__cause__)


@pytest.mark.slow
def test_the_items_spec_uses_the_choice(tmp_path, shared_root, voice_dir) -> None:
    cfg = compose_train(shared_root, tmp_path, voice_dir, ["features.mel_numerics=rvc_main"])
    ensure_tiny_encoder(cfg.features)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    item = next(iter(datamodule.train_dataloader()))
    wav, hop, n_fft = item["wav"][:1, 0], cfg.data.hop_length, cfg.data.n_fft
    frames = item["lengths"][0]
    spec = item["spec"][:1, :, :frames]
    torch.testing.assert_close(
        spec, linear_spectrogram(wav, n_fft, hop, numerics=RVC_MAIN)[..., :frames]
    )
    release = linear_spectrogram(wav, n_fft, hop, numerics=RVC_RELEASE)[..., :frames]
    assert not torch.allclose(spec, release)
