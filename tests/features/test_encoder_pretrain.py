"""Encoder pretraining on a parallel corpus: unit labels, training signal, fairseq round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rvc_lora.data.synthetic import phrases
from rvc_lora.features.encoder_pretrain import (
    EncoderTrainConfig,
    fairseq_weights,
    parallel_units,
    train_encoder,
    unit_accuracy,
)
from rvc_lora.features.fairseq_pickle import load_fairseq_checkpoint
from rvc_lora.features.hubert import ContentEncoder, num_frames
from rvc_lora.features.hubert_tiny import write_tiny_fairseq_checkpoint

SR = 16_000


def _corpus() -> dict[str, dict[str, np.ndarray]]:
    """Two 'voices' saying three 'sentences': the second voice is the first, slower and louder."""
    import soxr

    first = {
        f"s{i}": phrases(SR, n=2, seconds=0.8, seed=i, f0=150).astype(np.float32) for i in range(3)
    }
    second = {k: 1.5 * soxr.resample(w, SR, SR * 1.2).astype(np.float32) for k, w in first.items()}
    return {"a": first, "b": second}


def test_units_cover_every_frame_and_agree_for_the_same_audio() -> None:
    corpus = _corpus()
    corpus["c"] = {k: w.copy() for k, w in corpus["a"].items()}  # an identical third voice
    labels = parallel_units(corpus, 8, pivot="a")
    for (voice, sentence), lab in labels.items():
        assert lab.shape == (num_frames(len(corpus[voice][sentence])),)
        assert lab.min() >= 0 and lab.max() < 8
    for sentence in corpus["a"]:
        # identical audio aligns frame to frame (DTW's diagonal), so the labels are identical
        np.testing.assert_array_equal(labels[("c", sentence)], labels[("a", sentence)])
    assert len({int(v) for lab in labels.values() for v in lab}) > 3


def test_label_only_voices_are_labelled_without_changing_the_units() -> None:
    corpus = _corpus()
    alone = parallel_units({"a": corpus["a"]}, 6, pivot="a", seed=3)
    with_extra = parallel_units(corpus, 6, pivot="a", seed=3, label_only=["b"])
    for sentence in corpus["a"]:
        np.testing.assert_array_equal(alone[("a", sentence)], with_extra[("a", sentence)])
        assert ("b", sentence) in with_extra
    with pytest.raises(ValueError, match="pivot voice 'x'"):
        parallel_units(corpus, 6, pivot="x")


def test_training_lowers_the_loss_and_the_weights_survive_the_fairseq_file(tmp_path) -> None:
    torch.manual_seed(0)
    corpus = _corpus()
    labels = parallel_units(corpus, 8, pivot="a")
    items = [(corpus[v][s], lab) for (v, s), lab in sorted(labels.items())]
    init = write_tiny_fairseq_checkpoint(tmp_path / "init.pt", dtype=torch.float32)
    encoder = ContentEncoder(ContentEncoder.from_fairseq(init).hubert.config)
    cfg = EncoderTrainConfig(n_units=8, steps=60, batch_size=4, crop_s=0.5, warmup=5, lr=3e-3)
    label_embs, history = train_encoder(
        encoder, items, cfg, eval_sets={"all": items}, eval_every=60
    )
    assert np.mean(history["loss"][-10:]) < 0.8 * np.mean(history["loss"][:10])
    assert history["eval"][-1]["all"] == pytest.approx(unit_accuracy(encoder, label_embs, items))
    assert not any(p.requires_grad for p in encoder.parameters())  # frozen again

    path = write_tiny_fairseq_checkpoint(
        tmp_path / "trained.pt", weights=fairseq_weights(encoder, label_embs), dtype=torch.float32
    )
    reloaded = ContentEncoder.from_fairseq(path)
    wav = torch.from_numpy(items[0][0])[None]
    torch.testing.assert_close(reloaded.extract(wav, "v1"), encoder.extract(wav, "v1"))
    state = load_fairseq_checkpoint(path)
    rows = state["model"]["label_embs_concat"]
    torch.testing.assert_close(rows[4:12], label_embs)


def test_weights_of_another_shape_are_refused(tmp_path) -> None:
    init = write_tiny_fairseq_checkpoint(tmp_path / "init.pt", dtype=torch.float32)
    weights = fairseq_weights(ContentEncoder.from_fairseq(init), torch.zeros(8, 256))
    weights["final_proj.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="final_proj.weight"):
        write_tiny_fairseq_checkpoint(tmp_path / "bad.pt", weights=weights)
