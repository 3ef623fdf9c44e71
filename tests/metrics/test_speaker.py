"""Speaker similarity: a weights-only encoder identical to resemblyzer's, and separable voices."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from rvc_lora.metrics.speaker import (
    SpeakerSimilarity,
    bundled_weights_path,
    default_speaker_encoder,
    load_speaker_encoder,
    mean_embedding,
    preprocess,
    reference_embedding,
    speaker_embedding,
    speaker_similarity,
    speaker_similarity_to_set,
)
from rvc_lora.utils.errors import CheckpointError
from tests.metrics.signals import SR, demo


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore:pkg_resources:UserWarning")
def test_embedding_matches_resemblyzer(monkeypatch: pytest.MonkeyPatch) -> None:
    from resemblyzer import VoiceEncoder

    # VoiceEncoder's own torch.load, forced weights-only so the test never runs pickled code.
    monkeypatch.setattr(torch, "load", functools.partial(torch.load, weights_only=True))
    theirs = VoiceEncoder("cpu", verbose=False)
    x = demo("awb", 4)
    ours = speaker_embedding(x, SR)
    assert ours.shape == (256,) and np.linalg.norm(ours) == pytest.approx(1.0)
    np.testing.assert_allclose(ours, theirs.embed_utterance(preprocess(x, SR)), atol=1e-5)


def test_encoder_is_cached_and_in_eval_mode() -> None:
    assert default_speaker_encoder() is default_speaker_encoder()
    assert not default_speaker_encoder().training


def test_identical_and_different_speakers() -> None:
    slt1, slt2, rms1 = demo("slt", 1), demo("slt", 2), demo("rms", 1)
    assert speaker_similarity(slt1, SR, slt1, SR) > 0.99
    same_speaker = speaker_similarity(slt1, SR, slt2, SR)
    other_speaker = speaker_similarity(slt1, SR, rms1, SR)
    assert same_speaker > 0.85 and other_speaker < 0.75
    assert same_speaker > other_speaker + 0.15


def test_reference_set_form() -> None:
    refs = [demo("slt", s) for s in (2, 3, 4)]
    mean = reference_embedding(refs, SR)
    assert np.linalg.norm(mean) == pytest.approx(1.0)
    expected = float(speaker_embedding(demo("slt", 5), SR) @ mean)
    assert speaker_similarity_to_set(demo("slt", 5), SR, refs) == pytest.approx(expected)
    assert expected > speaker_similarity_to_set(demo("awb", 5), SR, refs) + 0.15
    np.testing.assert_allclose(mean_embedding([mean, mean]), mean)


def test_metric_against_a_fixed_reference() -> None:
    refs = [demo("slt", s) for s in (2, 3)]
    metric = SpeakerSimilarity.from_references(refs, SR)
    target = reference_embedding(refs, SR)
    convs = [demo("slt", 6), demo("rms", 6), torch.from_numpy(demo("kal16", 6)).float()]
    values = [float(speaker_embedding(c, SR) @ target) for c in convs]
    for c in convs:
        metric.update(c)
    assert metric.compute().item() == pytest.approx(np.mean(values), abs=1e-9)
    metric.reset()
    metric.update(convs[0])
    assert metric.compute().item() == pytest.approx(values[0], abs=1e-9)
    with pytest.raises(ValueError, match="256"):
        SpeakerSimilarity(np.ones(10), SR)


def test_silence_has_no_embedding() -> None:
    with pytest.raises(ValueError, match="silent"):
        speaker_embedding(np.zeros(SR), SR)


class _RunsCode:
    """Unpickling this calls print(): what a malicious checkpoint would do with os.system."""

    def __reduce__(self):
        return (print, ("code from the checkpoint ran",))


def test_loader_refuses_foreign_files(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    good = torch.load(bundled_weights_path(), map_location="cpu", weights_only=True)
    renamed = dict(
        good,
        model_state={
            ("rnn" + k[4:] if k.startswith("lstm") else k): v
            for k, v in good["model_state"].items()
        },
    )
    torch.save(renamed, tmp_path / "renamed.pt")
    with pytest.raises(CheckpointError, match="missing.*lstm.weight_ih_l0"):
        load_speaker_encoder(tmp_path / "renamed.pt")
    torch.save({"model_state": good["model_state"], "extra": _RunsCode()}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_speaker_encoder(tmp_path / "code.pt")
    assert "code from the checkpoint ran" not in capsys.readouterr().out
