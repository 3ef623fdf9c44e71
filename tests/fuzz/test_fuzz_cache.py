"""Damaged feature-cache entries: the training reader stops with one line naming the entry and the
fix and deletes nothing; the preparation rebuilds the entry (or, for a folder in its place, says
to delete it). Corruptions: bytes (truncated, flipped, garbage), checksums, arrays with a valid
checksum but wrong keys, dtypes, shapes, lengths or values (NaN, Inf, out of range), pickles,
missing files, folders, and random byte flips and cuts (hypothesis)."""

from __future__ import annotations

import io
import shutil
import struct
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rvc_lora.data.cache import CacheError, load_entry, write_entry
from rvc_lora.data.datamodule import SpectrogramSettings, VoiceDataset
from rvc_lora.data.entries import check_features, check_slice
from rvc_lora.data.features_cache import FeatureCacheBuilder, FeatureSettings
from rvc_lora.data.preprocess import PrepSettings
from rvc_lora.data.synthetic import phrases
from rvc_lora.features.hubert_tiny import write_tiny_fairseq_checkpoint

SPEC = SpectrogramSettings(hop_length=160, n_fft=512)
CHECKS = {"slice": check_slice(16000), "features": check_features()}


class _Pristine:
    """A prepared one-slice folder, copied for each case."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.encoder = write_tiny_fairseq_checkpoint(root / "hubert_tiny.pt")
        (root / "voice").mkdir()
        sf.write(root / "voice" / "a.wav", phrases(16000, n=1, seconds=1.6, seed=1), 16000)
        self.encoder_model = None
        builder = self.builder(root)
        report = builder.build(root / "voice", self.files(root))
        self.encoder_model = builder._encoder  # loaded once, shared by every rebuild
        (self.item,) = report.items
        self.arrays = {
            "slice": load_entry(self.item.slice_path),
            "features": load_entry(self.item.feature_path),
        }

    def builder(self, root: Path) -> FeatureCacheBuilder:
        features = FeatureSettings(version="v1", encoder_path=str(self.encoder), f0_method="pm")
        builder = FeatureCacheBuilder(
            root / "cache", PrepSettings(sr=16000), features, progress=False
        )
        builder._encoder = self.encoder_model
        return builder

    @staticmethod
    def files(root: Path) -> list[Path]:
        return [root / "voice" / "a.wav"]

    def copy(self, dest: Path):
        """``(item, path of each entry)`` in a fresh copy of the prepared folder."""
        shutil.copytree(self.root, dest)
        item = replace(
            self.item,
            slice_path=dest / self.item.slice_path.relative_to(self.root),
            feature_path=dest / self.item.feature_path.relative_to(self.root),
        )
        return item, {"slice": item.slice_path, "features": item.feature_path}


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> _Pristine:
    return _Pristine(tmp_path_factory.mktemp("pristine") / "p")


# --- corruptions: each takes (entry path, its valid arrays) and damages the entry -------------


def _bytes(edit: Callable[[bytearray], bytes]):
    def corrupt(path: Path, _arrays) -> None:
        path.write_bytes(edit(bytearray(path.read_bytes())))

    return corrupt


def _flip(where: float):
    def edit(data: bytearray) -> bytes:
        data[int(len(data) * where)] ^= 0xFF
        return bytes(data)

    return edit


def _arrays(edit: Callable[[dict], dict], keep_checksum: bool = False):
    """Rewrite the entry with edited arrays: a fresh valid checksum, or the old one kept."""

    def corrupt(path: Path, arrays) -> None:
        new = edit({k: v.copy() for k, v in arrays.items()})
        if keep_checksum:
            with np.load(path) as npz:
                old = npz["__sha256__"]
            with open(path, "wb") as f:
                np.savez(f, **new, __sha256__=old)
        else:
            write_entry(path, new)

    return corrupt


def _set(key: str, value: Callable[[np.ndarray], np.ndarray]):
    return _arrays(lambda a: {**a, key: value(a[key])})


def _drop(key: str):
    return _arrays(lambda a: {k: v for k, v in a.items() if k != key})


def _nan_at_0(x: np.ndarray, value: float = np.nan) -> np.ndarray:
    x = x.copy()
    x.flat[0] = value
    return x


def _missing(path: Path, _arrays) -> None:
    path.unlink()


def _folder(path: Path, _arrays) -> None:
    path.unlink()
    (path / "inside").mkdir(parents=True)


def _no_checksum(path: Path, arrays) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _checksum_of_wrong_type(path: Path, arrays) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays, __sha256__=np.arange(3))


class _RunsCode:
    """Unpickling this would create the file named by ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _pickle(path: Path, arrays) -> None:
    marker = path.parent / "pwned"
    first = sorted(arrays)[0]
    with open(path, "wb") as f:
        np.savez(
            f, **{**arrays, first: np.array([_RunsCode(marker)], dtype=object)}, __sha256__="0" * 64
        )


