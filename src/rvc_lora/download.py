"""``rvc-lora download``: fetch RVC's public weights into ``models/``, resumable and sha256-checked.

    rvc-lora download                      # what model=v2_40k features=default needs
    rvc-lora download --version v1 --sr 48k
    rvc-lora download v2_32k contentvec    # a preset's set; the HF-format ContentVec folder
    rvc-lora download --check              # verify what is there, download nothing
    rvc-lora download fcpe                 # FCPE's weights, out of the torchfcpe wheel on PyPI

Each file streams to ``<dest>.part``; a later run resumes it with an HTTP Range request (a
server that ignores Range answers 200 and the file starts over). The finished file is checked
against the catalog's sha256 and only then renamed into place, so ``models/`` never holds a
half or unverified file under its real name. No transfer reads past the catalog's size (or
:data:`UNSIZED_LIMIT` where the catalog gives none), so a bad host cannot fill the disk, and a
``.part`` that is a symbolic link is refused rather than written through.
Files that ship inside a pip wheel (FCPE's) are not on that host: pip downloads the wheel and
:mod:`rvc_lora.download_wheel` extracts and verifies the one file (``--wheel``, ``--find-links``
for offline machines). Standard library (urllib) plus rich only.
"""

from __future__ import annotations

import argparse
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from rvc_lora.download_catalog import (
    BASE_URL_ENV,
    CATALOG,
    DEFAULT_BASE_URL,
    SAMPLE_RATES,
    VERSIONS,
    WeightFile,
    default_selection,
    expand_name,
    pretrained_pair,
)
from rvc_lora.download_wheel import (
    CHUNK,
    DownloadError,
    fetch_from_wheel,
    open_part,
    sha256_of,
    symlink_refused,
    wheel_label,
)
from rvc_lora.utils.errors import RvcLoraError

DESCRIPTION = (
    "Fetch RVC's public weights (and FCPE's, out of its PyPI wheel) into models/, resumable and "
    "sha256-checked."
)
TIMEOUT_S = 30.0
# For files the catalog gives no size for; the largest real one (pytorch_model.bin) is ~380 MB.
UNSIZED_LIMIT = 2 << 30
_USER_AGENT = "rvc-lora-download/1 (+urllib)"


class HostUnreachable(DownloadError):
    """No connection to the host at all (offline, DNS, refused, timeout): stop, nothing will work."""


def _mb(n: int | None) -> str:
    return "size unknown" if n is None else f"{n / 1e6:.1f} MB"


def check_file(entry: WeightFile, dest: Path) -> tuple[str, str]:
    """``(status, detail)`` of one file on disk: ok, unverified, missing, partial or corrupt."""
    if not dest.is_file():
        part = dest.with_name(dest.name + ".part")
        if part.is_file():
            done = "extracted" if entry.wheel else "downloaded"  # a wheel's member starts over
            return (
                "partial",
                f"{_mb(part.stat().st_size)} {done}; run `rvc-lora download` to "
                + ("extract it again" if entry.wheel else "resume"),
            )
        return "missing", ""
    got = sha256_of(dest)
    if entry.sha256 is None:
        return "unverified", f"no published sha256; this file's is {got}"
    if got != entry.sha256:
        return "corrupt", f"sha256 {got}, expected {entry.sha256}"
    return "ok", ""


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", exc)
    return getattr(reason, "strerror", None) or str(reason) or type(reason).__name__


def _open(url: str, offset: int) -> http.client.HTTPResponse:
    headers = {"User-Agent": _USER_AGENT}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    try:
        return urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S
        )
    except urllib.error.HTTPError:
        raise  # the host answered: the caller words it (HTTPError is a URLError too)
    except (urllib.error.URLError, OSError) as exc:  # DNS, refused, timeout, TLS
        raise HostUnreachable(_reason(exc)) from None


