"""``rvc-lora download fcpe``: a file extracted from a pip wheel, against a small fake wheel.

No network: pip runs for real but only with ``--no-index --find-links`` (two calls in all); the
other tests hand the wheel over with ``--wheel``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import tempfile
import zipfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from rvc_lora import download, download_wheel
from rvc_lora.download_catalog import CATALOG, WeightFile, default_selection, expand_name

MEMBER = "torchfcpe/assets/fcpe_c_v001.pt"
WHEEL_NAME = "torchfcpe-0.0.4-py3-none-any.whl"
PAYLOAD = bytes(range(256)) * 24  # 6 KiB standing in for the 43 MB checkpoint
HAND = (
    "to place it by hand: pip download torchfcpe==0.0.4 --no-deps -d DIR and run "
    f"`rvc-lora download fcpe --wheel DIR/{WHEEL_NAME}`"
)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _build_wheel(path: Path, files: dict[str, bytes]) -> str:
    """A minimal pure-Python wheel pip accepts (METADATA, WHEEL, RECORD); returns its sha256."""
    info = "torchfcpe-0.0.4.dist-info"
    files = {
        **files,
        f"{info}/METADATA": b"Metadata-Version: 2.1\nName: torchfcpe\nVersion: 0.0.4\n",
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }  # fmt: skip
    record = "".join(
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},{len(data)}\n"
        for name, data in files.items()
    ) + f"{info}/RECORD,,\n"  # fmt: skip
    files[f"{info}/RECORD"] = record.encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():  # fixed dates: the same bytes, the same hash
            zf.writestr(zipfile.ZipInfo(name, (2024, 1, 1, 0, 0, 0)), data, zipfile.ZIP_DEFLATED)
    return _sha(path.read_bytes())


@pytest.fixture(scope="module")
def wheels(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("wheels")
    good = root / "links" / WHEEL_NAME
    empty = root / "empty" / WHEEL_NAME
    good_sha = _build_wheel(good, {MEMBER: PAYLOAD, "torchfcpe/__init__.py": b""})
    empty_sha = _build_wheel(empty, {"torchfcpe/__init__.py": b""})
    (root / "nothing").mkdir()
    return SimpleNamespace(
        links=good.parent, good=good, good_sha=good_sha, empty=empty, empty_sha=empty_sha,
        nothing=root / "nothing",
    )  # fmt: skip


def _entry(wheel_sha: str, **changes) -> WeightFile:
    entry = WeightFile(
        "fcpe_c_v001.pt", _sha(PAYLOAD), len(PAYLOAD), source="torchfcpe",
        wheel="torchfcpe==0.0.4", wheel_sha256=wheel_sha, member=MEMBER,
    )  # fmt: skip
    return replace(entry, **changes)


def _cat(entry: WeightFile) -> dict[str, WeightFile]:
    return {entry.path: entry}


@pytest.fixture
def hermetic(tmp_path, monkeypatch) -> Path:
    """No pip configuration of this machine (find-links, indexes, constraints) and a private
    temporary folder, returned, to see that nothing is left in it."""
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    for var in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CONSTRAINT"):
        monkeypatch.delenv(var, raising=False)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return tmp


def _no_pip(*args, **kwargs):
    raise AssertionError("pip must not run")


def _one_line(err: str) -> str:
    err = err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def _nothing_in(dest: Path) -> bool:
    return not dest.exists() or not any(dest.iterdir())


def test_pip_fetches_the_wheel_offline_then_the_file_is_not_fetched_again(
    wheels, hermetic, tmp_path, capsys, monkeypatch
):
    dest = tmp_path / "models"
    cat = _cat(_entry(wheels.good_sha))
    argv = ["fcpe", "--find-links", str(wheels.links), "--dest", str(dest)]
    assert download.main(argv, catalog=cat) == 0
    target = dest / "fcpe_c_v001.pt"
    assert target.read_bytes() == PAYLOAD and sorted(dest.iterdir()) == [target]
    out = capsys.readouterr().out
    assert f"fetched    {target} (sha256 verified, from torchfcpe 0.0.4 wheel)" in out
    assert list(hermetic.iterdir()) == []  # pip's download folder is gone

    monkeypatch.setattr(download_wheel.subprocess, "run", _no_pip)
    mtime = target.stat().st_mtime_ns
    assert download.main(argv, catalog=cat) == 0
    assert capsys.readouterr().out.strip() == f"ok         {target} (already present)"
    assert target.stat().st_mtime_ns == mtime


def test_pip_failure_is_one_line_with_the_by_hand_steps(wheels, hermetic, tmp_path, capsys):
    dest = tmp_path / "models"
    argv = ["fcpe", "--find-links", str(wheels.nothing), "--dest", str(dest)]
    assert download.main(argv, catalog=_cat(_entry(wheels.good_sha))) == 1
    assert _one_line(capsys.readouterr().err) == (
        f"error: could not download torchfcpe==0.0.4 from {wheels.nothing} (No matching "
        f"distribution found for torchfcpe==0.0.4); {HAND}"
    )
    assert _nothing_in(dest) and list(hermetic.iterdir()) == []


def test_a_local_wheel_replaces_a_corrupt_file_without_pip(wheels, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(download_wheel.subprocess, "run", _no_pip)
    target = tmp_path / "fcpe_c_v001.pt"
    target.write_bytes(b"truncated")
    argv = ["fcpe", "--wheel", str(wheels.good), "--dest", str(tmp_path)]
    assert download.main(argv, catalog=_cat(_entry(wheels.good_sha))) == 0
    assert target.read_bytes() == PAYLOAD and not target.with_name(target.name + ".part").exists()
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"corrupt    {target}: downloading a fresh copy",
        f"fetched    {target} (sha256 verified, from torchfcpe 0.0.4 wheel)",
    ]


def test_a_wheel_with_another_hash_is_refused_before_extraction(wheels, tmp_path, capsys):
    dest = tmp_path / "models"
    wrong = _sha(b"the published wheel")
    argv = ["fcpe", "--wheel", str(wheels.good), "--dest", str(dest)]
    assert download.main(argv, catalog=_cat(_entry(wrong))) == 1
    assert _one_line(capsys.readouterr().err) == (
        f"error: {wheels.good}: sha256 mismatch: expected {wrong}, got {wheels.good_sha}; nothing "
        f"was extracted. It is not the published torchfcpe==0.0.4 wheel: {HAND}"
    )
    assert _nothing_in(dest)


def test_a_member_with_another_hash_leaves_nothing(wheels, tmp_path, capsys):
    dest = tmp_path / "models"
    wrong = _sha(b"the published checkpoint")
    argv = ["fcpe", "--wheel", str(wheels.good), "--dest", str(dest)]
    assert download.main(argv, catalog=_cat(_entry(wheels.good_sha, sha256=wrong))) == 1
    err = _one_line(capsys.readouterr().err)
    assert err.startswith(f"error: {dest / 'fcpe_c_v001.pt'}: sha256 mismatch: expected {wrong}, got {_sha(PAYLOAD)} for {MEMBER} in {wheels.good}")  # fmt: skip
    assert _nothing_in(dest)


def test_a_wheel_without_the_member_is_one_line(wheels, tmp_path, capsys):
    argv = ["fcpe", "--wheel", str(wheels.empty), "--dest", str(tmp_path / "models")]
    assert download.main(argv, catalog=_cat(_entry(wheels.empty_sha))) == 1
    assert _one_line(capsys.readouterr().err) == (
        f"error: {wheels.empty} has no {MEMBER}; nothing was extracted: {HAND}"
    )
    assert _nothing_in(tmp_path / "models")


class _EndlessMember:
    """A member stream that never ends (a header that lies about the size), counting reads."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def read(self, n: int) -> bytes:
        self.read_bytes += n
        if self.read_bytes > 1 << 20:
            raise AssertionError("read past 1 MiB: no cap")
        return b"\x00" * n

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


