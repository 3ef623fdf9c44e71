"""Mixed-voice batches: each row of one forward uses its own adapter (or the bare base) and
equals converting that item alone with its voice merged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rvc_lora.data.synthetic import phrases
from rvc_lora.features.hubert import load_content_encoder
from rvc_lora.features.hubert_tiny import write_tiny_fairseq_checkpoint
from rvc_lora.inference.pipeline import ConversionPipeline, ConvertOptions
from rvc_lora.inference.voices import VoiceBank
from rvc_lora.lora import LoraConfig, LoraError, inject_lora, save_adapter
from rvc_lora.models.synthesizer import InferNoise, draw_infer_noise
from tests.inference.test_voices import make_base
from tests.lora.tiny import randomize_adapter

RTOL = 1e-5
# Seven adapters of different structures: targets (decoder: dilated Conv1d + ConvTranspose1d;
# decoder_flow: + the flow's WN convs; all: + the text encoder's Linear and attention convs),
# ranks, scales (rsLoRA, per-pattern ranks) and trained speaker rows or none.
CONFIGS = [
    LoraConfig(preset="decoder", rank=4, alpha=8),
    LoraConfig(preset="decoder", rank=2, alpha=2),
    LoraConfig(
        preset="decoder_flow", rank=2, alpha=3, use_rslora=True, rank_pattern={r"dec\.ups\.\d+": 3}
    ),  # fmt: skip
    LoraConfig(preset="all", rank=8, alpha=4),
    LoraConfig(preset="decoder", rank=4, alpha=8, extra_trainable=[]),
    LoraConfig(preset="all", rank=1, alpha=1),
    LoraConfig(preset="decoder_flow", rank=6, alpha=12),
]
NAMES = [f"v{i}" for i in range(len(CONFIGS))]


@pytest.fixture(scope="module")
def bank(tmp_path_factory) -> VoiceBank:
    out = tmp_path_factory.mktemp("mixed")
    bank = VoiceBank(make_base())
    for i, (name, cfg) in enumerate(zip(NAMES, CONFIGS)):
        model = make_base()
        inject_lora(model, cfg)
        randomize_adapter(model, seed=30 + i, relative=0.1)
        if cfg.extra_trainable:  # a trained speaker table (without it, emb_g is the base's)
            with torch.no_grad():
                model.emb_g.weight.add_(0.3 * torch.randn(model.emb_g.weight.shape))
        bank.add(name, save_adapter(model, out / f"{name}.safetensors"))
    return bank


def _batch(bank: VoiceBank, lengths: list[int], seed: int):
    g = torch.Generator().manual_seed(seed)
    c, b, t = bank.model.config, len(lengths), max(lengths)
    phone = torch.randn(b, t, c.feature_dim, generator=g)
    pitch = torch.randint(1, 256, (b, t), generator=g)
    pitchf = torch.rand(b, t, generator=g) * 300 + 80
    pitchf[:, :5] = 0.0
    sid = torch.randint(0, c.spk_embed_dim, (b,), generator=g)
    noise = draw_infer_noise(bank.model, b, t, generator=g)
    return phone, torch.tensor(lengths), pitch, pitchf, sid, noise


def _alone(bank: VoiceBank, voice: str | None, row: int, batch) -> torch.Tensor:
    """Row ``row`` converted on its own by the voice merged into a plain copy of the base."""
    phone, lengths, pitch, pitchf, sid, noise = batch
    n = int(lengths[row])
    hop = bank.model.config.hop_length
    own = InferNoise(noise.prior[row : row + 1, :, :n], noise.source[row : row + 1, : n * hop])
    model = bank.merged(voice)
    return model.infer(phone[row : row + 1, :n], lengths[row : row + 1], pitch[row : row + 1, :n],
                       pitchf[row : row + 1, :n], sid[row : row + 1], noise=own, fast=False)[0]  # fmt: skip


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize(
    "voices",
    [
        ["v0", "v0", "v0"],  # 1 voice
        [None, "v3", "v2", "v3"],  # 3 voices, the bare base among them
        [None, *NAMES],  # 8 voices
    ],
    ids=["1-voice", "3-voices", "8-voices"],
)
def test_every_row_equals_its_voice_merged_and_run_alone(bank, voices):
    lengths = [40 - 3 * i for i in range(len(voices))]  # all different: padding in every row
    batch = _batch(bank, lengths, seed=len(voices))
    bank.use("v1")  # an active voice: the mixed batch must not compute with it
    out = bank.infer_mixed(*batch[:5], voices, noise=batch[5])[0]
    hop = bank.model.config.hop_length
    for row, voice in enumerate(voices):
        n = lengths[row] * hop
        assert _rel(out[row : row + 1, :, :n], _alone(bank, voice, row, batch)) <= RTOL
        assert not out[row, :, n:].any()  # past its end: zeros
    assert bank.active == "v1"


def test_rows_do_not_see_each_other_and_a_permutation_permutes_outputs(bank):
    voices = ["v0", None, "v3", "v5", "v2"]
    batch = _batch(bank, [33, 20, 41, 12, 27], seed=9)
    out = bank.infer_mixed(*batch[:5], voices, noise=batch[5])[0]
    perm = [3, 0, 4, 2, 1]
    phone, lengths, pitch, pitchf, sid, noise = batch
    t = max(lengths[perm]).item()  # the longest row moved: the padded width may change
    permuted = (phone[perm, :t], lengths[perm], pitch[perm, :t], pitchf[perm, :t], sid[perm])
    noise_p = InferNoise(noise.prior[perm, :, :t], noise.source[perm, : t * 160])
    out_p = bank.infer_mixed(*permuted, [voices[i] for i in perm], noise=noise_p)[0]
    w = min(out.shape[-1], out_p.shape[-1])
    assert _rel(out_p[..., :w], out[perm][..., :w]) <= RTOL
    # Another batch-mate changes nothing in row 0.
    other = list(voices)
    other[1] = "v6"
    out_o = bank.infer_mixed(*batch[:5], other, noise=batch[5])[0]
    assert _rel(out_o[0], out[0]) <= RTOL and _rel(out_o[1], out[1]) > 100 * RTOL


def test_dora_voices_and_mismatched_rows_are_refused(bank, tmp_path):
    model = make_base()
    inject_lora(model, LoraConfig(preset="decoder", rank=2, use_dora=True))
    randomize_adapter(model, seed=3, relative=0.1)
    bank.add("dora", save_adapter(model, tmp_path / "dora.safetensors"))
    batch = _batch(bank, [10, 8], seed=1)
    try:
        with pytest.raises(LoraError, match="voice 'dora' is DoRA.*bank.use"):
            bank.infer_mixed(*batch[:5], ["v0", "dora"], noise=batch[5])
        with pytest.raises(LoraError, match="3 voices for a batch of 2 rows"):
            bank.infer_mixed(*batch[:5], ["v0", "v1", None], noise=batch[5])
        with pytest.raises(LoraError, match="unknown voice 'nobody'"):
            bank.infer_mixed(*batch[:5], ["v0", "nobody"], noise=batch[5])
    finally:
        bank.remove("dora")


@pytest.mark.parametrize("strategy", ["rows", "voices"])
def test_convert_batch_equals_converting_each_item_with_its_merged_voice(bank, tmp_path, strategy):
    encoder = load_content_encoder(write_tiny_fairseq_checkpoint(tmp_path / "hubert_tiny.pt"))
    pipeline = ConversionPipeline(encoder, fast=False)  # the module decoder, as mixed batches
    opts = ConvertOptions(f0_method="pm", seed=5)
    audios = [phrases(16000, n=2, seconds=0.7 + 0.2 * i, seed=i) for i in range(4)]
    voices = ["v2", None, "v0", "v2"]
    items = [(a, v, opts) for a, v in zip(audios, voices)]
    bank.use("v3")
    got = bank.convert_batch(pipeline, items, max_rows=3, strategy=strategy)
    assert bank.active == "v3"  # the caller's voice is back
    for (audio, sr), a, v in zip(got, audios, voices):
        want, want_sr = pipeline.convert(bank.merged(v), a, opts)
        assert sr == want_sr and audio.shape == want.shape
        assert np.abs(audio - want).max() <= RTOL * np.abs(want).max()
    bank.use(None)


def test_auto_strategy_batches_rows_on_cuda_only_and_names_are_checked():
    from rvc_lora.inference.mixed import resolve_strategy

    assert resolve_strategy("auto", "cuda:0") == "rows"
    assert resolve_strategy("auto", "cpu") == "voices"
    assert resolve_strategy("rows", "cpu") == "rows"
    with pytest.raises(LoraError, match="expected one of auto, rows, voices, got 'row'"):
        resolve_strategy("row", "cpu")


def test_manifest_of_jobs_converts_each_source_with_its_voice(tmp_path):
    """`infer.py jobs=manifest.csv`: each output equals converting that source alone with its
    adapter (`infer.py ckpt=adapter`), a bad source is skipped and counted."""
    import soundfile as sf
    from omegaconf import OmegaConf

    from rvc_lora.inference.run import run
    from rvc_lora.lora import base_state_dict
    from rvc_lora.utils.atomic import atomic_torch_save
    from tests.inference.test_cli import _cfg

    encoder = write_tiny_fairseq_checkpoint(tmp_path / "hubert_tiny.pt")
    base = make_base()
    atomic_torch_save({"model": base_state_dict(base)}, tmp_path / "base.pth")
    features = {"encoder_path": str(encoder), "f0_method": "pm"}
    voices = {}
    for name, cfg in (("a", CONFIGS[0]), ("b", CONFIGS[3])):
        run_dir = tmp_path / name
        (run_dir / ".hydra").mkdir(parents=True)
        model = make_base()
        inject_lora(model, cfg)
        randomize_adapter(model, seed=len(name) + ord(name), relative=0.1)
        voices[name] = save_adapter(model, run_dir / "adapter.safetensors")
        config = {
            "model": {"preset": "tiny", "f0": True, "pretrained_g": str(tmp_path / "base.pth")}
        }
        OmegaConf.save(
            OmegaConf.create({**config, "features": features}), run_dir / ".hydra/config.yaml"
        )
    for i in range(3):
        sf.write(tmp_path / f"s{i}.wav", phrases(16000, n=2, seconds=0.8 + 0.3 * i, seed=i), 16000)
    (tmp_path / "broken.wav").write_bytes(b"RIFF....not audio")
    rows = ["source,voice,output", "s0.wav,a/adapter.safetensors,out/0.wav",
            "s1.wav,b/adapter.safetensors,out/1.wav", "s2.wav,a/adapter.safetensors,out/2.wav",
            "broken.wav,b/adapter.safetensors,out/3.wav"]  # fmt: skip
    (tmp_path / "jobs.csv").write_text("\n".join(rows) + "\n")
    # rows: the mixed batches (on this CPU, auto would run voice by voice)
    written = run(_cfg(jobs=tmp_path / "jobs.csv", jobs_strategy="rows", output_subtype="FLOAT"))
    assert written == [tmp_path / "out" / f"{i}.wav" for i in range(3)]
    for i, voice in enumerate(["a", "b", "a"]):
        alone = tmp_path / f"alone{i}.wav"
        run(
            _cfg(
                ckpt=voices[voice],
                source=tmp_path / f"s{i}.wav",
                output=alone,
                output_subtype="FLOAT",
            )
        )
        got, want = sf.read(written[i])[0], sf.read(alone)[0]
        assert got.shape == want.shape
        # The single conversion decodes with the fast decoder: same maths, other rounding.
        assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()
    assert not (tmp_path / "out" / "3.wav").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("source,output\na.wav,b.wav\n", "missing voice"),
        ("source,voice,output\n", "at least one row"),
        ("source,voice,output\na.wav,,o.wav\nb.wav,,o.wav\n", "two jobs write"),
        (
            "source,voice,output\na.wav,nope.safetensors,o.wav\n",
            "voice .*nope.safetensors does not exist",
        ),
    ],
)
def test_unusable_manifests_are_one_line_errors(tmp_path, text, message):
    from rvc_lora.inference.jobs import JobsError
    from rvc_lora.inference.run import run
    from tests.inference.test_cli import _cfg

    (tmp_path / "jobs.csv").write_text(text)
    with pytest.raises(JobsError, match=message) as err:
        run(_cfg(jobs=tmp_path / "jobs.csv"))
    assert "\n" not in str(err.value)


def test_unknown_jobs_strategy_fails_before_reading_the_manifest(tmp_path):
    from rvc_lora.inference.run import run
    from tests.inference.test_cli import _cfg

    with pytest.raises(LoraError, match="got 'batch'"):
        run(_cfg(jobs=tmp_path / "absent.csv", jobs_strategy="batch"))
