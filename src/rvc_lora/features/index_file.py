"""Check a retrieval index file's layout before faiss reads it.

faiss trusts the counts in a file: a vector's size is read, the vector is allocated (and zeroed)
at that size, and only then filled from the file. A damaged or crafted ``.index`` of a few KB can
so make it allocate gigabytes. RVC writes one kind of index, ``IVF{n},Flat``
(``IndexIVFFlat``: faiss fourcc ``IwFl`` holding an ``IndexFlat`` quantizer and
``ArrayInvertedLists``), and so do we; this module walks that layout (faiss
``impl/index_write.cpp``) and checks that every count fits in the bytes left and that the parts
agree, reading nothing but the file's bytes.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

_MAX_DIM = 65536  # content features are 256-d (v1) or 768-d (v2)
_FLAT = (b"IxF2", b"IxFI", b"IxFl")  # IndexFlatL2, IndexFlatIP, IndexFlat (any metric)


class IndexLayoutError(ValueError):
    """The file is not an intact ``IVF{n},Flat`` index; the message says where it breaks."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or n > len(self.data) - self.at:
            raise IndexLayoutError(
                f"{what} needs {n} bytes at offset {self.at}, the file has "
                f"{len(self.data) - self.at} left"
            )
        self.at += n
        return self.data[self.at - n : self.at]

    def unpack(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def vector(self, item_bytes: int, what: str) -> bytes:
        (n,) = self.unpack("Q", f"{what} size")
        if n > (len(self.data) - self.at) // max(item_bytes, 1):
            raise IndexLayoutError(f"{what} claims {n} items, more than the file holds")
        return self.take(n * item_bytes, what)


def _header(r: _Reader, what: str) -> tuple[int, int]:
    """faiss ``write_index_header``: (d, ntotal)."""
    d, ntotal, _, _, _trained, metric = r.unpack("iqqq?i", f"{what} header")
    if metric > 1:
        r.unpack("f", f"{what} metric_arg")
    if not 1 <= d <= _MAX_DIM or ntotal < 0:
        raise IndexLayoutError(f"{what} has d={d}, ntotal={ntotal}")
    return d, ntotal


def check_ivf_flat(data: bytes) -> tuple[int, int]:
    """Walk an ``IwFl`` index in ``data``; returns ``(d, ntotal)``.

    Raises:
        IndexLayoutError: another index kind, a count beyond the file, parts that disagree, or
            bytes left over.
    """
    r = _Reader(data)
    kind = r.take(4, "fourcc")
    if kind != b"IwFl":
        raise IndexLayoutError(
            f"index kind {kind!r} is not IVF-Flat (fourcc b'IwFl'), the only kind RVC writes"
        )
    d, ntotal = _header(r, "index")
    nlist, _nprobe = r.unpack("QQ", "nlist/nprobe")
    quantizer = r.take(4, "quantizer fourcc")
    if quantizer not in _FLAT:
        raise IndexLayoutError(f"quantizer {quantizer!r} is not a flat index")
    qd, qn = _header(r, "quantizer")
    centroids = r.vector(4, "quantizer vectors")
    if qd != d or qn != nlist or len(centroids) != 4 * d * nlist:
        raise IndexLayoutError(
            f"quantizer ({qd}-d, {qn} centroids) does not fit d={d}, nlist={nlist}"
        )
    (direct_map,) = r.unpack("b", "direct map type")
    r.vector(8, "direct map")
    if direct_map == 2:  # hashtable: (id, offset) pairs
        r.vector(16, "direct map table")
    if r.take(4, "inverted lists fourcc") != b"ilar":
        raise IndexLayoutError("inverted lists are not faiss ArrayInvertedLists (b'ilar')")
    il_nlist, code_size = r.unpack("QQ", "inverted lists header")
    if il_nlist != nlist or code_size != 4 * d:
        raise IndexLayoutError(
            f"inverted lists ({il_nlist} lists, {code_size}-byte codes) do not fit nlist={nlist}, d={d}"
        )
    layout = r.take(4, "list layout")
    raw = r.vector(8, "list sizes")
    counts = struct.unpack(f"<{len(raw) // 8}Q", raw)
    if layout == b"full" and len(counts) == nlist:
        sizes = list(counts)
    elif layout == b"sprs" and len(counts) % 2 == 0:
        pairs = list(zip(counts[::2], counts[1::2], strict=True))
        if any(i >= nlist for i, _ in pairs):
            raise IndexLayoutError("a sparse list number is beyond nlist")
        sizes = [n for _, n in pairs]
    else:
        raise IndexLayoutError(f"list layout {layout!r} with {len(counts)} sizes for {nlist} lists")
    if sum(sizes) != ntotal:
        raise IndexLayoutError(f"lists hold {sum(sizes)} vectors, the header says {ntotal}")
    ids = []
    for n in sizes:
        if n > (len(data) - r.at) // (code_size + 8):
            raise IndexLayoutError(f"a list claims {n} vectors, more than the file holds")
        r.take(n * code_size, "list codes")
        ids.append(np.frombuffer(r.take(n * 8, "list ids"), dtype="<i8"))
    if r.at != len(data):
        raise IndexLayoutError(f"{len(data) - r.at} bytes after the index")
    # reconstruct_n(0, ntotal) fills row i from the vector with id i: the ids must be exactly
    # 0..ntotal-1, or rows of the blend's table stay unset.
    all_ids = np.sort(np.concatenate(ids)) if ids else np.zeros(0, dtype="<i8")
    if not np.array_equal(all_ids, np.arange(ntotal)):
        raise IndexLayoutError(f"vector ids are not 0..{ntotal - 1}, each once")
    return d, ntotal


def check_index_file(path: Path) -> tuple[int, int]:
    """:func:`check_ivf_flat` of the file at ``path``."""
    return check_ivf_flat(path.read_bytes())
