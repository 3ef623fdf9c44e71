"""Hostile files made by the tests themselves: raw pickles, torch zips around them, zip bombs."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import torch


def global_op(module: str, name: str) -> bytes:
    """GLOBAL opcode naming ``module.name`` (what a pickle uses to reach any importable object)."""
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def text(s: str) -> bytes:
    """BINUNICODE opcode: push the str ``s``."""
    data = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(data)) + data


def raw_bytes(b: bytes) -> bytes:
    """SHORT_BINBYTES opcode: push ``b`` (< 256 bytes)."""
    return pickle.SHORT_BINBYTES + bytes([len(b)]) + b


def small_int(i: int) -> bytes:
    """BININT opcode: push a signed 32-bit int."""
    return pickle.BININT + struct.pack("<i", i)


def protocol2(*body: bytes) -> bytes:
    """A protocol-2 pickle of the opcodes ``body`` (STOP appended)."""
    return pickle.PROTO + b"\x02" + b"".join(body) + pickle.STOP


def call(module: str, name: str, *args: bytes) -> bytes:
    """Opcodes for ``module.name(*args)`` (GLOBAL, MARK args TUPLE, REDUCE)."""
    return global_op(module, name) + pickle.MARK + b"".join(args) + pickle.TUPLE + pickle.REDUCE


def torch_zip(path: Path, pickle_bytes: bytes) -> Path:
    """A torch.save zip whose ``data.pkl`` is ``pickle_bytes`` (entries stored, as torch does)."""
    buf = io.BytesIO()
    torch.save({}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            data = pickle_bytes if info.filename.endswith("/data.pkl") else src.read(info)
            out.writestr(info.filename, data)
    return path


def zip_bomb(src: Path, dst: Path, inflated_mb: int) -> Path:
    """``src`` (a torch zip with tensors) whose first storage entry, ``data/0``, now inflates to
    ``inflated_mb`` MB of zeros (deflate-compressed, ~1 KB per MB): a zip bomb that torch would
    inflate in memory. Streamed, so the test itself never holds the zeros."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as out:
        for info in zin.infolist():
            if not info.filename.endswith("/data/0"):
                out.writestr(info.filename, zin.read(info))
                continue
            bomb = zipfile.ZipInfo(info.filename)
            bomb.compress_type = zipfile.ZIP_DEFLATED
            chunk = bytes(1 << 20)
            with out.open(bomb, "w", force_zip64=True) as f:
                for _ in range(inflated_mb):
                    f.write(chunk)
    return dst


def lie_about_sizes(path: Path, claimed: int) -> Path:
    """Rewrite every central-directory record of the zip at ``path`` to claim ``claimed`` bytes
    (compressed and uncompressed: a stored entry that says it is huge)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at != -1:
        data[at + 20 : at + 28] = struct.pack("<II", claimed, claimed)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    return path


def needs_zip_version(path: Path, version: int) -> Path:
    """Rewrite the "version needed to extract" of every central-directory record (255 = 25.5,
    beyond what Python's zipfile reads; a fuzzer found this)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at != -1:
        data[at + 6 : at + 8] = struct.pack("<H", version)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))
    return path