@pytest.mark.parametrize("how", ["header", "stream"])
def test_a_member_larger_than_the_catalog_size_is_refused(
    wheels, tmp_path, capsys, monkeypatch, how
):
    entry = _entry(wheels.good_sha)
    if how == "header":  # the zip says it is larger: refused before a byte is written
        entry = replace(entry, size=len(PAYLOAD) - 1)
    else:  # the zip says it fits but the stream goes on: cut one byte past the size
        stream = _EndlessMember()
        monkeypatch.setattr(zipfile.ZipFile, "open", lambda self, name: stream)
    dest = tmp_path / "models"
    argv = ["fcpe", "--wheel", str(wheels.good), "--dest", str(dest)]
    assert download.main(argv, catalog=_cat(entry)) == 1
    assert _one_line(capsys.readouterr().err) == (
        f"error: {dest / 'fcpe_c_v001.pt'}: {MEMBER} in {wheels.good} is larger than the "
        f"{entry.size} bytes the catalog lists for it; nothing was kept. The wheel is not the "
        f"published one: {HAND}"
    )
    assert _nothing_in(dest)
    if how == "stream":
        assert stream.read_bytes <= entry.size + 1


def test_a_symlinked_part_is_refused_and_its_target_untouched(wheels, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    part = tmp_path / "fcpe_c_v001.pt.part"
    part.symlink_to(victim)
    argv = ["fcpe", "--wheel", str(wheels.good), "--dest", str(tmp_path)]
    assert download.main(argv, catalog=_cat(_entry(wheels.good_sha))) == 1
    assert victim.read_bytes() == b"precious" and part.is_symlink()
    assert not (tmp_path / "fcpe_c_v001.pt").exists()
    assert "is a symbolic link" in _one_line(capsys.readouterr().err)


def test_check_reports_missing_ok_and_corrupt_and_extracts_nothing(wheels, tmp_path, capsys):
    cat = _cat(_entry(wheels.good_sha))
    target = tmp_path / "fcpe_c_v001.pt"
    argv = ["fcpe", "--check", "--dest", str(tmp_path)]
    for content, status, code in [(None, "missing", 1), (PAYLOAD, "ok", 0), (b"x", "corrupt", 1)]:
        if content is not None:
            target.write_bytes(content)
        assert download.main(argv, catalog=cat) == code
        assert capsys.readouterr().out.split()[:2] == [status, str(target)]
    assert target.read_bytes() == b"x"


def test_an_unreachable_host_still_lets_pip_files_through(wheels, tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cat = {"a.bin": WeightFile("a.bin", _sha(b"a")), **_cat(_entry(wheels.good_sha))}
    argv = ["a.bin", "fcpe", "--base-url", f"http://127.0.0.1:{port}", "--dest", str(tmp_path)]
    assert download.main([*argv, "--wheel", str(wheels.good)], catalog=cat) == 1
    err = _one_line(capsys.readouterr().err)
    assert err.startswith(f"error: could not reach 127.0.0.1:{port}")
    assert str(tmp_path / "a.bin") in err and "fcpe_c_v001.pt" not in err
    assert (tmp_path / "fcpe_c_v001.pt").read_bytes() == PAYLOAD


def test_real_catalog_entry_is_the_torchfcpe_0_0_4_member_and_not_a_default():
    entry = CATALOG["fcpe_c_v001.pt"]
    assert (entry.wheel, entry.member, entry.size, entry.source) == (
        "torchfcpe==0.0.4", MEMBER, 43_363_260, "torchfcpe"
    )  # fmt: skip
    assert entry.sha256 == "b9aeaeb673436eeda50ceafd632aa681aa63417e52eae4207503d180c9b10015"
    assert entry.wheel_sha256 == "f042c463d850d76c6f4899a0b84f0b694bb560adf05f4de951097a756d17472d"
    assert expand_name("fcpe", CATALOG) == ["fcpe_c_v001.pt"]
    assert "fcpe_c_v001.pt" not in default_selection()
    assert download_wheel.wheel_filename(entry.wheel) == WHEEL_NAME
    with pytest.raises(ValueError, match="fcpe_c_v001.pt: a wheel-sourced file needs"):
        replace(entry, member=None)


def test_list_names_the_wheel(wheels, tmp_path, capsys):
    assert download.main(["--list", "--dest", str(tmp_path)], catalog=_cat(_entry("0" * 64))) == 0
    assert capsys.readouterr().out.rstrip().endswith("-  (in the torchfcpe 0.0.4 wheel)")
