"""StreamConverter: block-by-block conversion that reproduces the offline result where the model
allows it, joins blocks without clicks, and keeps a state that does not grow."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rvc_lora.audio import load_audio
from rvc_lora.features.hubert import load_content_encoder
from rvc_lora.inference.stream import NoiseTape, StreamConverter, StreamError
from rvc_lora.models import get_preset, load_rvc_checkpoint
from rvc_lora.models.synthesizer import Synthesizer
from tests.inference.test_cli import REPO

DEMO = [REPO / "data" / "demo" / "eval" / "slt" / f"s{i}.flac" for i in (34, 35, 37)]


class FixedFrontEnd(StreamConverter):
    """Features and F0 of the whole stream fixed in advance, looked up by absolute frame: the
    front end then adds no difference of its own, and what is tested is the rest (windowed
    synthesis, noise tape, sine phase, decoder context, SOLA, crossfade)."""

    def fix(self, frames: int, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        c = self.voice.config
        self.offset = self.sizes.window_frames + 10  # frames before 0 (the silence before)
        total = frames + 2 * self.offset
        smooth = torch.nn.functional.avg_pool1d(
            torch.randn(1, c.feature_dim, total + 8, generator=g), 9, 1
        )
        self.feats = smooth[0].T.unsqueeze(0)[:, :total]  # [1, total, D], slowly varying
        t = np.arange(total) / 100
        f0 = 150 + 40 * np.sin(2 * np.pi * 0.7 * t)
        f0[(t % 1.3) > 1.0] = 0.0  # unvoiced stretches
        f0[: self.offset] = 0.0
        self.f0 = f0.astype(np.float32)

    def frontend(self, audio, start):
        i, n = start + self.offset, len(audio) // 160
        return self.feats[:, i : i + n], self.f0[i : i + n]


def _local_voice() -> Synthesizer:
    """The tiny synthesizer with no attention layers in its prior encoder: every part is then
    local in time, so a window with enough context computes what the whole input computes."""
    torch.manual_seed(0)
    return Synthesizer(get_preset("tiny").replace(n_layers=0)).eval()


def _stream(conv: StreamConverter, audio: np.ndarray) -> np.ndarray:
    b = conv.block_samples
    return np.concatenate([conv.push(audio[i : i + b]) for i in range(0, len(audio) - b + 1, b)])


def _snr(ref: np.ndarray, got: np.ndarray) -> float:
    return float(10 * np.log10((ref**2).sum() / max(((got - ref) ** 2).sum(), 1e-30)))


@pytest.mark.parametrize("block_s", [0.1, 0.25, 0.5])
def test_stream_equals_offline_when_the_model_is_local(block_s):
    # 0.4 s of lookahead covers the right-hand reach of the flow (24 frames) and the decoder.
    conv = FixedFrontEnd(
        _local_voice(), None, block_s=block_s, extra_s=0.5, crossfade_s=0.05, lookahead_s=0.4
    )
    audio = np.zeros(16000 * 6, np.float32)  # the fixed front end ignores the samples
    conv.fix(len(audio) // 160)
    streamed = _stream(conv, audio)
    offline = conv.convert_offline(audio)[: len(streamed)]
    hop, s = conv.hop, conv.sizes
    # The stream's first output is the latency's worth of time before the input starts, where
    # the offline result has silence: compare from the input's first frame on.
    begin = (s.crossfade + s.search + s.lookahead) * hop
    streamed, offline = streamed[begin:], offline[begin:]
    joins = np.zeros(len(streamed), bool)
    for j in range(s.block * hop - begin % (s.block * hop), len(streamed), s.block * hop):
        joins[max(j - 2 * hop, 0) : j + (s.crossfade + 2) * hop] = True
    assert _snr(offline[~joins], streamed[~joins]) >= 25.0
    assert _snr(offline, streamed) >= 25.0  # the joins too: the overlapping blocks agree


def test_the_sine_phase_carried_between_blocks_is_what_makes_them_agree(monkeypatch):
    """Restart the NSF sine at every block (as RVC's realtime mode does): the stream drifts."""
    conv = FixedFrontEnd(
        _local_voice(), None, block_s=0.25, extra_s=0.5, crossfade_s=0.05, lookahead_s=0.4
    )
    audio = np.zeros(16000 * 4, np.float32)
    conv.fix(len(audio) // 160)
    real = conv._synthesize
    monkeypatch.setattr(
        conv, "_synthesize", lambda a, st, k, phase=0.0, lookahead=0: real(a, st, k, 0.0, lookahead)
    )
    streamed = _stream(conv, audio)
    assert _snr(conv.convert_offline(audio)[: len(streamed)], streamed) < 10.0


@pytest.fixture(scope="module")
def demo_voice():
    model = load_rvc_checkpoint(
        REPO / "data/pretrained/tiny/f0G16k.pth", keep_posterior=False
    ).model
    encoder = load_content_encoder(REPO / "data/pretrained/hubert_tiny.pt")
    audio = np.concatenate([load_audio(p, 16000)[0] for p in DEMO]).astype(np.float32)
    return model.eval(), encoder, audio


def test_demo_stream_has_no_clicks_at_block_joins(demo_voice):
    model, encoder, audio = demo_voice
    conv = StreamConverter(model, encoder, block_s=0.25, extra_s=1.0, crossfade_s=0.05)
    out = _stream(conv, audio)
    step = np.abs(np.diff(out))
    b = conv.sizes.block * conv.hop
    at_joins = np.array([step[j - 2 : j + 2].max() for j in range(b, len(out) - 2, b)])
    inside = np.percentile(step, 99.9)
    # A click is a jump far beyond what the signal does anyway: none at any join.
    assert at_joins.max() <= 1.5 * inside
    assert np.abs(out).max() <= 1.0 and np.isfinite(out).all()


def test_state_does_not_grow_with_the_stream(demo_voice):
    model, encoder, audio = demo_voice
    conv = StreamConverter(model, encoder, block_s=0.1, extra_s=0.5, crossfade_s=0.05)
    b = conv.block_samples
    sizes = []
    for i in range(len(audio) // b):  # 7 s: many times the window and the noise tape's tiles
        conv.push(audio[i * b : (i + 1) * b])
        sizes.append(conv.state_numel())
    half = sizes[len(sizes) // 2 :]
    assert max(sizes) <= 2 * sizes[5] and max(half) == max(sizes[10:])


def test_noise_tape_gives_each_frame_the_same_noise_however_it_is_asked_for():
    tape = NoiseTape(channels=3, hop=4, seed=1, tile=10, keep=2)
    prior, source = tape.frames(-15, 50)
    for start, n in ((-15, 7), (-8, 13), (5, 30), (20, 15)):
        p, s = (
            NoiseTape(3, 4, seed=1, tile=10, keep=2).frames(start, n)
            if start == 5
            else tape.frames(start, n)
        )
        assert torch.equal(p, prior[:, start + 15 : start + 15 + n])
        assert torch.equal(s, source[(start + 15) * 4 : (start + 15 + n) * 4])
    assert len(tape._tiles) <= 2 + 5  # a request may hold more tiles than kept, never many more
    assert not torch.equal(NoiseTape(3, 4, seed=2).frames(0, 5)[0], prior[:, 15:20])


def test_bad_settings_and_blocks_are_one_line_errors(demo_voice):
    model, encoder, _ = demo_voice
    with pytest.raises(StreamError, match="block_s: 0.001 s is under 10 ms"):
        StreamConverter(model, encoder, block_s=0.001)
    with pytest.raises(StreamError, match="needs its network"):
        StreamConverter(model, encoder, f0_method="rmvpe")
    conv = StreamConverter(model, encoder, block_s=0.1)
    with pytest.raises(StreamError, match="expected 1600 samples"):
        conv.push(np.zeros(100, np.float32))
    with pytest.raises(StreamError, match="NaN or Inf"):
        conv.push(np.full(1600, np.nan, np.float32))


def test_stream_mode_writes_the_conversion_and_a_latency_report(tmp_path):
    import json

    import soundfile as sf

    from rvc_lora.inference.run import run
    from tests.inference.test_cli import _cfg
    from tests.inference.test_onnx_cli import SOURCE, demo_run

    (tmp_path / "run").mkdir()
    voice = demo_run(tmp_path / "run")
    out = tmp_path / "streamed.wav"
    options = {"stream.block_s": 0.1, "stream.extra_s": 1.0, "stream.lookahead_s": 0.05}
    assert run(_cfg(mode="stream", ckpt=voice, source=SOURCE, output=out, **options)) == [out]
    audio, sr = sf.read(out)
    source_frames = sf.info(SOURCE).frames * 16000 // sf.info(SOURCE).samplerate // 160
    assert sr == 16000 and len(audio) == source_frames * 160  # aligned, latency removed
    report = json.loads((tmp_path / "streamed.wav.latency.json").read_text())
    assert report["algorithmic_latency_ms"] == 100 + 50 + 10 + 50
    assert report["blocks"] == source_frames // 10
    assert 0 < report["compute_ms"]["median"] <= report["compute_ms"]["max"]
    assert report["realtime_factor"] > 0 and report["missed_deadlines"] >= 0
    # The voice speaks where the source does: the stream is aligned with its input.
    src, _ = load_audio(SOURCE, 16000)
    n = len(audio) // 1600 * 1600
    env_in = np.abs(src[:n]).reshape(-1, 1600).mean(1)
    env_out = np.abs(audio[:n]).reshape(-1, 1600).mean(1)
    assert np.corrcoef(env_in, env_out)[0, 1] > 0.5
