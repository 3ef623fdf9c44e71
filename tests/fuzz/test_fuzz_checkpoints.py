"""Fuzzing the files users download: exported RVC ``.pth``, training ``G_*.pth``, retrieval
``.index``. Every damaged or hostile file gives one line of our error types naming the file (no
traceback from inside torch/faiss), runs no code, and writes nothing."""

from __future__ import annotations

import hashlib
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rvc_lora.features.fairseq_pickle import load_fairseq_checkpoint
from rvc_lora.features.fcpe import FCPEConfig, FCPENet, checkpoint_dict, load_fcpe
from rvc_lora.features.hubert import ContentEncoder
from rvc_lora.features.hubert_tiny import write_tiny_fairseq_checkpoint
from rvc_lora.features.index import FeatureIndex, build_index, load_index, save_index
from rvc_lora.inference.checkpoints import load_voice_model
from rvc_lora.models import build_synthesizer, export_rvc_model, load_rvc_checkpoint
from rvc_lora.utils.errors import RvcLoraError
from tests.fuzz.crafted_files import (
    call,
    global_op,
    lie_about_sizes,
    protocol2,
    text,
    torch_zip,
    zip_bomb,
)

PTH_LOADERS: list[Callable] = [load_rvc_checkpoint, load_voice_model]
INDEX_LOADERS: list[Callable] = [lambda p: load_index(p, expected_dim=256), FeatureIndex.load]
FUZZ = settings(
    max_examples=12, deadline=None, derandomize=True, database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, bytes]:
    """Valid files of each kind, as bytes: tiny exported model, tiny G_*.pth, 256-d index."""
    d = tmp_path_factory.mktemp("valid")
    torch.manual_seed(0)
    model = build_synthesizer("tiny", True)
    export_rvc_model(model, d / "voice.pth")
    torch.save(
        {"model": model.state_dict(), "iteration": 10, "learning_rate": 1e-4,
         "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}},
        d / "G_10.pth",
    )  # fmt: skip
    feats = np.random.default_rng(0).standard_normal((200, 256)).astype(np.float32)
    save_index(build_index(feats), d / "added.index")
    write_tiny_fairseq_checkpoint(d / "hubert.pt", layers=2)
    names = ("voice.pth", "G_10.pth", "added.index", "hubert.pt")
    return {n: (d / n).read_bytes() for n in names}


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


def expect_refusal(path: Path, loaders: list[Callable], *, may_load: bool = False) -> int:
    """Each loader refuses ``path`` with one line of ours naming it (or loads, if ``may_load``),
    and nothing in its folder changes. Returns how many loads were tried."""
    before = _snapshot(path.parent)
    for load in loaders:
        try:
            load(path)
        except RvcLoraError as err:
            msg = str(err)
            assert str(path) in msg and "\n" not in msg, msg
        else:
            assert may_load, f"{path.name} loaded"
    assert _snapshot(path.parent) == before
    return len(loaders)


# -- damaged bytes -----------------------------------------------------------------------------
_CUTS = [1, 10, 100, 0.5, -100, -1]  # absolute lengths, or a fraction / from the end


@pytest.mark.parametrize("name", ["voice.pth", "G_10.pth", "added.index"])
def test_truncated_empty_and_foreign_files(files, tmp_path, name) -> None:
    data = files[name]
    loaders = INDEX_LOADERS if name.endswith(".index") else PTH_LOADERS
    other = files["voice.pth"] if name.endswith(".index") else files["added.index"]
    variants = [data[: int(len(data) * c) if isinstance(c, float) else c] for c in _CUTS]
    variants += [b"", b"this is a text file\n" * 20, other, b"XXXX" + data[4:]]
    for i, content in enumerate(variants):
        (tmp_path / f"{i}_{name}").write_bytes(content)
        expect_refusal(tmp_path / f"{i}_{name}", loaders)


def _structural_offsets(data: bytes) -> list[int]:
    """Byte offsets of a torch zip outside its tensor data (pickle, headers, directory)."""
    tmp = zipfile.ZipFile(__import__("io").BytesIO(data))
    skip = set()
    for info in tmp.infolist():
        if "/data/" in info.filename:
            extra = struct.unpack("<H", data[info.header_offset + 28 : info.header_offset + 30])[0]
            start = info.header_offset + 30 + len(info.filename.encode()) + extra
            skip.update(range(start, start + info.compress_size))
    return [i for i in range(len(data)) if i not in skip]


@pytest.mark.parametrize("name", ["voice.pth", "G_10.pth", "added.index", "hubert.pt"])
def test_random_byte_flips_and_cuts(files, tmp_path_factory, name) -> None:
    data = files[name]
    loaders = {"index": INDEX_LOADERS, "pth": PTH_LOADERS[:1], "pt": [ContentEncoder.from_fairseq]}
    loaders = loaders[name.rsplit(".", 1)[1]]
    # Flips inside tensor data only change numbers; aim at the structure of torch zips.
    where = list(range(len(data))) if name.endswith(".index") else _structural_offsets(data)
    folder = tmp_path_factory.mktemp("flips")

    @FUZZ
    @given(
        flips=st.lists(
            st.tuples(st.sampled_from(where), st.integers(1, 255)), min_size=1, max_size=4
        ),
        cut=st.one_of(st.none(), st.integers(0, len(data) - 1)),
    )
    def check(flips, cut) -> None:
        damaged = bytearray(data)
        for at, xor in flips:
            damaged[at] ^= xor
        path = folder / name
        path.write_bytes(bytes(damaged[:cut] if cut is not None else damaged))
        # A flip may leave a valid file (e.g. a changed name in the zip directory).
        expect_refusal(path, loaders, may_load=cut is None)

    check()


# -- wrong content in a readable file ----------------------------------------------------------
def _export_edits() -> dict[str, Callable[[dict], None]]:
    def drop(key):
        return lambda c: c["weight"].pop(key)

    return {
        "no weight": lambda c: c.pop("weight"),
        "weight not a dict": lambda c: c.update(weight=[1, 2]),
        "config too short": lambda c: c.update(config=c["config"][:5]),
        "config huge": lambda c: c.update(config=[10**6] * len(c["config"])),
        "config strings": lambda c: c.update(config=["x"] * len(c["config"])),
        "key missing": drop("dec.conv_pre.bias"),
        "extra key": lambda c: c["weight"].update({"dec.extra.weight": torch.zeros(2)}),
        "wrong shape": lambda c: c["weight"].update({"dec.conv_pre.bias": torch.zeros(3)}),
        "not a tensor": lambda c: c["weight"].update({"dec.conv_pre.bias": "zeros"}),
        "int key": lambda c: c["weight"].update({7: torch.zeros(1)}),
        "bad version": lambda c: c.update(version=["v9"]),
        "f0 not a flag": lambda c: c.update(f0="yes"),
        "huge speaker table": lambda c: c["weight"].update({"emb_g.weight": torch.zeros(5000, 1).expand(5000, 64)}),
    }  # fmt: skip


def _g_edits() -> dict[str, Callable[[dict], None]]:
    return {
        "model renamed": lambda c: c.update(modle=c.pop("model")),
        "key missing": lambda c: c["model"].pop("enc_p.proj.weight"),
        "wrong shape": lambda c: c["model"].update({"enc_p.proj.weight": torch.zeros(1, 1, 1)}),
        "not a generator": lambda c: c["model"].pop("emb_g.weight"),
        "a list": lambda c: c.update(model=list(c["model"].values())),
        "sr contradicts": lambda c: c.update(sr="48k"),
    }


@pytest.mark.parametrize(
    ("name", "label"),
    [("voice.pth", k) for k in _export_edits()] + [("G_10.pth", k) for k in _g_edits()],
)
def test_wrong_keys_shapes_and_types(files, tmp_path, name, label) -> None:
    src = tmp_path / "src.pth"
    src.write_bytes(files[name])
    content = torch.load(src, weights_only=True)
    (_export_edits() if name == "voice.pth" else _g_edits())[label](content)
    path = tmp_path / name
    torch.save(content, path)
    expect_refusal(path, PTH_LOADERS)


# -- pickles that try to run code ----------------------------------------------------------------
def _payloads(marker: Path) -> dict[str, bytes]:
    shell = f"touch {marker}"
    py = f"open({str(marker)!r}, 'w')"
    in_weights = pickle.EMPTY_DICT + text("weight") + pickle.EMPTY_DICT + text("x")
    return {
        "os.system": protocol2(call("os", "system", text(shell))),
        "posix.system in weight": protocol2(
            in_weights + call("posix", "system", text(shell)) + pickle.SETITEM + pickle.SETITEM
        ),
        "builtins.eval": protocol2(call("builtins", "eval", text(py))),
        "builtins.exec": protocol2(call("builtins", "exec", text(py))),
        "subprocess.Popen": protocol2(
            call("subprocess", "Popen", pickle.EMPTY_LIST + text("touch") + pickle.APPEND
                 + text(str(marker)) + pickle.APPEND)
        ),  # fmt: skip
        "STACK_GLOBAL": b"\x80\x04" + text("os") + text("system") + pickle.STACK_GLOBAL
        + pickle.MARK + text(shell) + pickle.TUPLE + pickle.REDUCE + pickle.STOP,
        "INST": pickle.MARK + pickle.STRING + f"'{shell}'\n".encode() + pickle.INST
        + b"os\nsystem\n" + pickle.STOP,
        "getattr gadget": protocol2(
            call("builtins", "getattr", global_op("os", "path"), text("exists"))
        ),
        "torch.load gadget": protocol2(call("torch", "load", text(str(marker)))),
    }  # fmt: skip


def test_payloads_are_live(tmp_path) -> None:
    """The payloads do run under plain pickle: refusing them below is a real test."""
    marker = tmp_path / "ran"
    pickle.loads(_payloads(marker)["os.system"])
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol 4")  # the STACK_GLOBAL payload
@pytest.mark.parametrize("label", list(_payloads(Path("m"))))
def test_code_pickles_are_refused_and_never_run(tmp_path, label) -> None:
    marker = tmp_path / "pwned"
    path = torch_zip(tmp_path / "evil.pth", _payloads(marker)[label])
    expect_refusal(path, [*PTH_LOADERS, load_fairseq_checkpoint])
    raw = tmp_path / "evil_raw.pth"  # the legacy (not zip) format reads the pickle directly
    raw.write_bytes(_payloads(marker)[label])
    expect_refusal(raw, [*PTH_LOADERS, load_fairseq_checkpoint])
    assert not marker.exists()


# -- sizes the file did not pay for ------------------------------------------------------------
def test_zip_bombs_and_lying_zip_sizes(files, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was reached"))
    for name in ("voice.pth", "G_10.pth"):
        (tmp_path / f"src_{name}").write_bytes(files[name])
        bomb = zip_bomb(tmp_path / f"src_{name}", tmp_path / f"bomb_{name}", inflated_mb=64)
        expect_refusal(bomb, PTH_LOADERS)
        lying = tmp_path / f"lying_{name}"
        lying.write_bytes(files[name])
        expect_refusal(lie_about_sizes(lying, 2**31), PTH_LOADERS)


def _field_offsets(data: bytes) -> dict[str, int]:
    """Offsets of the size fields of an IwFl index (faiss index_write.cpp layout)."""
    header = 4 + struct.calcsize("<iqqq?i")
    quantizer = header + 16 + 4 + struct.calcsize("<iqqq?i")
    d = struct.unpack("<i", data[4:8])[0]
    (n_centroids,) = struct.unpack("<Q", data[quantizer : quantizer + 8])
    direct_map = quantizer + 8 + 4 * n_centroids + 1
    ilar = direct_map + 8 + 4
    assert data[ilar - 4 : ilar] == b"ilar" and n_centroids % d == 0
    return {
        "ntotal": 8, "nlist": header, "centroids": quantizer, "direct map": direct_map,
        "il nlist": ilar, "code size": ilar + 8, "list sizes": ilar + 20,
    }  # fmt: skip


@pytest.mark.parametrize(
    "field", ["ntotal", "nlist", "centroids", "direct map", "il nlist", "code size", "list sizes"]
)
def test_index_counts_beyond_the_file_never_reach_faiss(
    files, tmp_path, monkeypatch, field
) -> None:
    data = bytearray(files["added.index"])
    at = _field_offsets(bytes(data))[field]
    data[at : at + 8] = struct.pack("<Q", 2**38)  # faiss would zero-fill 2**38 items
    path = tmp_path / "huge.index"
    path.write_bytes(bytes(data))
    monkeypatch.setattr(faiss, "read_index", lambda *a: pytest.fail("faiss.read_index was reached"))
    expect_refusal(path, INDEX_LOADERS)


@pytest.mark.parametrize("bad_id", [200, -1, 2**40, "duplicate"])
def test_index_ids_must_number_the_vectors(files, tmp_path, bad_id) -> None:
    # reconstruct_n(0, ntotal) fills row i from the vector whose id is i: an id out of range or
    # twice leaves rows of the blend's table unset (uninitialised memory).
    data = bytearray(files["added.index"])
    at = _field_offsets(bytes(data))["list sizes"]
    assert data[at - 4 : at] == b"full"
    (count,) = struct.unpack("<Q", data[at : at + 8])
    sizes = struct.unpack(f"<{count}Q", data[at + 8 : at + 8 + 8 * count])
    first = next(i for i, n in enumerate(sizes) if n >= 2)
    ids = at + 8 + 8 * count + sum(n * (256 * 4 + 8) for n in sizes[:first]) + sizes[first] * 1024
    if bad_id == "duplicate":
        data[ids + 8 : ids + 16] = data[ids : ids + 8]
    else:
        data[ids : ids + 8] = struct.pack("<q", bad_id)
    (tmp_path / "ids.index").write_bytes(bytes(data))
    expect_refusal(tmp_path / "ids.index", INDEX_LOADERS)


def test_other_index_kinds_and_pickles_named_index(tmp_path) -> None:
    # Refused by kind, before any size is read: 16-d keeps the training cheap.
    x = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
    for label, factory in [("flat", "Flat"), ("sq", "IVF4,SQ8"), ("hnsw", "HNSW8")]:
        index = faiss.index_factory(16, factory)
        index.train(x)
        index.add(x)
        save_index(index, tmp_path / f"{label}.index")
        expect_refusal(tmp_path / f"{label}.index", INDEX_LOADERS)
    marker = tmp_path / "pwned"
    (tmp_path / "evil.index").write_bytes(_payloads(marker)["os.system"])
    expect_refusal(tmp_path / "evil.index", INDEX_LOADERS)
    assert not marker.exists()


# -- a run's Lightning .ckpt (load_voice_model) -------------------------------------------------
def _first(c: dict) -> str:
    return next(iter(c["state_dict"]))


_CKPT_EDITS: dict[str, Callable[[dict], None]] = {
    "value a str": lambda c: c["state_dict"].update({_first(c): "x"}),
    "int key": lambda c: c["state_dict"].update({5: torch.zeros(1)}),
    "int tensor": lambda c: c["state_dict"].update({_first(c): c["state_dict"][_first(c)].long()}),
    "NaN tensor": lambda c: c["state_dict"][_first(c)].fill_(float("nan")),
    "base_identity a list": lambda c: c["rvc_lora"].update(base_identity=[1]),
    "targets an int": lambda c: c["rvc_lora"].update(targets=5),
    "state_dict a list": lambda c: c.update(state_dict=[1]),
}
_FULL_EDITS: dict[str, Callable[[dict], None]] = {
    "unknown preset": lambda c: c["rvc_lora"].update(preset="nope"),
    "preset a list": lambda c: c["rvc_lora"].update(preset=["tiny"]),
    "f0 a str": lambda c: c["rvc_lora"].update(f0="no"),
    "int key": lambda c: c["state_dict"].update({5: torch.zeros(1)}),
    "NaN tensor": lambda c: c["state_dict"][_first(c)].fill_(float("nan")),
}


@pytest.fixture(scope="module")
def lightning_ckpts(tmp_path_factory) -> dict[str, dict]:
    """A LoRA run's and a full fine-tuning run's .ckpt content (tiny preset), as
    VoiceConversionModule.on_save_checkpoint writes them (built here without Lightning: its
    import alone takes longer than these tests)."""
    from rvc_lora.lora import LoraConfig, base_identity, inject_lora, trainable_parameters

    torch.manual_seed(0)
    base = build_synthesizer("tiny", True)
    d = tmp_path_factory.mktemp("ckpt")
    torch.save({"model": base.state_dict()}, d / "base.pth")
    rec = {"d_policy": "frozen", "preset": "tiny", "f0": True, "seed": None}
    lora = LoraConfig(preset="decoder", rank=4, alpha=8)
    model = build_synthesizer("tiny", True)
    model.load_state_dict(base.state_dict())
    targets = inject_lora(model, lora)
    full = {f"generator.{k}": v for k, v in base.state_dict().items()}
    trained = {f"generator.{k}": v.detach() for k, v in trainable_parameters(model).items()}
    lora_rec = {"mode": "lora", "lora_config": lora.to_dict(), "targets": list(targets)}
    full_rec = {"mode": "full", "lora_config": None, "targets": []}
    return {
        "base": {"bytes": (d / "base.pth").read_bytes()},
        "lora": {"state_dict": trained,
                 "rvc_lora": {**rec, **lora_rec, "base_identity": base_identity(model)}},
        "full": {"state_dict": full,
                 "rvc_lora": {**rec, **full_rec, "base_identity": base_identity(base)}},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "label"),
    [("lora", None), ("full", None)]
    + [("lora", k) for k in _CKPT_EDITS]
    + [("full", k) for k in _FULL_EDITS],
)
def test_lightning_ckpt_with_wrong_entries(lightning_ckpts, tmp_path, kind, label) -> None:
    content = __import__("copy").deepcopy(lightning_ckpts[kind])
    if label is not None:
        (_CKPT_EDITS if kind == "lora" else _FULL_EDITS)[label](content)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "base.pth").write_bytes(lightning_ckpts["base"]["bytes"])
    path = run / "checkpoints" / "last.ckpt"
    torch.save({"epoch": 1, "global_step": 10, **content}, path)
    if label is None:  # the unedited file loads: the refusals below are the edits' doing
        assert load_voice_model(path)[1]["kind"] == "lightning"
    else:
        expect_refusal(path, [load_voice_model])