def _rezip(compression: int = zipfile.ZIP_STORED, method: int | None = None, huge=False):
    """Rewrite the entry's zip: members compressed, a compression method the central directory
    claims, or the first array's header claiming 4 TiB (its data unchanged)."""

    def corrupt(path: Path, _arrays) -> None:
        with zipfile.ZipFile(path) as zf:
            members = [(i.filename, zf.read(i.filename)) for i in zf.infolist()]
        if huge:
            name, data = members[0]
            header = io.BytesIO()
            arr = np.load(io.BytesIO(data))
            np.lib.format.write_array_header_1_0(
                header, {"descr": arr.dtype.str, "fortran_order": False, "shape": (2**40,)}
            )
            members[0] = (name, header.getvalue() + arr.tobytes())
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", compression) as zf:
            for name, data in members:
                zf.writestr(name, data)
        raw = bytearray(out.getvalue())
        if method is not None:  # central directory entries: compression method at offset 10
            at = raw.find(b"PK\x01\x02")
            while at >= 0:
                raw[at + 10 : at + 12] = struct.pack("<H", method)
                at = raw.find(b"PK\x01\x02", at + 4)
        path.write_bytes(bytes(raw))

    return corrupt


COMMON = {
    "empty": _bytes(lambda d: b""),
    "truncated_to_half": _bytes(lambda d: bytes(d[: len(d) // 2])),
    "truncated_by_one_byte": _bytes(lambda d: bytes(d[:-1])),
    "first_64_bytes": _bytes(lambda d: bytes(d[:64])),
    "zip_header_flipped": _bytes(_flip(0.0)),
    "array_data_flipped": _bytes(_flip(0.5)),
    "directory_flipped": _bytes(_flip(0.97)),
    "garbage": _bytes(lambda d: bytes(range(256)) * 8),
    "text": _bytes(lambda d: b"not an npz file\n"),
    "deflate_compressed": _rezip(zipfile.ZIP_DEFLATED),
    "unknown_compression_method": _rezip(method=99),
    "stored_data_claimed_deflated": _rezip(method=8),
    "array_header_claims_4_TiB": _rezip(huge=True),
    "checksum_mismatch": None,  # per target below: other values, old checksum kept
    "no_checksum": _no_checksum,
    "checksum_not_a_string": _checksum_of_wrong_type,
    "pickle_that_runs_code": _pickle,
    "missing": _missing,
    "folder_in_its_place": _folder,
}
SLICE = {
    "checksum_mismatch": _arrays(lambda a: {**a, "wav": a["wav"] * 0.5}, keep_checksum=True),
    "no_wav": _drop("wav"),
    "no_wav16k": _drop("wav16k"),
    "wav_nan": _set("wav", _nan_at_0),
    "wav16k_inf": _set("wav16k", lambda x: _nan_at_0(x, np.inf)),
    "wav_int16": _set("wav", lambda x: (x * 32767).astype(np.int16)),
    "wav_2d": _set("wav", lambda x: np.stack([x, x])),
    "wav_empty": _set("wav", lambda x: x[:0]),
    "wav16k_too_short": _set("wav16k", lambda x: x[: len(x) // 2]),
    "wav_string": _set("wav", lambda x: np.array(["a", "b"])),
}
FEATURES = {
    "checksum_mismatch": _arrays(lambda a: {**a, "f0": a["f0"] + 1}, keep_checksum=True),
    "no_feats": _drop("feats"),
    "no_f0": _drop("f0"),
    "no_pitch": _drop("pitch"),
    "feats_nan": _set("feats", _nan_at_0),
    "feats_inf": _set("feats", lambda x: _nan_at_0(x, np.inf)),
    "f0_nan": _set("f0", _nan_at_0),
    "feats_transposed": _set("feats", lambda x: x.T.copy()),
    "feats_1d": _set("feats", lambda x: x.ravel()),
    "feats_int8": _set("feats", lambda x: x.astype(np.int8)),
    "feats_no_frames": _set("feats", lambda x: x[:0]),
    "f0_int": _set("f0", lambda x: x.astype(np.int64)),
    "f0_2d": _set("f0", lambda x: x[None]),
    "f0_negative": _set("f0", lambda x: x - 1000),
    "f0_half_length": _set("f0", lambda x: x[: len(x) // 2]),
    "pitch_float": _set("pitch", lambda x: x.astype(np.float32)),
    "pitch_zero": _set("pitch", lambda x: x * 0),
    "pitch_over_255": _set("pitch", lambda x: x + 300),
    "pitch_shorter_than_f0": _set("pitch", lambda x: x[:-1]),
}
CASES = [("slice", name, fn or SLICE[name]) for name, fn in COMMON.items()]
CASES += [("features", name, fn or FEATURES[name]) for name, fn in COMMON.items()]
CASES += [("slice", name, fn) for name, fn in SLICE.items() if name not in COMMON]
CASES += [("features", name, fn) for name, fn in FEATURES.items() if name not in COMMON]


def _snapshot(path: Path):
    if path.is_dir():
        return "folder", sorted(p.name for p in path.iterdir())
    return ("file", path.read_bytes()) if path.exists() else ("absent", None)


@pytest.mark.parametrize(
    ("target", "corrupt"), [(t, fn) for t, _, fn in CASES], ids=[f"{t}-{n}" for t, n, _ in CASES]
)
def test_training_reader_stops_in_one_line_and_the_preparation_repairs(
    pristine, tmp_path, target, corrupt
) -> None:
    item, paths = pristine.copy(tmp_path / "w")
    path = paths[target]
    corrupt(path, pristine.arrays[target])
    before = _snapshot(path)
    with pytest.raises(CacheError) as info:
        VoiceDataset([item], SPEC, sample_rate=16000)[0]
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: cache entry ")
    assert "run the preparation again (python -m rvc_lora.data.prepare)" in message
    assert _snapshot(path) == before  # the reader deleted and changed nothing
    assert not (path.parent / "pwned").exists()

    root = tmp_path / "w"
    if before[0] == "folder":  # not ours to delete: the preparation says what to do
        with pytest.raises(CacheError, match=r"is a folder, not a file; delete it, then run"):
            pristine.builder(root).build(root / "voice", pristine.files(root))
        assert _snapshot(path) == before
        return
    report = pristine.builder(root).build(root / "voice", pristine.files(root))
    assert report.skipped == [] and len(report.items) == 1
    assert (report.files_sliced, report.slices_extracted) == (
        (1, 0) if target == "slice" else (0, 1)
    )  # only the damaged part is redone
    for name, arrays in pristine.arrays.items():
        rebuilt = load_entry(paths[name])
        assert rebuilt.keys() == arrays.keys()
        assert all(np.array_equal(rebuilt[k], arrays[k]) for k in arrays)
    assert VoiceDataset([item], SPEC, sample_rate=16000)[0]["phone"].shape[1] == 256


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(
    target=st.sampled_from(["slice", "features"]),
    flips=st.lists(
        st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=0, max_size=4
    ),
    keep=st.one_of(st.none(), st.floats(0, 1, exclude_max=True)),
)
def test_random_flips_and_cuts_give_the_entry_or_one_line(pristine, target, flips, keep) -> None:
    """Any damage to the bytes: the reader returns the original arrays (the damage missed
    everything that matters) or a one-line CacheError naming the entry; never another error."""
    data = bytearray(
        (pristine.item.slice_path if target == "slice" else pristine.item.feature_path).read_bytes()
    )
    for where, mask in flips:
        data[int(where * len(data))] ^= mask
    if keep is not None:
        data = data[: int(keep * len(data))]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "0000.npz"
        path.write_bytes(bytes(data))
        try:
            arrays = load_entry(path, check=CHECKS[target], retries=0)
        except CacheError as exc:
            assert "\n" not in str(exc) and str(exc).startswith(f"{path}: cache entry ")
        else:
            good = pristine.arrays[target]
            assert arrays.keys() == good.keys()
            assert all(np.array_equal(arrays[k], good[k]) for k in good)
        assert path.read_bytes() == bytes(data)


def test_case_count() -> None:
    """How many corruptions the parametrised tests cover (reported in the issue's note); the
    hypothesis test adds 150 random byte flips and cuts."""
    assert len(CASES) == 2 * len(COMMON) + len(SLICE) + len(FEATURES) - 2 == 65
    assert len(MANIFESTS) + 1 == 8


MANIFESTS = {
    "not_json": b"{not json",
    "not_an_object": b"[1, 2, 3]",
    "no_spans": b'{"count": 1, "source": "a.wav"}',
    "no_slices": b'{"count": 0, "source": "a.wav", "spans": []}',
    "span_not_numbers": b'{"count": 1, "source": "a.wav", "spans": [["0", "9", 0]]}',
    "span_backwards": b'{"count": 1, "source": "a.wav", "spans": [[900, 100, 0]]}',
    "more_slices_than_files": b'{"count": 2, "source": "a.wav", "spans": [[0, 1, 0], [1, 2, 0]]}',
}


@pytest.mark.parametrize("content", MANIFESTS.values(), ids=MANIFESTS.keys())
def test_damaged_slice_manifest_is_sliced_again(pristine, tmp_path, content) -> None:
    item, paths = pristine.copy(tmp_path / "w")
    manifest = paths["slice"].parent / "manifest.json"
    manifest.write_bytes(content)
    root = tmp_path / "w"
    report = pristine.builder(root).build(root / "voice", pristine.files(root))
    assert (report.files_sliced, report.slices_extracted, report.slices_reused) == (1, 0, 1)
    assert [(i.item_id, i.span) for i in report.items] == [(item.item_id, item.span)]


def test_folder_in_place_of_the_manifest_is_refused_in_one_line(pristine, tmp_path) -> None:
    _, paths = pristine.copy(tmp_path / "w")
    manifest = paths["slice"].parent / "manifest.json"
    manifest.unlink()
    manifest.mkdir()
    root = tmp_path / "w"
    with pytest.raises(CacheError) as info:
        pristine.builder(root).build(root / "voice", pristine.files(root))
    assert str(info.value) == (
        f"{manifest}: cache entry is a folder, not a file; delete it, then run the preparation "
        f"again (python -m rvc_lora.data.prepare)"
    )
    assert manifest.is_dir()
