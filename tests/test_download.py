"""``rvc-lora download`` against a real HTTP server on 127.0.0.1 with a test-only catalog."""

from __future__ import annotations

import hashlib
import re
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rvc_lora import cli, download
from rvc_lora.download_catalog import CATALOG, WeightFile, default_selection, expand_name

ROOT = Path(__file__).resolve().parents[1]
A = bytes(range(256)) * 1200  # 300 KiB: several reads, never one
B = b"second file " * 5000


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


CAT = {
    "a.bin": WeightFile("a.bin", _sha(A)),
    "sub/b.bin": WeightFile("sub/b.bin", _sha(B), size=len(B)),
    "bad.bin": WeightFile("bad.bin", _sha(b"what the catalog expects")),
    "free.bin": WeightFile("free.bin", None),
    "gone.bin": WeightFile("gone.bin", _sha(b"")),
}


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files`` with Range support; ``server.mode`` breaks it on purpose:
    ``drop`` sends half the body and closes, ``ignore-range`` answers every request with 200,
    ``oversize`` appends 64 KiB to the body (Content-Length says so), ``oversize-unsized`` too
    but sends no Content-Length (the body ends when the connection closes)."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        srv = self.server
        rng = self.headers.get("Range")
        srv.requests.append((self.path, rng))
        data = srv.files.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        start = 0
        if rng and srv.mode != "ignore-range":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:] + (b"\x00" * 65536 if srv.mode.startswith("oversize") else b"")
        if srv.mode != "oversize-unsized":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if srv.mode == "drop" else body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files = {"a.bin": A, "sub/b.bin": B, "bad.bin": b"tampered bytes", "free.bin": B}
    srv.requests, srv.mode = [], "normal"
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _run(dest: Path, *names: str, base_url: str | None = None, check: bool = False) -> int:
    argv = [*names, "--dest", str(dest)]
    argv += ["--base-url", base_url] if base_url else []
    argv += ["--check"] if check else []
    return download.main(argv, catalog=CAT)


