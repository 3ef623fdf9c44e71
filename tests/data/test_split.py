"""Validation never shares audio with training: no (source file, time range) on both sides; a
split that cannot be honest says so."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf

from rvc_lora.data.datamodule import VoiceDataModule, split_by_source
from rvc_lora.data.features_cache import PreparedItem
from rvc_lora.data.synthetic import phrases, voiced
from tests.data.test_prepare import _dm


def _shared(train: list[PreparedItem], val: list[PreparedItem]) -> list[tuple[str, str]]:
    """Pairs of a training and a validation item holding the same audio."""
    return [
        (t.item_id, v.item_id)
        for t in train
        for v in val
        if t.item_id == v.item_id
        or (t.source == v.source and t.span[0] < v.span[1] and v.span[0] < t.span[1])
    ]


def _item(n: int, start: float, end: float, segment: int = 0, source: str = "a.wav"):
    sr = 16000
    return PreparedItem(
        f"k-{n:04d}", source, Path("s"), Path("f"), int((end - start) * 100),
        (int(start * sr), int(end * sr)), segment,
    )  # fmt: skip


def _prepare(tmp_path, encoder_path, audio: np.ndarray) -> VoiceDataModule:
    (tmp_path / "voice").mkdir()
    sf.write(tmp_path / "voice" / "only take.wav", audio, 16000)
    dm = _dm(tmp_path, encoder_path)
    dm.prepare_data()
    dm.setup("fit")
    return dm


def test_one_recording_with_pauses_holds_out_whole_stretches(tmp_path, encoder_path) -> None:
    dm = _prepare(tmp_path, encoder_path, phrases(16000, n=3, seconds=2.0, pause=0.8, seed=2))
    assert len({i.segment for i in dm.report.items}) == 3
    assert dm.train_items and dm.val_items and not _shared(dm.train_items, dm.val_items)
    assert {i.segment for i in dm.val_items} == {2}  # the last stretch


def test_one_continuous_recording_leaves_a_gap(tmp_path, encoder_path, caplog) -> None:
    dm = _prepare(tmp_path, encoder_path, voiced(16000, 9.0, seed=4))  # no pause to cut at
    spans = sorted(i.span for i in dm.report.items)
    assert [(a / 16000, b / 16000) for a, b in spans] == [(0.0, 3.7), (3.4, 7.1), (6.8, 9.0)]
    assert not _shared(dm.train_items, dm.val_items)
    assert [i.span for i in dm.train_items] == [spans[0]] and [i.span for i in dm.val_items] == [
        spans[2]
    ]
    assert "leaving out 1 training slice(s) that share audio" in caplog.text


def test_chunks_of_one_stretch_never_straddle_the_split(caplog) -> None:
    items = [_item(0, 0.0, 3.7), _item(1, 3.4, 7.1), _item(2, 6.8, 10.5), _item(3, 10.2, 12.0)]
    train, val = split_by_source(items, 0.1, seed=0)
    assert [i.item_id for i in train] == ["k-0000", "k-0001"]
    assert [i.item_id for i in val] == ["k-0003"] and not _shared(train, val)


def test_a_single_slice_is_reused_for_validation_with_a_warning(caplog) -> None:
    one = [_item(0, 0.0, 2.0)]
    with caplog.at_level(logging.WARNING):
        train, val = split_by_source(one, 0.1, seed=0)
    assert train == val == one
    assert "too little audio for an honest split (1 slice(s) from one recording)" in caplog.text


def test_files_are_held_out_whole() -> None:
    items = [_item(n, 0.0, 3.7, source=f"{n % 3}.wav") for n in range(9)]
    train, val = split_by_source(items, 0.34, seed=1)
    assert train and val and not ({i.source for i in train} & {i.source for i in val})
