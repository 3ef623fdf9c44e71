"""Offline conversion pipeline (RVC_FACTS.md §9.2) on the tiny model and tiny content encoder."""

from __future__ import annotations

import resource
import sys

import numpy as np
import pytest
import torch

from rvc_lora.features.hubert import load_content_encoder
from rvc_lora.features.hubert_tiny import write_tiny_fairseq_checkpoint
from rvc_lora.features.index import FeatureIndex, RetrievalIndexError, build_index
from rvc_lora.features.pitch import coarse_pitch
from rvc_lora.inference.pipeline import ConversionError, ConversionPipeline, ConvertOptions
from rvc_lora.models import build_synthesizer

SR = 16000
HOP = 160  # tiny preset: 16 kHz, hop 160


def voice_like(seconds: float, seed: int = 0) -> np.ndarray:
    """A gliding tone in bursts (voiced) between near-silent gaps (unvoiced), plus low noise."""
    t = np.arange(int(seconds * SR)) / SR
    f = 160 + 50 * np.sin(2 * np.pi * 0.4 * t)
    on = (t % 1.5) > 0.5
    noise = 0.003 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.4 * np.sin(2 * np.pi * np.cumsum(f) / SR) * on + noise).astype(np.float32)


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return load_content_encoder(
        write_tiny_fairseq_checkpoint(tmp_path_factory.mktemp("hubert") / "h.pt")
    )


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_synthesizer("tiny").eval()


@pytest.fixture(scope="module")
def nono():
    torch.manual_seed(0)
    return build_synthesizer("tiny", f0=False).eval()


@pytest.fixture(scope="module")
def index():
    rng = np.random.default_rng(0)
    return FeatureIndex(build_index(rng.standard_normal((2000, 256)).astype(np.float32)))


@pytest.fixture(scope="module")
def audio():
    return voice_like(3.0)


PM = dict(f0_method="pm")


class Recorder:
    """Wraps ``_synthesize``: records its inputs; ``stub=True`` returns silence of the right length."""

    def __init__(self, pipe: ConversionPipeline, monkeypatch, stub: bool = False) -> None:
        self.calls: list[dict[str, torch.Tensor | None]] = []
        real = pipe._synthesize

        def wrapped(model, phone, lengths, pitch, pitchf, sid):
            self.calls.append(dict(phone=phone.clone(), lengths=lengths.clone(),
                                   pitch=None if pitch is None else pitch.clone(),
                                   pitchf=None if pitchf is None else pitchf.clone()))  # fmt: skip
            if stub:
                return np.zeros(int(lengths[0]) * model.config.hop_length, np.float32)
            return real(model, phone, lengths, pitch, pitchf, sid)

        monkeypatch.setattr(pipe, "_synthesize", wrapped)

    def cat(self, key: str) -> torch.Tensor:
        return torch.cat([c[key][0] for c in self.calls])


def test_rate_length_and_range(encoder, model, audio):
    pipe = ConversionPipeline(encoder)
    out, sr = pipe.convert(model, audio, ConvertOptions(**PM))
    assert sr == model.config.sr == SR and out.dtype == np.float32
    # RVC drops 1-2 frames per chunk (HuBERT's 400-sample window); one chunk here.
    assert 0 <= len(audio) - len(out) <= 2 * HOP
    assert np.isfinite(out).all() and np.abs(out).max() <= 0.99 + 1e-6
    out22, sr22 = pipe.convert(model, audio, ConvertOptions(resample_sr=22050, **PM))
    assert sr22 == 22050
    assert abs(len(out22) - len(out) * 22050 / SR) <= 1


def test_pitch_shift_doubles_pitchf_and_recomputes_coarse(encoder, model, audio, monkeypatch):
    pipe = ConversionPipeline(encoder)
    rec0, _ = (
        Recorder(pipe, monkeypatch, stub=True),
        pipe.convert(model, audio, ConvertOptions(**PM)),
    )
    rec12 = Recorder(pipe, monkeypatch, stub=True)
    pipe.convert(model, audio, ConvertOptions(pitch=12, **PM))
    f0, f12 = rec0.cat("pitchf"), rec12.cat("pitchf")
    voiced = f0 > 0
    assert voiced.float().mean() > 0.3 and (~voiced).any()
    torch.testing.assert_close(f12[voiced] / f0[voiced], torch.full_like(f0[voiced], 2.0),
                               rtol=1e-4, atol=0)  # fmt: skip
    assert (f12[~voiced] == 0).all()
    assert torch.equal(rec12.cat("pitch"), coarse_pitch(f12))
    assert not torch.equal(rec12.cat("pitch"), rec0.cat("pitch"))


def test_index_rate_zero_equals_no_index(encoder, model, audio, index):
    pipe = ConversionPipeline(encoder)
    plain, _ = pipe.convert(model, audio, ConvertOptions(index_rate=0.75, **PM))
    rate0, _ = pipe.convert(model, audio, ConvertOptions(index_rate=0.0, **PM), index)
    assert np.array_equal(plain, rate0)
    rate1, _ = pipe.convert(model, audio, ConvertOptions(index_rate=1.0, **PM), index)
    assert not np.array_equal(plain, rate1)


