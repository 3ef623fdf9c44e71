"""FCPE: the released file's layout, strict loading of tiny files in that layout, the log-mel
front end, the local-argmax decoder, batching, and ``compute_f0(..., "fcpe")`` on real weights.

Each test names, in its docstring, a plausible wrong change to ``features/fcpe.py`` (or to the
``fcpe`` method of ``features/f0.py``) that makes it fail.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch

from rvc_lora.features.f0 import compute_f0, fcpe_range
from rvc_lora.features.fcpe import (
    DEFAULT_THRESHOLD,
    FCPE,
    FCPEConfig,
    FCPENet,
    checkpoint_dict,
    load_fcpe,
)
from rvc_lora.features.weights import file_sha256
from rvc_lora.utils.errors import CheckpointError

SR = 16000
REPO = Path(__file__).resolve().parents[2]
REAL = REPO / "models" / "fcpe_c_v001.pt"
REAL_SHA256 = "b9aeaeb673436eeda50ceafd632aa681aa63417e52eae4207503d180c9b10015"
TINY = FCPEConfig(hidden=16, n_layers=2)


# -- helpers -----------------------------------------------------------------------------------
def _tiny_net(seed: int = 0) -> FCPENet:
    """A tiny FCPE whose norms are not the identity (so a load that skipped them would show)."""
    torch.manual_seed(seed)
    net = FCPENet(TINY)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.LayerNorm | torch.nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return net.eval()


def _tiny_file(path: Path, seed: int = 0) -> Path:
    torch.save(checkpoint_dict(_tiny_net(seed)), path)
    return path


def _voiced(n: int, hz: float = 180.0, seed: int = 0) -> np.ndarray:
    t = np.arange(n) / SR
    rng = np.random.default_rng(seed)
    return (0.4 * np.sin(2 * np.pi * hz * t) + 0.01 * rng.standard_normal(n)).astype(np.float32)


def _hz(cents: torch.Tensor | float) -> float:
    return float(10.0 * 2.0 ** (torch.as_tensor(cents, dtype=torch.float64) / 1200.0))


# -- tiny checkpoints in the released layout ---------------------------------------------------
def test_tiny_file_round_trip_folds_weight_norm(tmp_path) -> None:
    """load_fcpe of a file written by checkpoint_dict gives the saliences of the net it came from.

    The file's ``weight_v`` rows are rescaled (weight norm is invariant to that), so a fold that
    used ``v`` alone, ``g * v``, or normalised over the wrong dimension gives other saliences;
    so would a loader that skipped any tensor (the norms are not at their identity init).
    """
    net = _tiny_net()
    ckpt = checkpoint_dict(net)
    scale = torch.linspace(0.25, 4.0, TINY.out_dims)[:, None]
    ckpt["model"]["output_proj.weight_v"] = ckpt["model"]["output_proj.weight_v"] * scale
    path = tmp_path / "fcpe_tiny.pt"
    torch.save(ckpt, path)

    loaded = load_fcpe(path)
    assert loaded.config == TINY
    assert all(p.dtype == torch.float32 for p in loaded.net.parameters())
    x = torch.from_numpy(_voiced(SR // 2))[None]
    reference = FCPE(net).salience(x)
    got = loaded.salience(x)
    assert got.shape == (1, SR // 2 // 160 + 1, 360)
    torch.testing.assert_close(got, reference, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        loaded.net.output_proj.weight, net.output_proj.weight, atol=1e-6, rtol=0
    )


def test_a_plain_output_weight_loads_too(tmp_path) -> None:
    """A file whose output layer was already folded (``output_proj.weight``) loads as is: fails if
    the loader demanded the weight-norm pair or dropped a plain weight."""
    net = _tiny_net(seed=3)
    torch.save({"model": net.state_dict(), "config_dict": checkpoint_dict(net)["config_dict"]},
               tmp_path / "plain.pt")  # fmt: skip
    loaded = load_fcpe(tmp_path / "plain.pt")
    torch.testing.assert_close(loaded.net.output_proj.weight, net.output_proj.weight)


# -- the released file ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_path() -> Path:
    """models/fcpe_c_v001.pt, which `make install` fetches: a missing file fails, never skips."""
    if not REAL.is_file():
        pytest.fail(f"{REAL} is missing: run `make install` (it fetches FCPE's weights with "
                    f"`rvc-lora download fcpe`)")  # fmt: skip
    if file_sha256(REAL) != REAL_SHA256:
        pytest.fail(f"{REAL} is not torchfcpe 0.0.4's fcpe_c_v001.pt: delete it and run "
                    f"`make install`")  # fmt: skip
    return REAL


@pytest.fixture(scope="module")
def real_ckpt(real_path) -> dict[str, Any]:
    return torch.load(real_path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def real_fcpe(real_path) -> FCPE:
    return load_fcpe(real_path)


def test_default_net_has_exactly_the_real_files_keys_and_shapes(real_ckpt) -> None:
    """FCPENet() equals the released state dict key for key and shape once ``weight_g/weight_v``
    are folded into one weight: fails for a renamed/reindexed module, a changed kernel or
    expansion, a dropped unused norm (``net.encoder_layers.N.norm``) or buffer."""
    state = dict(real_ckpt["model"])
    g, v = state.pop("output_proj.weight_g"), state.pop("output_proj.weight_v")
    assert tuple(g.shape) == (v.shape[0], 1)
    state["output_proj.weight"] = v  # the fold keeps v's shape
    with torch.device("meta"):
        net = FCPENet()
    ours = {k: tuple(t.shape) for k, t in net.state_dict().items()}
    assert ours == {k: tuple(t.shape) for k, t in state.items()}
    assert len(ours) == 72
    assert ours["input_stack.0.weight"] == (512, 128, 3)
    assert ours["net.encoder_layers.5.conformer.net.4.conv.weight"] == (1024, 1, 31)
    # the buffers hold the bins' cents as trained (fails for another f0 range or bin count)
    torch.testing.assert_close(FCPEConfig().cents_table(), state["cent_table"], atol=1e-3, rtol=0)
    torch.testing.assert_close(
        net.gaussian_blurred_cent_mask.new_tensor(1200.0 * np.log2(1975.5 / 10.0), device="cpu"),
        state["gaussian_blurred_cent_mask"],
    )


def test_checkpoint_dict_writes_the_real_layout(real_ckpt) -> None:
    """checkpoint_dict(FCPENet()) has the released file's top-level keys, state-dict keys and
    config values: fails if the tiny files of these tests drifted from the real format."""
    with torch.device("meta"):
        ours = checkpoint_dict(FCPENet())
    assert set(ours) == set(real_ckpt)
    assert {k: tuple(v.shape) for k, v in ours["model"].items()} == {
        k: tuple(v.shape) for k, v in real_ckpt["model"].items()
    }
    for part in ("mel", "model"):
        real = real_ckpt["config_dict"][part]
        assert {k: real[k] for k in ours["config_dict"][part]} == ours["config_dict"][part]


def test_real_file_loads_with_the_default_config(real_fcpe) -> None:
    """load_fcpe reads the released config as FCPEConfig(): fails if a default or the parsing of
    ``config_dict`` (e.g. fmin given as the int 0) changed."""
    assert real_fcpe.config == FCPEConfig()
    torch.testing.assert_close(real_fcpe.net.cent_table, FCPEConfig().cents_table())


# -- the log-mel front end -----------------------------------------------------------------------
def _reference_mel(x: np.ndarray, eps: float = 1e-9) -> np.ndarray:
    """FCPE's log-mel in float64 numpy: pad 432 each side (reflect, or zeros when the input is too
    short to mirror), frames of 1024 every 160 under a periodic Hann window, |rfft| with ``eps``
    inside the root, Slaney mel 0-8 kHz, log clamped at 1e-5, last frame repeated."""
    x = x.astype(np.float64)
    n = len(x)
    left, right = 432, max(432, 1024 - n - 432)
    padded = np.pad(x, (left, right), mode="reflect" if right < n else "constant")
    count = 1 + (len(padded) - 1024) // 160
    frames = padded[np.arange(count)[:, None] * 160 + np.arange(1024)[None, :]]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(1024) / 1024)
    spec = np.fft.rfft(frames * window, axis=-1)
    magnitude = np.sqrt(spec.real**2 + spec.imag**2 + eps)
    basis = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=128, fmin=0, fmax=8000)  # Slaney
    mel = np.log(np.maximum(magnitude @ basis.T.astype(np.float64), 1e-5))
    want = n // 160 + 1
    if count < want:
        mel = np.concatenate([mel, np.repeat(mel[-1:], want - count, axis=0)])
    return mel[:want]


def test_mel_matches_an_independent_numpy_computation() -> None:
    """FCPE.mel equals the numpy reference to 1e-4: fails for center=True or other padding, a
    symmetric window, HTK mels or another fmin/fmax, a dropped 1e-9 (the quiet stretch shows it),
    no log clamp (the silent stretch), or a frame count other than N // 160 + 1."""
    rng = np.random.default_rng(1)
    loud = _voiced(6000, hz=220.0)
    quiet = (2e-5 * rng.standard_normal(5000)).astype(np.float32)
    x = np.concatenate([loud, quiet, np.zeros(4003, np.float32)])
    ours = FCPE(_tiny_net()).mel(torch.from_numpy(x)[None])[0].double().numpy()
    ref = _reference_mel(x)
    assert ours.shape == ref.shape == (len(x) // 160 + 1, 128)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    # the reference has teeth: the eps and the clamp both matter on this input
    assert np.abs(_reference_mel(x, eps=0.0) - ref).max() > 1e-3
    assert (ref == np.log(1e-5)).any()


@pytest.mark.parametrize("n", [100, 300, 432, 433, 1000])
def test_mel_of_short_input(n) -> None:
    """Input shorter than the window: zero padding where reflection cannot mirror (n <= 432),
    still N // 160 + 1 frames. Fails if short input raised (reflect pad larger than the input),
    or the frame count were off for it."""
    x = _voiced(n, seed=n)
    ours = FCPE(_tiny_net()).mel(torch.from_numpy(x)[None])[0].double().numpy()
    assert ours.shape == (n // 160 + 1, 128)
    np.testing.assert_allclose(ours, _reference_mel(x), atol=1e-4, rtol=0)


# -- the decoder -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_fcpe() -> FCPE:
    return FCPE(_tiny_net())


def _salience(*bumps: dict[int, float]) -> torch.Tensor:
    """``[1, len(bumps), 360]`` saliences, frame i set to ``bumps[i]`` (bin -> value)."""
    sal = torch.zeros(1, len(bumps), 360)
    for i, bump in enumerate(bumps):
        for k, v in bump.items():
            sal[0, i, k] = v
    return sal


def test_decode_symmetric_peak_is_the_bins_frequency(tiny_fcpe) -> None:
    """A peak with symmetric neighbours decodes to its bin's frequency: fails for an off-by-one
    window, a cents table shifted or of another range, or a wrong cents->Hz formula."""
    cents = tiny_fcpe.net.cent_table
    for k in (4, 100, 200, 355):
        sal = _salience({k - 2: 0.2, k - 1: 0.5, k: 0.9, k + 1: 0.5, k + 2: 0.2})
        got = float(tiny_fcpe.decode(sal)[0, 0])
        assert got == pytest.approx(_hz(cents[k]), rel=1e-6)
    assert _hz(cents[0]) == pytest.approx(32.70, rel=1e-6)
    assert _hz(cents[359]) == pytest.approx(1975.5, rel=1e-6)


def test_decode_asymmetric_weights_shift_by_the_weighted_mean(tiny_fcpe) -> None:
    """0.8 on bin k, 0.4 on k+1: cents k + a third of a bin -> the exact Hz; fails
    for a plain argmax, a weighted mean in Hz instead of cents, or unnormalised weights."""
    cents = tiny_fcpe.net.cent_table.double()
    got = tiny_fcpe.decode(_salience({150: 0.8, 151: 0.4}, {150: 0.8, 149: 0.2}))[0]
    up = (0.8 * cents[150] + 0.4 * cents[151]) / 1.2
    down = (0.8 * cents[150] + 0.2 * cents[149]) / 1.0
    step = float(cents[359] - cents[0]) / 359  # 19.78 cents: 360 bins from 32.70 to 1975.5 Hz
    assert float(cents[151] - cents[150]) == pytest.approx(step, abs=1e-3)
    assert float(up - cents[150]) == pytest.approx(step / 3.0, abs=1e-3)
    assert float(got[0]) == pytest.approx(_hz(up), rel=1e-6)
    assert float(got[1]) == pytest.approx(_hz(down), rel=1e-6)


def test_decode_threshold_is_strict(tiny_fcpe) -> None:
    """A peak at most ``threshold`` is unvoiced (0), above it voiced: fails for ``>=`` instead of
    ``>``, a threshold read from somewhere else, or 0.006 not being the default."""
    assert DEFAULT_THRESHOLD == 0.006
    cents = tiny_fcpe.net.cent_table
    sal = _salience({80: 0.5}, {80: 0.50001}, {80: 0.4})
    f0 = tiny_fcpe.decode(sal, threshold=0.5)[0]
    assert f0[0] == 0 and f0[2] == 0
    assert float(f0[1]) == pytest.approx(_hz(cents[80]), rel=1e-6)
    default = tiny_fcpe.decode(_salience({80: 0.0059}, {80: 0.0061}))[0]
    assert default[0] == 0 and float(default[1]) == pytest.approx(_hz(cents[80]), rel=1e-6)
    assert (tiny_fcpe.decode(torch.zeros(1, 3, 360)) == 0).all()


def test_decode_peaks_at_the_edges_clamp_the_window(tiny_fcpe) -> None:
    """Peaks at bin 0 and 359: no index error; the window is clamped to the edge bin (counted
    once per clamped slot, as torchfcpe does: bin 0 weighs 5 times). Fails for zero padding of
    the window (RMVPE's rule) or for an unclamped gather."""
    c = tiny_fcpe.net.cent_table.double()
    got = tiny_fcpe.decode(_salience({0: 0.8, 1: 0.4}, {359: 0.8, 358: 0.4}))[0]
    low = (5 * 0.8 * c[0] + 0.4 * c[1]) / (5 * 0.8 + 0.4)
    high = (5 * 0.8 * c[359] + 0.4 * c[358]) / (5 * 0.8 + 0.4)
    assert float(got[0]) == pytest.approx(_hz(low), rel=1e-6)
    assert float(got[1]) == pytest.approx(_hz(high), rel=1e-6)
    assert abs(float(got[0]) - _hz((0.8 * c[0] + 0.4 * c[1]) / 1.2)) > 0.05  # zero-padded rule


def test_decode_only_the_nine_bins_around_the_peak_count(tiny_fcpe) -> None:
    """Bumps 5 bins away (just outside the window) or far away leave the result unchanged; one 4
    bins away moves it. Fails for a wider/narrower window or a global weighted mean."""
    base = {100: 0.9, 101: 0.3}
    alone = float(tiny_fcpe.decode(_salience(base))[0, 0])
    for extra in ({105: 0.7}, {95: 0.7}, {300: 0.85}, {95: 0.7, 105: 0.7, 0: 0.8}):
        got = float(tiny_fcpe.decode(_salience({**base, **extra}))[0, 0])
        assert got == pytest.approx(alone, rel=1e-6), extra
    assert float(tiny_fcpe.decode(_salience({**base, 104: 0.7}))[0, 0]) > alone * 1.01


# -- infer / infer_batch ---------------------------------------------------------------------------
def test_infer_batch_equals_infer_per_track_and_groups_equal_lengths(tiny_fcpe, monkeypatch):
    """Tracks of mixed lengths in mixed order: each result equals infer() of that track alone, in
    input order; equal lengths share one forward pass (3 lengths -> 3 passes; max_batch=2 splits
    the three 4000-sample tracks). Fails for padding tracks to a common length (the GroupNorm
    sees the padding), results out of order, or one pass per track.

    The tolerance is relative (1e-5, 0.017 cents): this random net decodes near 1128 Hz, where
    float32 steps by 1.2e-4 Hz, so batched convolutions' rounding alone exceeds 1e-4 Hz."""
    lengths = [4000, 3000, 4000, 2500, 3000, 4000]
    wavs = [_voiced(n, hz=120.0 + 40 * i, seed=i) for i, n in enumerate(lengths)]
    alone = [tiny_fcpe.infer(w) for w in wavs]
    calls: list[int] = []
    forward = tiny_fcpe.net.forward

    def counting(mel: torch.Tensor) -> torch.Tensor:
        calls.append(mel.shape[0])
        return forward(mel)

    monkeypatch.setattr(tiny_fcpe.net, "forward", counting)
    batched = tiny_fcpe.infer_batch(wavs)
    assert sorted(calls) == [1, 2, 3]
    for w, a, b in zip(wavs, alone, batched, strict=True):
        assert a.dtype == b.dtype == np.float64 and b.shape == (len(w) // 160 + 1,)
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=0)
    calls.clear()
    split = tiny_fcpe.infer_batch(wavs, max_batch=2)
    assert sorted(calls) == [1, 1, 2, 2]
    for a, b in zip(alone, split, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=0)
    # the test has teeth: zero padding a track to a longer length changes its F0
    padded = tiny_fcpe.infer(np.pad(wavs[1], (0, 1000)))[: len(alone[1])]
    assert np.abs(padded / alone[1] - 1).max() > 1e-2


def test_infer_batch_empty_track_and_torch_input(tiny_fcpe) -> None:
    """An empty track gives [0.] without a forward pass (torch.stack of nothing / a reflect pad
    of nothing would raise); torch tensors and numpy arrays give the same F0; stereo is refused."""
    x = _voiced(2000)
    out = tiny_fcpe.infer_batch([np.zeros(0, np.float32), x, torch.from_numpy(x)])
    np.testing.assert_array_equal(out[0], np.zeros(1))
    np.testing.assert_array_equal(out[1], out[2])
    with pytest.raises(ValueError, match=r"mono audio \[N\], got shape \[2, 2000\]"):
        tiny_fcpe.infer(np.stack([x, x]))


# -- compute_f0(..., "fcpe") with the released weights -------------------------------------------
@pytest.fixture(scope="module")
def slt() -> np.ndarray:
    x, sr = sf.read(REPO / "data" / "demo" / "eval" / "slt" / "s33.flac", dtype="float32")
    assert sr == SR
    return x


def test_compute_f0_fcpe_on_a_demo_sentence(real_fcpe, slt) -> None:
    """slt's s33: p_len frames, median voiced F0 within 5 % of slt's 172 Hz, mostly voiced; the
    tail is trimmed (N // 160 + 1 -> p_len) and a longer p_len zero-pads the end. Fails for a
    wrong front end or decoder on the real weights (octave errors, all unvoiced), or trimming the
    head instead of the tail."""
    p_len = len(slt) // 160
    f0 = compute_f0(slt, "fcpe", fcpe=real_fcpe)
    assert f0.dtype == np.float32 and f0.shape == (p_len,)
    voiced = f0[f0 > 0]
    assert 0.5 < len(voiced) / p_len < 0.95
    assert np.median(voiced) == pytest.approx(172.0, rel=0.05)
    raw = real_fcpe.infer(slt)
    assert raw.shape == (p_len + 1,)
    np.testing.assert_allclose(f0, fcpe_range(raw, 50, 1100)[:p_len], atol=1e-3, rtol=0)
    longer = compute_f0(slt, "fcpe", fcpe=real_fcpe, p_len=p_len + 7)
    np.testing.assert_array_equal(longer[: p_len + 1], fcpe_range(raw, 50, 1100).astype("f4"))
    assert (longer[p_len + 1 :] == 0).all()


def test_compute_f0_fcpe_honours_the_range(real_fcpe, slt) -> None:
    """f0_min/f0_max: frames below f0_min become 0, those above f0_max are clamped to it, the rest
    unchanged. Fails if the range were ignored for fcpe, or applied by zeroing both sides."""
    free = compute_f0(slt, "fcpe", fcpe=real_fcpe)
    narrow = compute_f0(slt, "fcpe", fcpe=real_fcpe, f0_min=170, f0_max=200)
    low, high = (free > 0) & (free < 170), free > 200
    assert low.sum() > 10 and high.sum() > 3  # the range really cuts on this sentence
    assert (narrow[low] == 0).all() and (narrow[high] == 200).all()
    inside = (free >= 170) & (free <= 200)
    np.testing.assert_array_equal(narrow[inside], free[inside])
    assert narrow.max() == 200 and narrow[narrow > 0].min() >= 170


def test_compute_f0_fcpe_silence_short_input_and_missing_model(real_fcpe) -> None:
    """Digital silence and input under one hop give zeros of p_len; no model is a ValueError that
    names load_fcpe, even for silence. Fails if the model check moved after the early returns."""
    np.testing.assert_array_equal(
        compute_f0(np.zeros(SR, np.float32), "fcpe", fcpe=real_fcpe), np.zeros(100)
    )
    np.testing.assert_array_equal(
        compute_f0(_voiced(150), "fcpe", fcpe=real_fcpe, p_len=4), np.zeros(4)
    )
    assert compute_f0(_voiced(150), "fcpe", fcpe=real_fcpe).shape == (0,)
    for x in (_voiced(SR // 4), np.zeros(SR, np.float32)):
        with pytest.raises(ValueError, match=r"load_fcpe.*rvc-lora download fcpe"):
            compute_f0(x, "fcpe")


# -- files that are not FCPE checkpoints -----------------------------------------------------------
def _refusal(path: Path, *says: str) -> str:
    with pytest.raises(CheckpointError) as err:
        load_fcpe(path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg, msg
    assert err.value.__cause__ is None, "a chained traceback would be shown"
    for s in says:
        assert s in msg, (s, msg)
    return msg


def test_missing_empty_truncated_and_foreign_files(tmp_path) -> None:
    """Files that are not readable checkpoints: one line of ours naming the file. Fails if any
    reached the user as a torch/pickle/zip traceback."""
    missing = tmp_path / "nowhere" / "fcpe_c_v001.pt"
    with pytest.raises(CheckpointError) as err:
        load_fcpe(missing)
    assert str(missing) in str(err.value) and "rvc-lora download fcpe" in str(err.value)
    assert "\n" not in str(err.value)

    data = _tiny_file(tmp_path / "valid.pt").read_bytes()
    rng = np.random.default_rng(0)
    variants = {
        "empty.pt": (b"", "empty"),
        "half.pt": (data[: len(data) // 2], "not a readable PyTorch checkpoint"),
        "cut_tail.pt": (data[:-100], "not a readable PyTorch checkpoint"),
        "random.pt": (rng.bytes(4096), ""),  # read as a legacy pickle: unreadable or refused
        "text.pt": (b"version https://git-lfs.github.com/spec/v1\n", ""),
    }
    for name, (content, says) in variants.items():
        (tmp_path / name).write_bytes(content)
        _refusal(tmp_path / name, says)


def _drop(part: str, key: str) -> Callable[[dict], None]:
    return lambda c: c["config_dict"][part].pop(key)


def _set(part: str, **values: Any) -> Callable[[dict], None]:
    return lambda c: c["config_dict"][part].update(values)


def _state(**values: Any) -> Callable[[dict], None]:
    return lambda c: c["model"].update(values)


_NOT_FCPE = "not an FCPE checkpoint"
_UNFIT = "does not fit FCPENet"
_PAIR = "weight_g / weight_v are not"
_EDITS: dict[str, tuple[Callable[[dict], Any], str]] = {
    # layout
    "bare state dict": (lambda c: c["model"], _NOT_FCPE),
    "a list": (lambda c: list(c["model"].values()), _NOT_FCPE),
    "no config_dict": (lambda c: c.pop("config_dict"), _NOT_FCPE),
    "model a list": (lambda c: c.update(model=list(c["model"])), _NOT_FCPE),
    # variants we do not implement
    "attention": (_set("model", conv_only=False), "attention"),
    "harmonic embedding": (_set("model", use_harmonic_emb=True), "harmonic"),
    "another model type": (_set("model", type="CFNaiveMelPE2"), "'CFNaiveMelPE2' is not supported"),
    "mel at 44.1 kHz": (_set("mel", sr=44100), "rvc-lora needs 16000 Hz, hop 160"),
    "hop 512": (_set("mel", hop_size=512), "rvc-lora needs 16000 Hz, hop 160"),
    # a garbled config
    "no out_dims": (_drop("model", "out_dims"), "lacks or garbles 'out_dims'"),
    "no mel part": (lambda c: c["config_dict"].pop("mel"), "lacks or garbles 'mel'"),
    "num_mels a word": (_set("mel", num_mels="many"), "lacks or garbles"),
    "mel a list": (lambda c: c["config_dict"].update(mel=[16000]), "lacks or garbles"),
    "hidden 0": (_set("model", hidden_dims=0), "sizes out of range"),
    "hidden not a multiple of 4": (_set("model", hidden_dims=18), "sizes out of range"),
    "f0 range reversed": (_set("model", f0_min=2000.0), "ranges out of order"),
    "window over n_fft": (_set("mel", win_size=2048), "ranges out of order"),
    # weights that do not fit
    "missing key": (lambda c: c["model"].pop("norm.bias"), f"{_UNFIT}: missing 1 (norm.bias)"),
    "extra key": (_state(**{"extra.weight": torch.zeros(2)}), "unexpected 1 (extra.weight)"),
    "wrong shape": (_state(**{"norm.bias": torch.zeros(17)}), "wrong shape 1 (norm.bias (17,)"),
    "config bigger than weights": (_set("model", hidden_dims=32), f"{_UNFIT}: wrong shape"),
    "not a tensor": (_state(**{"norm.bias": "zeros"}), "not tensors"),
    "weight_g without weight_v": (lambda c: c["model"].pop("output_proj.weight_v"), _PAIR),
    "weight_v without weight_g": (lambda c: c["model"].pop("output_proj.weight_g"), _PAIR),
    "weight_g 1-d": (_state(**{"output_proj.weight_g": torch.ones(360)}), _PAIR),
    "weight_g a list": (_state(**{"output_proj.weight_g": [1.0]}), _PAIR),
}


@pytest.mark.parametrize("label", list(_EDITS))
def test_wrong_layout_config_and_weights_are_one_line_errors(tmp_path, label) -> None:
    """Each edit of a valid tiny file is refused with one line naming the file and what is
    wrong. Fails if an edit loaded (e.g. attention silently run as conv-only, extra keys
    dropped), or surfaced as a KeyError/TypeError/torch error (e.g. GroupNorm(4, 18))."""
    ckpt = checkpoint_dict(_tiny_net())
    edit, says = _EDITS[label]
    edited = edit(ckpt)
    content = edited if label in {"bare state dict", "a list"} else ckpt
    path = tmp_path / "edited.pt"
    torch.save(content, path)
    _refusal(path, says)


def test_the_unedited_file_loads(tmp_path) -> None:
    """The refusals above are the edits' doing: the same file unedited loads."""
    assert load_fcpe(_tiny_file(tmp_path / "valid.pt")).config == TINY


def test_a_pickled_module_is_refused_by_the_weights_only_unpickler(tmp_path) -> None:
    """``torch.save`` of the module itself (not its state dict) pickles class globals: refused by
    name, nothing built. Fails if load_fcpe used torch.load without weights_only."""
    path = tmp_path / "module.pt"
    torch.save({"model": _tiny_net(), "config_dict": {}}, path)
    _refusal(path, "refused to load", "could run code", "FCPENet")


def test_config_claiming_huge_sizes_with_tiny_weights_builds_nothing_big(
    tmp_path, monkeypatch
) -> None:
    """A 20 KB file whose config claims hidden_dims=4096 must be refused before a real network of
    that size is built (on the meta device, or by a cap). Fails while load_fcpe allocates the
    claimed network first (10**6 costs seconds and ends in a torch RuntimeError, not ours)."""
    real_init = FCPENet.__init__

    def init(self, config=None):
        if torch.get_default_device().type != "meta" and config is not None and config != TINY:
            pytest.fail(f"a real FCPENet of the file's claimed size was built: {config}")
        real_init(self, config)

    monkeypatch.setattr(FCPENet, "__init__", init)
    ckpt = checkpoint_dict(_tiny_net())
    ckpt["config_dict"]["model"].update(hidden_dims=4096, n_layers=64)
    torch.save(ckpt, tmp_path / "huge.pt")
    _refusal(tmp_path / "huge.pt")


@pytest.mark.parametrize(
    "mel",
    [
        {"n_fft": 0, "win_size": 0},
        {"n_fft": -4, "win_size": -8},
        {"fmin": 9000.0, "fmax": 100.0},
        {"fmin": float("nan")},
        {"fmax": 20000.0},
    ],
    ids=["n_fft 0", "n_fft negative", "fmin over fmax", "fmin NaN", "fmax over Nyquist"],
)
def test_impossible_front_ends_are_one_line_errors(tmp_path, mel) -> None:
    """A mel front end no 16 kHz log-mel can have is refused at load time, in one line. Fails
    while they crash in librosa/numpy (a traceback) or load and decode garbage pitch."""
    ckpt = checkpoint_dict(_tiny_net())
    ckpt["config_dict"]["mel"].update(mel)
    torch.save(ckpt, tmp_path / "mel.pt")
    _refusal(tmp_path / "mel.pt")