# -- FCPE's fcpe_c_v001.pt (load_fcpe) -------------------------------------------------------------
@pytest.fixture(scope="module")
def fcpe_bytes(tmp_path_factory) -> bytes:
    """A tiny FCPE file in the released layout (checkpoint_dict), as bytes."""
    path = tmp_path_factory.mktemp("fcpe") / "fcpe.pt"
    torch.save(checkpoint_dict(FCPENet(FCPEConfig(hidden=16, n_layers=2))), path)
    return path.read_bytes()


def test_fcpe_truncated_empty_and_foreign_files(fcpe_bytes, files, tmp_path) -> None:
    """Cuts, an empty file, text, an RVC .pth and a faiss index named fcpe_c_v001.pt: one line of
    ours each. Fails if any reached the user as a torch/pickle/zip traceback."""
    data = fcpe_bytes
    variants = [data[: int(len(data) * c) if isinstance(c, float) else c] for c in _CUTS]
    variants += [b"", b"this is a text file\n" * 20, files["voice.pth"], files["added.index"],
                 b"XXXX" + data[4:]]  # fmt: skip
    for i, content in enumerate(variants):
        (tmp_path / f"{i}_fcpe_c_v001.pt").write_bytes(content)
        expect_refusal(tmp_path / f"{i}_fcpe_c_v001.pt", [load_fcpe])


def test_fcpe_random_byte_flips_and_cuts(fcpe_bytes, tmp_path_factory) -> None:
    """Flips in the zip's structure and pickle (config values included), with or without a cut:
    refused in one line, or loaded when the flip left a valid file. Fails for any exception that
    is not ours (a KeyError from the config, a torch error from a garbled size)."""
    data = fcpe_bytes
    where = _structural_offsets(data)
    folder = tmp_path_factory.mktemp("fcpe_flips")

    @FUZZ
    @given(
        flips=st.lists(
            st.tuples(st.sampled_from(where), st.integers(1, 255)), min_size=1, max_size=4
        ),
        cut=st.one_of(st.none(), st.integers(0, len(data) - 1)),
    )
    def check(flips, cut) -> None:
        damaged = bytearray(data)
        for at, xor in flips:
            damaged[at] ^= xor
        path = folder / "fcpe_c_v001.pt"
        path.write_bytes(bytes(damaged[:cut] if cut is not None else damaged))
        expect_refusal(path, [load_fcpe], may_load=cut is None)

    check()