def _transfer(url: str, part: Path, size_hint: int | None, label: str) -> None:
    """Append the missing bytes of ``url`` to ``part`` (resuming what is there)."""
    for _ in range(2):  # a second pass only after a 206 that starts elsewhere than asked
        offset = part.stat().st_size if part.is_file() else 0
        if size_hint is not None and offset >= size_hint:
            if offset == size_hint:
                return  # already whole: the hash decides
            part.unlink()
            offset = 0
        try:
            resp = _open(url, offset)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:  # nothing past offset: the .part is whole (or wrong)
                return
            raise DownloadError(
                f"{urlsplit(url).netloc} answered HTTP {exc.code} {exc.reason} for {url}; retry "
                f"later, or download the file by hand and place it at {label}"
            ) from None
        with resp:
            if offset and resp.status == 200:
                offset = 0  # the server ignored Range: start over from the first byte
            elif resp.status == 206:
                start = _content_range_start(resp.headers.get("Content-Range", ""))
                if start != offset:
                    part.unlink(missing_ok=True)
                    continue
            length = resp.headers.get("Content-Length")
            total = offset + int(length) if length is not None else size_hint
            limit = size_hint if size_hint is not None else UNSIZED_LIMIT
            if total is not None and total > limit:
                part.unlink(missing_ok=True)
                raise DownloadError(_oversize(label, limit, size_hint is not None))
            _stream(resp, part, offset, total, limit, size_hint is not None, label)
        return
    raise DownloadError(f"{url}: the server does not resume where asked; delete {part} and retry")


def _content_range_start(value: str) -> int | None:
    # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _oversize(label: str, limit: int, listed: bool) -> str:
    what = "the catalog lists for it" if listed else "allowed for a file of unlisted size"
    return (
        f"{label}: the server sent more than the {limit} bytes {what}; the partial download "
        "was deleted. The host serves another file: retry later or choose another host with "
        "--base-url"
    )


def _stream(
    resp, part: Path, offset: int, total: int | None, limit: int, listed: bool, label: str
) -> None:
    resumed = f", resuming at {_mb(offset)}" if offset else ""
    print(f"downloading {label} ({_mb(total)}{resumed})", flush=True)
    done = offset
    # One bar per transfer, gone when it ends, so that messages never print under a live bar.
    bar = _progress()
    try:
        with open(open_part(part, append=bool(offset)), "wb") as f:
            if bar is not None:
                bar.start()
                task = bar.add_task(label, total=total, completed=offset)
            # One byte past the limit is enough to know the body is too long.
            while block := resp.read(min(CHUNK, limit + 1 - done)):
                done += len(block)
                if done > limit:
                    break
                f.write(block)
                if bar is not None:
                    bar.update(task, completed=done)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead
        raise DownloadError(_interrupted(label, done, total, _reason(exc))) from None
    finally:
        if bar is not None:
            bar.stop()
    if done > limit:
        part.unlink(missing_ok=True)
        raise DownloadError(_oversize(label, limit, listed))
    # http.client returns a short body without raising when the peer closes early.
    if total is not None and done < total:
        raise DownloadError(_interrupted(label, done, total, "connection closed"))


def _interrupted(label: str, done: int, total: int | None, why: str) -> str:
    of = f" of {total}" if total is not None else ""
    return f"{label}: download interrupted after {done}{of} bytes ({why}); the partial file is kept: run the command again to resume"  # fmt: skip


