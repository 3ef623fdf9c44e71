"""RMVPE: RVC's key layout and size, strict loading of a bare fp16 state dict, mel, decoding."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from rvc_lora.features.rmvpe import (
    E2E,
    RMVPE,
    RMVPEConfig,
    decode_salience,
    load_rmvpe,
)
from rvc_lora.utils.errors import CheckpointError

SR = 16000


def _tiny_net(seed: int = 0) -> E2E:
    """A tiny RMVPE with non-trivial BatchNorm statistics (eval-mode BN is then exercised)."""
    torch.manual_seed(seed)
    net = E2E(RMVPEConfig.tiny())
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return net.eval()


def _fp16_state(net: E2E) -> dict[str, torch.Tensor]:
    """The state dict as RVC ships rmvpe.pt: bare, floating tensors in fp16."""
    return {k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}


def _audio(n: int, seed: int = 0) -> np.ndarray:
    t = np.arange(n) / SR
    rng = np.random.default_rng(seed)
    return (0.4 * np.sin(2 * np.pi * 180 * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def test_full_size_matches_rvc_layout() -> None:
    with torch.device("meta"):
        net = E2E()
    state = net.state_dict()
    assert len(state) == 741
    assert sum(p.numel() for p in net.parameters()) == 90_423_165
    assert sum(v.numel() for v in state.values()) == 90_472_917  # + BN running stats/counters
    assert sum(p.numel() for p in net.unet.intermediate.parameters()) == 74_482_176
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    assert shapes["unet.encoder.bn.weight"] == (1,)
    assert shapes["unet.encoder.layers.0.conv.0.conv.0.weight"] == (16, 1, 3, 3)
    assert shapes["unet.encoder.layers.0.conv.0.shortcut.weight"] == (16, 1, 1, 1)
    assert shapes["unet.encoder.layers.4.conv.3.conv.4.running_var"] == (256,)
    assert shapes["unet.intermediate.layers.0.conv.0.shortcut.bias"] == (512,)
    assert shapes["unet.intermediate.layers.3.conv.3.conv.3.weight"] == (512, 512, 3, 3)
    assert shapes["unet.decoder.layers.0.conv1.0.weight"] == (512, 256, 3, 3)
    assert shapes["unet.decoder.layers.4.conv2.0.shortcut.weight"] == (16, 32, 1, 1)
    assert shapes["cnn.weight"] == (3, 16, 3, 3)
    assert shapes["fc.0.gru.weight_ih_l0"] == (768, 384)
    assert shapes["fc.0.gru.weight_hh_l0_reverse"] == (768, 256)
    assert shapes["fc.1.weight"] == (360, 512)
    # only the first block of a level changes width, so only it has a shortcut
    assert "unet.encoder.layers.1.conv.1.shortcut.weight" not in shapes


def test_fp16_state_dict_round_trip(tmp_path) -> None:
    net = _tiny_net()
    state = _fp16_state(net)
    path = tmp_path / "rmvpe_tiny.pt"
    torch.save(state, path)
    net.load_state_dict(state)  # the original, with fp16-rounded weights (kept in fp32)
    reference = RMVPE(net)
    loaded = load_rmvpe(path, config=RMVPEConfig.tiny())
    assert all(p.dtype == torch.float32 for p in loaded.net.parameters())
    x = _audio(SR // 2)
    mel = reference.mel(torch.from_numpy(x)[None])
    assert torch.equal(loaded.salience(mel), reference.salience(mel))
    np.testing.assert_array_equal(
        loaded.infer_from_audio(x, thred=0.0), reference.infer_from_audio(x, thred=0.0)
    )


def test_missing_and_mismatched_files_are_refused(tmp_path) -> None:
    missing = tmp_path / "nowhere" / "rmvpe.pt"
    with pytest.raises(CheckpointError) as err:
        load_rmvpe(missing)
    assert str(missing) in str(err.value) and "lj1995/VoiceConversionWebUI" in str(err.value)

    state = _fp16_state(_tiny_net())
    state["fc.2.weight"] = state.pop("fc.1.weight")
    path = tmp_path / "renamed.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as err:
        load_rmvpe(path, config=RMVPEConfig.tiny())
    text = str(err.value)
    assert str(path) in text and "missing 1 (fc.1.weight)" in text
    assert "unexpected 1 (fc.2.weight)" in text

    torch.save(_fp16_state(_tiny_net()), path)  # a tiny file read as the full-size RVC model
    with pytest.raises(CheckpointError, match="wrong shape"):
        load_rmvpe(path)

    torch.save({"model": _fp16_state(_tiny_net())}, path)  # wrapped, not bare
    with pytest.raises(CheckpointError, match="not tensors"):
        load_rmvpe(path, config=RMVPEConfig.tiny())


def test_mel_matches_librosa() -> None:
    x = _audio(12_345)
    ours = RMVPE(_tiny_net()).mel(torch.from_numpy(x)[None])[0].numpy()
    spec = np.abs(
        librosa.stft(
            x.astype(np.float64),
            n_fft=1024,
            hop_length=160,
            window="hann",
            center=True,
            pad_mode="reflect",
        )
    )
    basis = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=128, fmin=30, fmax=8000, htk=True)
    ref = np.log(np.maximum(basis.astype(np.float64) @ spec, 1e-5))
    assert ours.shape == ref.shape == (128, 12_345 // 160 + 1)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)  # measured: about 1e-6


def test_decode_salience() -> None:
    bins = np.arange(360)
    bump = 0.9 * np.exp(-0.5 * ((bins - 100) / 1.5) ** 2)  # symmetric around bin 100
    quiet = 0.02 * np.exp(-0.5 * ((bins - 200) / 1.5) ** 2)  # peak below the 0.03 threshold
    edge = np.zeros(360)
    edge[359], edge[357] = 0.8, 0.4  # window runs past the last bin (zero padding)
    sal = np.stack([bump, quiet, np.zeros(360), edge]).astype(np.float32)
    f0 = decode_salience(sal, thred=0.03)

    expected_cents = 20 * 100 + 1997.3794084376191
    assert 1200 * np.log2(f0[0] / 10) == pytest.approx(expected_cents, abs=0.1)
    assert f0[0] == pytest.approx(10 * 2 ** (expected_cents / 1200), rel=1e-6)  # about 318.3 Hz
    assert f0[1] == 0 and f0[2] == 0
    edge_cents = (0.8 * (20 * 359) + 0.4 * (20 * 357)) / 1.2 + 1997.3794084376191
    assert 1200 * np.log2(f0[3] / 10) == pytest.approx(edge_cents, abs=1e-3)
    # the same frames as a torch tensor, and a lower threshold lets the quiet frame through
    np.testing.assert_array_equal(decode_salience(torch.from_numpy(sal)), f0)
    quiet_hz = 10 * 2 ** ((20 * 200 + 1997.3794084376191) / 1200)
    assert decode_salience(sal, thred=0.01)[1] == pytest.approx(quiet_hz, rel=1e-6)
    with pytest.raises(ValueError, match="360"):
        decode_salience(np.zeros((4, 128)))


@pytest.mark.parametrize("n", [0, 100, 400, 1000, 16_000, 16_001, 16_159, 24_321])
def test_output_length(n: int) -> None:
    model = RMVPE(_tiny_net())
    f0 = model.infer_from_audio(_audio(n))
    assert f0.shape == (n // 160 + 1,)
    assert np.all(np.isfinite(f0)) and np.all(f0 >= 0)


def test_network_sees_frames_padded_to_32() -> None:
    model = RMVPE(_tiny_net())
    seen: list[tuple[int, ...]] = []
    model.net.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    sal = model.salience(model.mel(torch.from_numpy(_audio(16_001))[None]))
    assert sal.shape == (1, 101, 360) and seen == [(1, 128, 128)]
    assert torch.all((sal > 0) & (sal < 1))
    # a torch tensor input gives the same as numpy
    x = _audio(5_000)
    np.testing.assert_array_equal(
        model.infer_from_audio(torch.from_numpy(x)), model.infer_from_audio(x)
    )
    with pytest.raises(ValueError, match="mono"):
        model.infer_from_audio(np.zeros((2, 5_000), dtype=np.float32))