def test_protect(encoder, model, nono, audio, index, monkeypatch):
    pipe = ConversionPipeline(encoder)

    def phones(m, **kw):
        rec = Recorder(pipe, monkeypatch, stub=True)
        pipe.convert(m, audio, ConvertOptions(**PM, **kw), index)
        return rec

    off = phones(model, index_rate=1.0, protect=0.5)
    # 0.5 disables protect: same features as a model without F0 (no protect path at all)
    assert torch.equal(off.cat("phone"), phones(nono, index_rate=1.0, protect=0.33).cat("phone"))
    on = phones(model, index_rate=1.0, protect=0.33)
    raw = phones(model, index_rate=0.0, protect=0.33).cat("phone")  # unretrieved features
    unvoiced = on.cat("pitchf") < 1
    assert unvoiced.any() and (~unvoiced).any()
    assert torch.equal(on.cat("phone")[~unvoiced], off.cat("phone")[~unvoiced])
    expected = 0.33 * off.cat("phone")[unvoiced] + 0.67 * raw[unvoiced]
    torch.testing.assert_close(on.cat("phone")[unvoiced], expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(on.cat("phone")[unvoiced], off.cat("phone")[unvoiced])


def test_seed_makes_output_reproducible_and_keeps_caller_rng(encoder, model, audio):
    pipe = ConversionPipeline(encoder)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a, _ = pipe.convert(model, audio, ConvertOptions(seed=5, **PM))
    assert torch.equal(torch.get_rng_state(), before)
    b, _ = pipe.convert(model, audio, ConvertOptions(seed=5, **PM))
    c, _ = pipe.convert(model, audio, ConvertOptions(seed=6, **PM))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_nono_model_converts(encoder, nono, audio, monkeypatch):
    pipe = ConversionPipeline(encoder)
    rec = Recorder(pipe, monkeypatch)
    out, sr = pipe.convert(nono, audio, ConvertOptions(f0_method="rmvpe"))  # F0 never computed
    assert rec.calls[0]["pitch"] is None and rec.calls[0]["pitchf"] is None
    assert sr == SR and np.isfinite(out).all() and 0 <= len(audio) - len(out) <= 2 * HOP


def chunk_output_samples(rec: Recorder, hop: int, t_pad_tgt: int) -> int:
    return sum(int(c["lengths"][0]) * hop - 2 * t_pad_tgt for c in rec.calls)


def test_chunked_with_small_constants_real_model(encoder, model, monkeypatch):
    audio = voice_like(7.3)
    pipe = ConversionPipeline(encoder, x_pad=1, x_query=1, x_center=3, x_max=4)
    rec = Recorder(pipe, monkeypatch)
    out, _ = pipe.convert(model, audio, ConvertOptions(**PM))
    assert len(rec.calls) == 3  # cuts near 3 and 6 s
    assert len(out) == chunk_output_samples(rec, HOP, SR)
    assert 0 <= len(audio) - len(out) <= 2 * HOP * len(rec.calls) + HOP
    assert np.isfinite(out).all()


@pytest.mark.slow
def test_ten_minutes_in_bounded_chunks(encoder, model, monkeypatch):
    audio = np.tile(voice_like(30.0), 20)  # 10 min
    pipe = ConversionPipeline(encoder)  # fp32 constants: pad 1, query 6, center 38, max 41
    rec = Recorder(pipe, monkeypatch, stub=True)  # the tiny synthesizer would take minutes
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out, sr = pipe.convert(model, audio, ConvertOptions(**PM))
    growth = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    growth_bytes = growth if sys.platform == "darwin" else growth * 1024
    assert len(rec.calls) > 1
    frames = [int(c["lengths"][0]) for c in rec.calls]
    # A chunk spans at most x_center + 2 x_query seconds between cuts, plus 2 x_pad of padding
    # (RVC's cut windows; x_max only decides whether to cut at all).
    assert max(frames) <= (38 + 2 * 6 + 2 * 1) * 100 + 1
    assert all(c["phone"].shape[1] == n for c, n in zip(rec.calls, frames))
    assert len(out) == chunk_output_samples(rec, HOP, SR)
    assert 0 <= len(audio) - len(out) <= 2 * HOP * len(rec.calls) + HOP
    assert growth_bytes < 1.5 * 2**30


def test_bad_options_and_inputs(encoder, model, audio, index):
    for kw in (dict(index_rate=1.5), dict(protect=0.6), dict(f0_method="crepe"),
               dict(resample_sr=8000), dict(speaker_id=-1), dict(pitch=float("nan"))):  # fmt: skip
        with pytest.raises(ConversionError) as err:
            ConvertOptions(**kw)
        assert "\n" not in str(err.value)
    pipe = ConversionPipeline(encoder)
    with pytest.raises(ConversionError, match="rmvpe"):
        pipe.convert(model, audio, ConvertOptions())
    with pytest.raises(ConversionError, match="speaker"):
        n_speakers = model.config.spk_embed_dim
        pipe.convert(model, audio, ConvertOptions(speaker_id=n_speakers, **PM))
    with pytest.raises(ConversionError, match="samples"):
        pipe.convert(model, audio[:100], ConvertOptions(**PM))
    wide = FeatureIndex(
        build_index(np.random.default_rng(0).standard_normal((100, 768)).astype(np.float32))
    )
    with pytest.raises(RetrievalIndexError, match="768-d.*256-d"):
        pipe.convert(model, audio, ConvertOptions(**PM), wide)
    with pytest.raises(ConversionError):
        ConversionPipeline(encoder, x_query=20, x_center=38)
