"""hubert_base.pt from the internet: crafted pickles, zip bombs and oversized configs are refused
with one line naming the file, before anything is run, inflated or allocated."""

from __future__ import annotations

import ast
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import rvc_lora
from rvc_lora.features import hubert_tiny
from rvc_lora.features.fairseq_layout import MAX_CONV_LAYERS, parse_conv_feature_layers
from rvc_lora.features.fairseq_pickle import load_fairseq_checkpoint
from rvc_lora.features.hubert import ContentEncoder
from rvc_lora.features.hubert_tiny import write_tiny_fairseq_checkpoint
from rvc_lora.utils.errors import CheckpointError
from rvc_lora.utils.safe_load import safe_torch_load
from tests.fuzz.crafted_files import (
    call,
    global_op,
    lie_about_sizes,
    needs_zip_version,
    protocol2,
    raw_bytes,
    small_int,
    text,
    torch_zip,
    zip_bomb,
)

# numpy's dtype state: (version, byteorder, subarray, names, fields, elsize, alignment, flags).
# flags=0 on an object dtype claims it holds no object references, so numpy would take the
# array's bytes (b"A" * 8) as a PyObject pointer: 0x4141414141414141.
_OBJECT_DTYPE = (
    call("numpy", "dtype", text("O8"), pickle.NEWFALSE, pickle.NEWTRUE)
    + pickle.MARK + small_int(3) + text("|") + pickle.NONE * 3
    + small_int(-1) + small_int(-1) + small_int(0) + pickle.TUPLE + pickle.BUILD
)  # fmt: skip


def _array_of(dtype_ops: bytes, module: str = "numpy.core.multiarray") -> bytes:
    """ndarray rebuilt as numpy pickles it: _reconstruct(ndarray, (0,), b'b') + BUILD state."""
    return (
        call(module, "_reconstruct", global_op("numpy", "ndarray"),
             small_int(0) + pickle.TUPLE1, raw_bytes(b"b"))
        + pickle.MARK + small_int(1) + small_int(1) + pickle.TUPLE1 + dtype_ops
        + pickle.NEWFALSE + raw_bytes(b"A" * 8) + pickle.TUPLE + pickle.BUILD
    )  # fmt: skip


_EXPLOITS = {
    # dtype first, then the array that would dereference its "pointer" (the reported crash)
    "object_dtype_then_array": protocol2(_OBJECT_DTYPE + pickle.POP + _array_of(_OBJECT_DTYPE)),
    "array_numpy1_name": protocol2(_array_of(_OBJECT_DTYPE)),
    "array_numpy2_name": protocol2(_array_of(_OBJECT_DTYPE, "numpy._core.multiarray")),
    # a numeric name whose state says it is a structured dtype with fields
    "numeric_dtype_with_fields": protocol2(
        call("numpy", "dtype", text("f8"), pickle.NEWFALSE, pickle.NEWTRUE)
        + pickle.MARK
        + small_int(3)
        + text("<")
        + pickle.NONE
        + text("a")
        + pickle.TUPLE1
        + pickle.EMPTY_DICT
        + small_int(8)
        + small_int(1)
        + small_int(0)
        + pickle.TUPLE
        + pickle.BUILD
    ),  # fmt: skip
}

_CHILD = """
import sys
from rvc_lora.features.fairseq_pickle import load_fairseq_checkpoint
from rvc_lora.utils.errors import CheckpointError
for path in sys.argv[1:]:
    try:
        load_fairseq_checkpoint(path)
        print("LOADED", path)
    except CheckpointError as err:
        print("REFUSED", err)
"""


def test_crafted_numpy_object_dtype_is_refused_in_a_child_process(tmp_path) -> None:
    # A regression would segfault, so the loads run in a child process.
    paths = [torch_zip(tmp_path / f"{name}.pt", ops) for name, ops in _EXPLOITS.items()]
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, *map(str, paths)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    lines = done.stdout.splitlines()
    assert len(lines) == len(paths)
    for line, path in zip(lines, paths, strict=True):
        assert line.startswith(f"REFUSED {path}: refused to load: "), line
    assert "numpy dtype 'O8'" in lines[0]
    assert "numpy.core.multiarray._reconstruct" in lines[1]
    assert "numpy._core.multiarray._reconstruct" in lines[2]
    assert "not a plain number" in lines[3]