def fetch(entry: WeightFile, url: str, dest: Path) -> str:
    """Download ``url`` to ``dest`` via ``dest.part`` and verify it; returns its sha256.

    Raises:
        HostUnreachable: no connection at all.
        DownloadError: HTTP error, interrupted transfer (``.part`` kept) or sha256 mismatch
            (``.part`` deleted).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    if part.is_symlink():  # it would be resumed, hashed and renamed into place as the file
        raise symlink_refused(part)
    for attempt in range(2):
        resumed = part.is_file() and part.stat().st_size > 0
        _transfer(url, part, entry.size, str(dest))
        got = sha256_of(part)
        if entry.sha256 is None or got == entry.sha256:
            os.replace(part, dest)  # atomic: dest is either the old file or the verified one
            return got
        part.unlink()
        if resumed and attempt == 0:
            print(f"{dest}: sha256 mismatch on a resumed download (stale .part?): starting over")
            continue
        raise DownloadError(
            f"{dest}: sha256 mismatch: expected {entry.sha256}, got {got}; the bad download was "
            f"deleted. Run the command again; if it fails again the file at {url} has changed: "
            "check it against its source before placing it by hand"
        )
    raise AssertionError("unreachable")


def _progress():
    """A rich progress bar with ETA on a terminal; ``None`` (plain lines) otherwise."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    console = Console(stderr=True)
    if not console.is_terminal:
        return None
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def select(args: argparse.Namespace, catalog: Mapping[str, WeightFile]) -> list[WeightFile]:
    """The catalog entries that ``args`` ask for, in order, without duplicates."""
    if args.all:
        names = list(catalog)
    elif args.names:
        names = []
        for name in args.names:
            expanded = expand_name(name, catalog, args.f0)
            if expanded is None:
                raise RvcLoraError(
                    f"unknown file {name!r}; `rvc-lora download --list` shows the catalog"
                )
            names += expanded
    else:
        names = default_selection(args.version, args.sr, args.f0)
    missing = [n for n in names if n not in catalog]
    if missing:
        raise RvcLoraError(f"no catalog entry for {', '.join(missing)}")
    return [catalog[n] for n in dict.fromkeys(names)]


def _list(catalog: Mapping[str, WeightFile], dest: Path) -> int:
    for e in catalog.values():
        state = "present" if (dest / e.path).is_file() else "-"  # --check hashes; --list is quick
        digest = e.sha256[:16] + "…" if e.sha256 else "unverified"
        origin = f"  (in the {wheel_label(e.wheel)} wheel)" if e.wheel else ""
        print(f"{e.path:<38} {_mb(e.size):>13}  sha256 {digest:<18} {state}{origin}")
    return 0


def _check(entries: list[WeightFile], dest: Path) -> int:
    bad = 0
    for e in entries:
        status, detail = check_file(e, dest / e.path)
        bad += status not in ("ok", "unverified")
        print(f"{status:<10} {dest / e.path}" + (f"  ({detail})" if detail else ""))
    return 1 if bad else 0


