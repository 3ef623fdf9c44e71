"""``data.heldout_dir``: validation on the voice's own held-out sentences, every input file
trains, ``data.max_seconds`` shrinks the training side only, and a copied file cannot leak."""

from __future__ import annotations

import shutil

import pytest
import soundfile as sf

from rvc_lora.data.datamodule import VoiceDataModule
from rvc_lora.data.features_cache import NoUsableAudioError
from rvc_lora.data.subset import seconds
from rvc_lora.data.synthetic import phrases
from rvc_lora.utils.errors import ConfigError

SR = 16000


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """A voice folder (3 files, one phrase each) and a held-out folder (2 files: 2 + 1 phrases),
    one cache; every phrase is one slice (few slices: the content encoder is the cost here)."""
    root = tmp_path_factory.mktemp("heldout")
    for name, phrase_counts, first_seed in [("voice", [1, 1, 1], 0), ("held", [1, 2], 50)]:
        (root / name).mkdir()
        for k, n in enumerate(phrase_counts):
            audio = phrases(SR, n=n, seconds=1.6 + 0.1 * k, pause=0.8, seed=first_seed + k)
            # Names in reverse order of writing: validation order is by name, not by mtime.
            sf.write(root / name / f"{name} {len(phrase_counts) - k}.wav", audio, SR)
    return root


def _dm(root, encoder_path, **kw) -> VoiceDataModule:
    return VoiceDataModule(
        input_dir=str(root / "voice"),
        cache_dir=str(root / "cache"),
        sample_rate=SR,
        hop_length=160,
        n_fft=512,
        version="v1",
        encoder_path=str(encoder_path),
        f0_method="pm",
        batch_size=2,
        progress=False,
        seed=5,
        **kw,
    )


def test_validation_is_the_heldout_folder_and_every_input_file_trains(
    folders, encoder_path
) -> None:
    dm = _dm(folders, encoder_path, heldout_dir=str(folders / "held"))
    dm.setup("fit")  # no prepare_data in this process: setup prepares both folders itself
    assert dm.report is not None and dm.heldout_report is not None
    # By file name, then time (each stretch between pauses is one slice).
    assert [(i.source, i.segment) for i in dm.val_items] == [
        ("held 1.wav", 0), ("held 1.wav", 1), ("held 2.wav", 0)
    ]  # fmt: skip
    assert all(i.slice_path.is_file() for i in dm.val_items)
    assert dm.train_items == dm.report.items  # no split: every file, every slice
    assert {i.source for i in dm.train_items} == {f"voice {k}.wav" for k in range(1, 4)}
    assert len(dm.train_items) == 3
    # The old split on the same folder holds a file out of training.
    split = _dm(folders, encoder_path)
    split.setup("fit")
    assert len({i.source for i in split.train_items}) == 2
    assert {i.source for i in split.val_items} <= {f"voice {k}.wav" for k in range(1, 4)}


def test_max_seconds_shrinks_training_only_and_summary_says_so(folders, encoder_path) -> None:
    held = str(folders / "held")
    full = _dm(folders, encoder_path, heldout_dir=held)
    full.setup("fit")
    small = _dm(folders, encoder_path, heldout_dir=held, max_seconds=2.5, subset_seed=3)
    small.setup("fit")
    assert [i.item_id for i in small.val_items] == [i.item_id for i in full.val_items]
    assert 0 < seconds(small.train_items) <= 2.5 < seconds(full.train_items)
    assert {i.item_id for i in small.train_items} < {i.item_id for i in full.train_items}
    frames = sum(i.frames for i in small.train_items)
    assert small.data_summary() == {
        "input_dir": str(folders / "voice"),
        "heldout_dir": held,
        "max_seconds": 2.5,
        "subset_seed": 3,
        "seconds": frames / 100,
        "available_seconds": sum(i.frames for i in full.train_items) / 100,
        "n_slices": len(small.train_items),
        "n_sources": len({i.source for i in small.train_items}),
    }
    assert full.data_summary()["seconds"] == full.data_summary()["available_seconds"]
    assert full.data_summary()["subset_seed"] == 5  # None -> data.seed


def test_summary_without_heldout_counts_the_training_side_of_the_split(
    folders, encoder_path
) -> None:
    dm = _dm(folders, encoder_path, max_seconds=2.5)
    dm.setup("fit")
    summary = dm.data_summary()
    assert summary["heldout_dir"] is None and summary["subset_seed"] == 5
    assert summary["available_seconds"] == sum(i.frames for i in dm.available_items) / 100
    assert summary["available_seconds"] < seconds(dm.report.items)  # a file is validation
    assert not {i.source for i in dm.train_items} & {i.source for i in dm.val_items}


def test_a_heldout_copy_of_a_training_file_is_refused(folders, encoder_path, tmp_path) -> None:
    held = tmp_path / "held"
    shutil.copytree(folders / "held", held)
    shutil.copy(folders / "voice" / "voice 3.wav", held / "same take.wav")
    dm = _dm(folders, encoder_path, heldout_dir=str(held))
    with pytest.raises(ConfigError, match="same take.wav .*same audio as voice 3.wav") as err:
        dm.setup("fit")
    assert "\n" not in str(err.value)


def test_a_heldout_folder_without_audio_names_the_key(folders, encoder_path, tmp_path) -> None:
    (tmp_path / "held").mkdir()
    (tmp_path / "held" / "empty.wav").write_bytes(b"")
    dm = _dm(folders, encoder_path, heldout_dir=str(tmp_path / "held"))
    with pytest.raises(NoUsableAudioError, match=r"\(data.heldout_dir\): no usable audio in 1"):
        dm.prepare_data()
    missing = _dm(folders, encoder_path, heldout_dir=str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="set data.heldout_dir to a folder or null"):
        missing.prepare_data()