def test_good_files_are_downloaded_verified_and_then_skipped(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RVC_LORA_DOWNLOAD_BASE_URL", server.url)  # the env var picks the host
    assert _run(tmp_path, "a.bin", "sub/b.bin") == 0
    assert (tmp_path / "a.bin").read_bytes() == A
    assert (tmp_path / "sub" / "b.bin").read_bytes() == B
    assert not list(tmp_path.rglob("*.part"))
    assert capsys.readouterr().out.count("sha256 verified") == 2
    assert server.requests == [("/a.bin", None), ("/sub/b.bin", None)]

    assert _run(tmp_path, "a.bin", "sub/b.bin") == 0
    assert len(server.requests) == 2  # nothing fetched again
    assert capsys.readouterr().out.count("already present") == 2


def test_checksum_mismatch_deletes_the_file_and_says_what_to_do(server, tmp_path, capsys):
    assert _run(tmp_path, "bad.bin", base_url=server.url) == 1
    assert not (tmp_path / "bad.bin").exists() and not (tmp_path / "bad.bin.part").exists()
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert str(tmp_path / "bad.bin") in err and "sha256 mismatch" in err
    assert CAT["bad.bin"].sha256 in err and _sha(b"tampered bytes") in err
    assert "run the command again" in err.lower()


def test_partial_download_is_resumed_with_a_range_request(server, tmp_path):
    half = len(A) // 2
    (tmp_path / "a.bin.part").write_bytes(A[:half])
    assert _run(tmp_path, "a.bin", base_url=server.url) == 0
    assert server.requests == [("/a.bin", f"bytes={half}-")]
    assert (tmp_path / "a.bin").read_bytes() == A


def test_server_that_ignores_range_restarts_from_zero(server, tmp_path):
    server.mode = "ignore-range"
    (tmp_path / "a.bin.part").write_bytes(b"\xff" * 1000)
    assert _run(tmp_path, "a.bin", base_url=server.url) == 0
    assert server.requests == [("/a.bin", "bytes=1000-")]  # asked, got 200 with the whole file
    assert (tmp_path / "a.bin").read_bytes() == A


def test_interrupted_download_keeps_its_part_and_a_second_run_completes(server, tmp_path, capsys):
    server.mode = "drop"
    assert _run(tmp_path, "a.bin", base_url=server.url) == 1
    part = tmp_path / "a.bin.part"
    assert part.read_bytes() == A[: len(A) // 2] and not (tmp_path / "a.bin").exists()
    err = capsys.readouterr().err
    assert "interrupted" in err and "resume" in err and "Traceback" not in err

    server.mode = "normal"
    assert _run(tmp_path, "a.bin", base_url=server.url) == 0
    assert server.requests[-1] == ("/a.bin", f"bytes={len(A) // 2}-")
    assert (tmp_path / "a.bin").read_bytes() == A and not part.exists()


def test_whole_part_answered_416_is_verified_and_kept(server, tmp_path):
    (tmp_path / "a.bin.part").write_bytes(A)
    assert _run(tmp_path, "a.bin", base_url=server.url) == 0
    assert server.requests == [("/a.bin", f"bytes={len(A)}-")]
    assert (tmp_path / "a.bin").read_bytes() == A


def test_part_with_a_known_full_size_is_verified_without_a_request(server, tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin.part").write_bytes(B)
    assert _run(tmp_path, "sub/b.bin", base_url=server.url) == 0
    assert server.requests == [] and (tmp_path / "sub" / "b.bin").read_bytes() == B


def test_stale_part_that_fails_the_hash_is_downloaded_again_from_zero(server, tmp_path, capsys):
    (tmp_path / "a.bin.part").write_bytes(b"\x00" * 1000)  # right length prefix, wrong bytes
    assert _run(tmp_path, "a.bin", base_url=server.url) == 0
    assert server.requests == [("/a.bin", "bytes=1000-"), ("/a.bin", None)]
    assert (tmp_path / "a.bin").read_bytes() == A
    assert "starting over" in capsys.readouterr().out


def test_corrupt_existing_file_is_replaced(server, tmp_path):
    (tmp_path / "a.bin").write_bytes(b"not it")
    assert _run(tmp_path, "a.bin", base_url=server.url) == 0
    assert (tmp_path / "a.bin").read_bytes() == A


def test_file_without_a_published_hash_is_reported_unverified(server, tmp_path, capsys):
    assert _run(tmp_path, "free.bin", base_url=server.url) == 0
    out = capsys.readouterr().out
    assert "unverified" in out and _sha(B) in out


def test_http_error_is_one_line_naming_the_status(server, tmp_path, capsys):
    assert _run(tmp_path, "gone.bin", "a.bin", base_url=server.url) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "HTTP 404" in err and "gone.bin" in err
    assert (tmp_path / "a.bin").read_bytes() == A  # one failure does not stop the others


def test_check_reports_ok_missing_partial_and_corrupt_and_downloads_nothing(
    server, tmp_path, capsys
):
    (tmp_path / "a.bin").write_bytes(A)
    (tmp_path / "bad.bin").write_bytes(b"tampered bytes")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.bin.part").write_bytes(B[:10])
    assert _run(tmp_path, "a.bin", "sub/b.bin", "bad.bin", "gone.bin", check=True) == 1
    status = dict(reversed(line.split()[:2]) for line in capsys.readouterr().out.splitlines())
    assert status == {
        str(tmp_path / "a.bin"): "ok",
        str(tmp_path / "sub" / "b.bin"): "partial",
        str(tmp_path / "bad.bin"): "corrupt",
        str(tmp_path / "gone.bin"): "missing",
    }
    assert _run(tmp_path, "a.bin", check=True) == 0
    assert server.requests == []


def test_unknown_name_is_a_usage_error(tmp_path, capsys):
    assert _run(tmp_path, "nope.bin", check=True) == 2
    assert "--list" in capsys.readouterr().err


def test_unreachable_host_is_one_line_without_traceback(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = Path(sys.executable).with_name("rvc-lora")
    cmd = [str(script)] if script.exists() else [sys.executable, "-c", "from rvc_lora.cli import main; main()"]  # fmt: skip
    proc = subprocess.run(
        [*cmd, "download", "--base-url", f"http://127.0.0.1:{port}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    err = proc.stderr.strip()
    assert proc.returncode == 1
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert f"could not reach 127.0.0.1:{port}" in err
    assert "models/hubert_base.pt" in err and "models/pretrained_v2/f0G40k.pth" in err
    assert not (tmp_path / "models" / "hubert_base.pt").exists()


def test_real_catalog_covers_every_preset_and_matches_the_configs():
    for entry in CATALOG.values():
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256), entry.path
    assert default_selection() == [
        "hubert_base.pt", "rmvpe.pt", "pretrained_v2/f0G40k.pth", "pretrained_v2/f0D40k.pth"
    ]  # fmt: skip
    for version in ("v1", "v2"):
        for sr in ("32k", "40k", "48k"):
            for f0 in (True, False):
                assert set(expand_name(f"{version}_{sr}", CATALOG, f0)) <= set(CATALOG)
    features = (ROOT / "configs" / "features" / "default.yaml").read_text()
    for name in ("hubert_base.pt", "rmvpe.pt"):
        assert "${paths.models_dir}/" + name in features and name in CATALOG
    assert (
        "models_dir: ${paths.root_dir}/models" in (ROOT / "configs/paths/default.yaml").read_text()
    )


def test_console_script_dispatches_download_and_forwards_hydra_commands(monkeypatch, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["download", "--list", "--dest", "/nonexistent"])
    assert exit_info.value.code == 0 and "pretrained_v2/f0G40k.pth" in capsys.readouterr().out

    seen = []
    monkeypatch.setattr(cli, "train", lambda: seen.append(list(sys.argv)))
    monkeypatch.setattr(sys, "argv", ["rvc-lora", "train", "lora.rank=4"])
    cli.main()
    assert seen == [["rvc-lora", "lora.rank=4"]]


def _assert_refused_oversize(
    tmp_path: Path, capsys, name: str, limit: int, what: str = "the catalog lists for it"
) -> None:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    dest = tmp_path / name
    assert err == (
        f"error: {dest}: the server sent more than the {limit} bytes {what}; the partial "
        "download was deleted. The host serves another file: retry later or choose another "
        "host with --base-url"
    )
    assert not dest.exists() and not dest.with_name(dest.name + ".part").exists()


@pytest.mark.parametrize("mode", ["oversize", "oversize-unsized"])
def test_more_bytes_than_the_catalog_size_are_refused(server, tmp_path, capsys, mode):
    server.mode = mode
    assert _run(tmp_path, "sub/b.bin", base_url=server.url) == 1
    _assert_refused_oversize(tmp_path, capsys, "sub/b.bin", len(B))


class _EndlessResponse:
    """A response that never ends, counting what is read from it."""

    status, headers = 200, {}

    def __init__(self) -> None:
        self.read_bytes = 0

    def read(self, n: int) -> bytes:
        self.read_bytes += n
        if self.read_bytes > 64 << 20:  # a downloader without a cap would fill the disk
            raise AssertionError("read past 64 MiB: no cap")
        return b"\x00" * n

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


def test_an_endless_body_is_cut_off_just_past_the_catalog_size(tmp_path, monkeypatch, capsys):
    resp = _EndlessResponse()
    monkeypatch.setattr(download, "_open", lambda url, offset: resp)
    assert _run(tmp_path, "sub/b.bin", base_url="http://mirror.invalid") == 1
    _assert_refused_oversize(tmp_path, capsys, "sub/b.bin", len(B))
    assert resp.read_bytes <= len(B) + 1


def test_files_without_a_catalog_size_are_capped_too(tmp_path, monkeypatch, capsys):
    resp = _EndlessResponse()
    monkeypatch.setattr(download, "_open", lambda url, offset: resp)
    monkeypatch.setattr(download, "UNSIZED_LIMIT", 5 << 20)
    assert CAT["a.bin"].size is None
    assert _run(tmp_path, "a.bin", base_url="http://mirror.invalid") == 1
    _assert_refused_oversize(
        tmp_path, capsys, "a.bin", 5 << 20, "allowed for a file of unlisted size"
    )
    assert resp.read_bytes <= (5 << 20) + 1


def test_a_part_file_that_is_a_symlink_is_refused_and_its_target_untouched(
    server, tmp_path, capsys
):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    (tmp_path / "a.bin.part").symlink_to(victim)
    assert _run(tmp_path, "a.bin", base_url=server.url) == 1
    assert victim.read_bytes() == b"precious"
    assert (tmp_path / "a.bin.part").is_symlink() and not (tmp_path / "a.bin").exists()
    assert server.requests == []
    err = capsys.readouterr().err.strip()
    assert err == (
        f"error: {tmp_path / 'a.bin.part'} is a symbolic link; downloads never write through "
        "one: delete it and run the command again"
    )


def test_a_dangling_symlink_part_is_refused_too(server, tmp_path, capsys):
    (tmp_path / "a.bin.part").symlink_to(tmp_path / "elsewhere.bin")
    assert _run(tmp_path, "a.bin", base_url=server.url) == 1
    assert not (tmp_path / "elsewhere.bin").exists()
    assert "is a symbolic link" in capsys.readouterr().err