def run(args: argparse.Namespace, catalog: Mapping[str, WeightFile] | None = None) -> int:
    """Carry out ``rvc-lora download`` for parsed ``args``; returns the exit status."""
    catalog = CATALOG if catalog is None else catalog
    dest = Path(args.dest)
    if args.list:
        return _list(catalog, dest)
    try:
        entries = select(args, catalog)
    except RvcLoraError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        return _check(entries, dest)
    base = (args.base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
    try:
        wheel = Path(args.wheel) if args.wheel else None
        find_links = Path(args.find_links) if args.find_links else None
        failed = _download_all(entries, dest, base, wheel, find_links)
    except HostUnreachable:
        return 1  # _download_all printed the line
    except KeyboardInterrupt:
        print(
            "interrupted: partial downloads are kept as .part; run again to resume", file=sys.stderr
        )
        return 130
    if not failed and not args.names and not args.all:
        g, d = (dest / p for p in pretrained_pair(args.version, args.sr, args.f0))
        no_f0 = "" if args.f0 else " model.f0=false"
        print(f"ready: python train.py model={args.version}_{args.sr} features=default{no_f0} model.pretrained_g={g} model.pretrained_d={d}")  # fmt: skip
    return 1 if failed else 0


def _download_all(
    entries: list[WeightFile],
    dest: Path,
    base: str,
    wheel: Path | None = None,
    find_links: Path | None = None,
) -> int:
    """Fetch what is missing or corrupt; returns the number of failed files.

    Args:
        entries: catalog entries, in order.
        dest: the folder they go to.
        base: the host of the HTTP files.
        wheel: a wheel on disk for the wheel-sourced entries (``--wheel``), instead of pip.
        find_links: a folder pip takes wheels from, asking no index (``--find-links``).

    Raises:
        HostUnreachable: after printing the one-line error with the by-hand instructions (the
            wheel-sourced files are still tried: pip has its own index and proxy settings).
    """
    failed = 0
    unreachable: HostUnreachable | None = None
    for i, e in enumerate(entries):
        if unreachable is not None and e.wheel is None:
            continue  # the host is gone; its by-hand line named this file already
        target = dest / e.path
        status, _ = check_file(e, target)
        if status in ("ok", "unverified"):
            print(f"ok         {target} (already present{', unverified' if e.sha256 is None else ''})")  # fmt: skip
            continue
        if status == "corrupt":
            print(f"corrupt    {target}: downloading a fresh copy")
        try:
            if e.wheel is not None:
                got = fetch_from_wheel(e, target, wheel, find_links)
            else:
                got = fetch(e, f"{base}/{e.path}", target)
        except HostUnreachable as exc:
            paths = ", ".join(str(dest / x.path) for x in entries[i:] if x.wheel is None)
            print(
                f"error: could not reach {urlsplit(base).netloc} ({exc}). To place the files by "
                f"hand, download them from {base}/<name> and save them as {paths}; then run "
                "`rvc-lora download --check`",
                file=sys.stderr,
            )
            unreachable = exc
            continue
        except DownloadError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        if e.wheel is not None:
            print(f"fetched    {target} (sha256 verified, from {wheel_label(e.wheel)} wheel)")
        elif e.sha256 is None:
            print(f"unverified {target}: no published sha256 to check against; its sha256 is {got} (record it if you trust the source)")  # fmt: skip
        else:
            print(f"fetched    {target} (sha256 verified)")
    if unreachable is not None:
        raise unreachable
    return failed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``download`` options, shared by ``rvc-lora download`` and ``python -m``."""
    # fmt: off
    parser.add_argument("names", nargs="*", metavar="NAMES", help="catalog paths (see --list), a preset such as v2_48k, 'contentvec' (HF-format hubert_base/) or 'fcpe' (FCPE pitch weights, from the torchfcpe wheel on PyPI); default: what model=<version>_<sr> needs")
    parser.add_argument("--dest", default="models", help="folder to download into (default: models/, where configs/paths looks)")
    parser.add_argument("--check", action="store_true", help="verify the files already present, download nothing; exit 1 unless all are ok")
    parser.add_argument("--base-url", help=f"host to download from (default: ${BASE_URL_ENV} or {DEFAULT_BASE_URL})")
    parser.add_argument("--sr", choices=SAMPLE_RATES, default="40k", help="sample rate of the pretrained G/D (default 40k)")
    parser.add_argument("--version", choices=VERSIONS, default="v2", help="RVC version of the pretrained G/D (default v2)")
    parser.add_argument("--f0", action=argparse.BooleanOptionalAction, default=True, help="pitch-guided f0G/f0D bases, or plain G/D (default --f0)")
    parser.add_argument("--all", action="store_true", help="every file in the catalog (several GB)")
    parser.add_argument("--list", action="store_true", help="print the catalog with sizes, hashes and what is present")
    parser.add_argument("--wheel", metavar="PATH", help="for files that ship in a wheel (fcpe): extract from this wheel file instead of having pip download it (its sha256 is checked)")
    parser.add_argument("--find-links", metavar="DIR", help="for files that ship in a wheel (fcpe): pip takes the wheel from DIR and asks no index (offline machines)")
    # fmt: on


def main(argv: list[str] | None = None, catalog: Mapping[str, WeightFile] | None = None) -> int:
    """``python -m rvc_lora.download [options]``; returns the exit status."""
    parser = argparse.ArgumentParser(prog="rvc-lora download", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv), catalog)


if __name__ == "__main__":
    sys.exit(main())