@pytest.mark.parametrize(
    "value", [np.float64(2.5), np.float32(-1.25), np.int64(-3), np.uint8(200), np.bool_(True)]
)
def test_numpy_scalars_still_load_by_dtype_name(tmp_path, value) -> None:
    path = torch_zip(tmp_path / "scalar.pt", pickle.dumps({"best": value}, protocol=2))
    loaded = load_fairseq_checkpoint(path)["best"]
    assert type(loaded) is type(value) and loaded == value


def _refusal(path: Path) -> str:
    with pytest.raises(CheckpointError) as err:
        load_fairseq_checkpoint(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: refused to load: ") and "\n" not in msg
    return msg


def test_build_reaches_only_our_stand_ins(tmp_path) -> None:
    # Tensor.__setstate__ with 4 items is Tensor.set_(storage, offset, size, stride).
    tensor = call("torch._tensor", "Tensor") + small_int(1) + small_int(2) + pickle.TUPLE2
    assert "state of a torch.Tensor" in _refusal(
        torch_zip(tmp_path / "t.pt", protocol2(tensor + pickle.BUILD))
    )
    default = call("collections", "defaultdict") + pickle.EMPTY_DICT
    assert "collections.defaultdict" in _refusal(
        torch_zip(tmp_path / "d.pt", protocol2(default + pickle.BUILD))
    )
    # ...while a state dict's _metadata (BUILD on an OrderedDict) still loads.
    sd = torch.nn.Linear(2, 2).state_dict()
    torch.save({"model": sd}, tmp_path / "sd.pt")
    ok = tmp_path / "sd.pt"
    assert load_fairseq_checkpoint(ok)["model"]._metadata == sd._metadata


def test_bytes_of_a_size_is_refused_empty_bytes_load(tmp_path) -> None:
    start = time.perf_counter()
    msg = _refusal(
        torch_zip(tmp_path / "b.pt", protocol2(call("builtins", "bytes", small_int(2**31 - 1))))
    )
    assert "bytes(int" in msg and time.perf_counter() - start < 2
    empty = torch_zip(
        tmp_path / "e.pt", pickle.dumps({"x": b"", "y": bytearray(b"ab")}, protocol=2)
    )
    assert load_fairseq_checkpoint(empty) == {"x": b"", "y": bytearray(b"ab")}


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> Path:
    """A 100 KB checkpoint whose storage entry inflates to 100 MB."""
    d = tmp_path_factory.mktemp("bomb")
    torch.save({"model": {"w": torch.ones(3)}}, d / "src.pt")
    return zip_bomb(d / "src.pt", d / "bomb.pt", inflated_mb=100)


@pytest.mark.parametrize("loader", [safe_torch_load, load_fairseq_checkpoint])
def test_zip_bomb_is_refused_from_the_zip_directory(bomb, loader, monkeypatch) -> None:
    assert bomb.stat().st_size < 200_000
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was reached"))
    with pytest.raises(CheckpointError) as err:
        loader(bomb)
    assert str(err.value).startswith(f"{bomb}: refused to load: zip entry ")
    assert "data/0' is compressed (method 8)" in str(err.value) and "\n" not in str(err.value)


def test_zip_entries_claiming_more_than_the_file_are_refused(tmp_path) -> None:
    path = tmp_path / "lying.pt"
    torch.save({"w": torch.ones(3)}, path)
    size = path.stat().st_size
    assert safe_torch_load(path)["w"].shape == (3,)
    lie_about_sizes(path, 2**31)
    with pytest.raises(CheckpointError, match=rf"claim \d+ bytes in a {size}-byte file"):
        safe_torch_load(path)
    with pytest.raises(CheckpointError, match="refused to load"):
        ContentEncoder.from_fairseq(path)


@pytest.mark.parametrize("loader", [safe_torch_load, load_fairseq_checkpoint])
def test_zip_directory_python_cannot_read_is_refused(tmp_path, loader) -> None:
    path = tmp_path / "v255.pt"
    torch.save({"w": torch.ones(3)}, path)
    needs_zip_version(path, 255)
    with pytest.raises(CheckpointError) as err:
        loader(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: not a readable PyTorch checkpoint (zip directory: ")
    assert "zip file version 25.5" in msg and "\n" not in msg


def test_chained_repeats_and_huge_conv_specs_are_capped() -> None:
    start = time.perf_counter()
    for spec, says in [
        ("[(512,3,2)]" + "*64" * 8, "conv layers (at most 32)"),
        ("[(512,3,2)]*32 + [(512,2,2)]", "33 conv layers"),
        ("[(512,3,2)]*-1", "unsupported expression"),
        ("[(512,10,5)]" + " + [(512,3,2)]" * 100, "characters (at most 1000)"),
        ("[(4097,3,2)]", "dim 1..4096"),
        ("[(512,1025,2)]", "kernel and stride 1..1024"),
    ]:
        with pytest.raises(ValueError, match=rf"{says}".replace("(", r"\(").replace(")", r"\)")):
            parse_conv_feature_layers(spec)
    assert time.perf_counter() - start < 1
    assert len(parse_conv_feature_layers(f"[(512,3,2)]*{MAX_CONV_LAYERS}")) == MAX_CONV_LAYERS


def _edited(path: Path, edit) -> Path:
    """A tiny fairseq checkpoint whose saved dict went through ``edit(state)`` first."""
    real_save = hubert_tiny.atomic_torch_save
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(hubert_tiny, "atomic_torch_save", lambda s, p: real_save(edit(s) or s, p))
        return write_tiny_fairseq_checkpoint(path, layers=2)


@pytest.fixture
def no_real_build(monkeypatch):
    """Fail if a ContentEncoder is built anywhere but on the meta device."""
    real_init = ContentEncoder.__init__

    def init(self, *args, **kwargs):
        if torch.get_default_device().type != "meta":
            pytest.fail("a real ContentEncoder was built before the weights were checked")
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(ContentEncoder, "__init__", init)


def test_config_claiming_huge_dims_with_tiny_weights_is_refused_on_meta(
    tmp_path, no_real_build
) -> None:
    def huge(state):  # within the caps, ~50 GB of fp32 if it were built
        state["cfg"]["model"].update(encoder_embed_dim=4096, encoder_ffn_embed_dim=16384,
                                     encoder_attention_heads=64, encoder_layers=2)  # fmt: skip

    path = _edited(tmp_path / "huge.pt", huge)
    from transformers import HubertModel  # noqa: F401 - its first import alone takes seconds

    start = time.perf_counter()
    with pytest.raises(CheckpointError) as err:
        ContentEncoder.from_fairseq(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: weights do not fit") and "\n" not in msg
    assert "encoder.layers.0.self_attn.q_proj.bias (64,) vs (4096,)" in msg
    assert time.perf_counter() - start < 3


@pytest.mark.parametrize(
    ("edit", "says"),
    [
        ({"encoder_embed_dim": 10**6}, "hidden_size=1000000 (1..4096)"),
        ({"encoder_layers": 10**5}, "num_hidden_layers=100000 (1..64)"),
        ({"conv_pos": 10**9}, "num_conv_pos_embeddings=1000000000 (1..1024)"),
        ({"conv_feature_layers": "[(512,3,2)]" + "*64" * 8}, "conv layers (at most 32)"),
        ({"encoder_attention_heads": 5}, "describes no buildable model"),
    ],
)
def test_config_sizes_are_capped_before_any_model_is_built(
    tmp_path, no_real_build, edit, says
) -> None:
    path = _edited(tmp_path / "cfg.pt", lambda s: s["cfg"]["model"].update(edit))
    with pytest.raises(CheckpointError) as err:
        ContentEncoder.from_fairseq(path)
    assert str(err.value).startswith(f"{path}: ") and says in str(err.value)
    assert "\n" not in str(err.value)


def test_zero_stride_weights_that_expand_a_few_bytes_are_refused(tmp_path) -> None:
    def expand(state):
        w = state["model"]["encoder.layers.0.fc1.weight"]
        state["model"]["encoder.layers.0.fc1.weight"] = torch.zeros(1, dtype=w.dtype).expand(
            w.shape
        )

    path = _edited(tmp_path / "expanded.pt", expand)
    with pytest.raises(
        CheckpointError, match=r"encoder.layers.0.fc1.weight \(8192 elements over 2 stored bytes\)"
    ):
        ContentEncoder.from_fairseq(path)


def _feature_imports() -> dict[str, set[str]]:
    """features module -> the features modules it imports (anywhere: top level, functions,
    TYPE_CHECKING blocks)."""
    folder = Path(rvc_lora.__file__).parent / "features"
    graph: dict[str, set[str]] = {}
    for f in folder.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        graph[f.stem] = {
            n.removeprefix("rvc_lora.features.")
            for n in names
            if n.startswith("rvc_lora.features.")
        }
    return graph


def test_features_modules_import_one_way() -> None:
    graph = _feature_imports()
    assert "fairseq_backend" in graph["hubert"]  # hubert loads the backend on request
    assert "hubert" not in graph["fairseq_backend"]
    assert {"content_rule"} <= graph["hubert"] & graph["fairseq_backend"]  # the shared rule

    def cycle_from(node: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                return [*path[path.index(nxt) :], nxt]
            found = cycle_from(nxt, [*path, nxt])
            if found:
                return found
        return None

    assert [c for m in sorted(graph) if (c := cycle_from(m, [m]))] == []


# -- fcpe_c_v001.pt (load_fcpe) -----------------------------------------------------------------
def _fcpe_payloads(marker: Path) -> dict[str, bytes]:
    """Pickles an FCPE file could hold to run code: calls, a code object, bare class globals."""
    shell = f"touch {marker}"
    code = call("builtins", "compile", text(f"open({str(marker)!r}, 'w')"), text("<fcpe>"),
                text("exec"))  # fmt: skip
    # the released layout {"model": {...}, "config_dict": {}} with the call inside "model"
    in_layout = (
        pickle.EMPTY_DICT + text("model") + pickle.EMPTY_DICT + text("output_proj.bias")
        + call("posix", "system", text(shell)) + pickle.SETITEM + pickle.SETITEM
        + text("config_dict") + pickle.EMPTY_DICT + pickle.SETITEM
    )  # fmt: skip
    return {
        "os.system": protocol2(call("os", "system", text(shell))),
        "posix.system in model": protocol2(in_layout),
        "exec of a code object": protocol2(call("builtins", "exec", code)),
        "types.CodeType": protocol2(global_op("types", "CodeType")),
        "a module class": protocol2(global_op("rvc_lora.features.fcpe", "FCPENet")),
    }


def test_fcpe_payload_in_the_released_layout_is_live(tmp_path) -> None:
    """Plain pickle runs the in-layout payload: refusing it below is a real test."""
    marker = tmp_path / "ran"
    assert set(pickle.loads(_fcpe_payloads(marker)["posix.system in model"])) == {
        "model", "config_dict"
    }  # fmt: skip
    assert marker.exists()


@pytest.mark.parametrize("label", list(_fcpe_payloads(Path("m"))))
def test_fcpe_code_pickles_are_refused_and_never_run(tmp_path, label) -> None:
    """load_fcpe reads with the weights-only unpickler: each global is refused by name in one
    line, as a torch zip and as a legacy (bare pickle) file. Fails if load_fcpe called torch.load
    without weights_only, or let the unpickler's multi-line error through."""
    from rvc_lora.features.fcpe import load_fcpe

    marker = tmp_path / "pwned"
    payload = _fcpe_payloads(marker)[label]
    raw = tmp_path / "raw.pt"
    raw.write_bytes(payload)
    named = {"os.system": "os.system", "posix.system in model": "posix.system",
             "exec of a code object": "(exec)", "types.CodeType": "types.CodeType",
             "a module class": "rvc_lora.features.fcpe.FCPENet"}[label]  # fmt: skip
    for path in (torch_zip(tmp_path / "zip.pt", payload), raw):
        with pytest.raises(CheckpointError) as err:
            load_fcpe(path)
        msg = str(err.value)
        assert msg.startswith(f"{path}: refused to load: the file contains Python objects")
        assert named in msg and "\n" not in msg, msg
    assert not marker.exists()


def test_fcpe_zip_bomb_and_lying_sizes_never_reach_torch_load(tmp_path, monkeypatch) -> None:
    """A tiny FCPE file made to inflate, or claiming more bytes than it has, is refused from the
    zip directory. Fails if load_fcpe bypassed safe_torch_load's container check."""
    from rvc_lora.features.fcpe import FCPEConfig, FCPENet, checkpoint_dict, load_fcpe

    src = tmp_path / "fcpe.pt"
    torch.save(checkpoint_dict(FCPENet(FCPEConfig(hidden=16, n_layers=2))), src)
    bomb = zip_bomb(src, tmp_path / "bomb.pt", inflated_mb=64)
    lying = tmp_path / "lying.pt"
    lying.write_bytes(src.read_bytes())
    lie_about_sizes(lying, 2**31)
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was reached"))
    for path, says in ((bomb, "zip entry 'fcpe/data/0' is compressed (method 8)"),
                       (lying, "its zip entries claim")):  # fmt: skip
        with pytest.raises(CheckpointError) as err:
            load_fcpe(path)
        assert str(err.value).startswith(f"{path}: refused to load: ")
        assert says in str(err.value) and "\n" not in str(err.value)
