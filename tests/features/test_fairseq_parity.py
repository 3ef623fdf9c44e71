"""Parity with fairseq itself, and the optional fairseq backend's safety (no fairseq needed).

The fixture in ``tests/fixtures/fairseq_hubert/`` was made by fairseq (``make golden-fairseq``,
``tests/fixtures/make_fairseq_golden.py``): a tiny HuBERT built, saved and reloaded by fairseq,
with its v1/v2 features and every layer's output for a fixed signal.
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from rvc_lora.features import hubert_tiny
from rvc_lora.features.fairseq_pickle import FairseqObject, load_fairseq_checkpoint
from rvc_lora.features.hubert import ContentEncoder, load_content_encoder, num_frames
from rvc_lora.utils.errors import CheckpointError, RvcLoraError

FIXTURE = Path(__file__).parents[1] / "fixtures" / "fairseq_hubert"
CKPT = FIXTURE / "hubert_tiny_fairseq.pt"
REL_TOL = 1e-5  # max |ours - fairseq| <= REL_TOL * max |fairseq|


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(FIXTURE / "reference.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def ours() -> ContentEncoder:
    return ContentEncoder.from_fairseq(CKPT)


def _wav(ref: dict[str, np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(ref["signal"])[None]  # [1, N]


def _rel_err(got: torch.Tensor, want: np.ndarray) -> float:
    assert tuple(got.shape) == want.shape  # frame count included
    return float(np.abs(got.numpy() - want).max() / np.abs(want).max())


def _resave(state: dict, path: Path) -> Path:
    """Write a checkpoint read by our unpickler back in fairseq's layout (Dictionary included)."""
    with hubert_tiny._fake_fairseq_dictionary() as dictionary_cls:
        dicts = []
        for d in state["task_state"]["dictionaries"]:
            assert isinstance(d, FairseqObject)
            new = dictionary_cls.__new__(dictionary_cls)
            new.__dict__.update(d.__dict__)
            dicts.append(new)
        torch.save({**state, "task_state": {"dictionaries": dicts}}, path)
    return path


@pytest.mark.parametrize("version, dim", [("v1", 256), ("v2", 64)])
def test_native_loader_matches_fairseq_features(ours, ref, version, dim) -> None:
    wav = _wav(ref)
    got = ours.extract(wav, version)[0]
    assert got.shape == (num_frames(wav.shape[-1]), dim) == ref[version].shape
    assert _rel_err(got, ref[version]) <= REL_TOL


def test_native_loader_matches_fairseq_every_layer(ours, ref) -> None:
    wav = _wav(ref)
    assert ref["layers"].shape[0] == ours.num_layers == 12
    for layer in range(1, 13):
        err = _rel_err(ours.layer_output(wav, layer)[0], ref["layers"][layer - 1])
        assert err <= REL_TOL, f"layer {layer}: relative max diff {err:.2e}"


def test_comparison_fails_for_an_altered_copy(ref, tmp_path) -> None:
    state = load_fairseq_checkpoint(CKPT)
    wav = _wav(ref)
    # Control: the untouched state written back the same way still matches.
    same = ContentEncoder.from_fairseq(_resave(state, tmp_path / "same.pt"))
    assert _rel_err(same.extract(wav, "v2")[0], ref["v2"]) <= REL_TOL

    g = torch.Generator().manual_seed(0)
    w = state["model"]["encoder.layers.5.fc1.weight"]  # layer 6 of 12
    state["model"]["encoder.layers.5.fc1.weight"] = w + 0.05 * torch.randn(w.shape, generator=g)
    altered = ContentEncoder.from_fairseq(_resave(state, tmp_path / "altered.pt"))
    for version in ("v1", "v2"):
        assert _rel_err(altered.extract(wav, version)[0], ref[version]) > 100 * REL_TOL
    assert _rel_err(altered.layer_output(wav, 5)[0], ref["layers"][4]) <= REL_TOL
    assert _rel_err(altered.layer_output(wav, 6)[0], ref["layers"][5]) > 100 * REL_TOL


# -- features.backend=fairseq, without fairseq -------------------------------------------------
def test_fairseq_backend_without_fairseq_names_the_extra(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "fairseq", None)  # `import fairseq` fails, as if absent
    with pytest.raises(RvcLoraError, match=r"pip install -e \.\[fairseq\]") as err:
        load_content_encoder(CKPT, backend="fairseq")
    assert "\n" not in str(err.value)


def test_unknown_backend_is_refused() -> None:
    with pytest.raises(RvcLoraError, match="features.backend"):
        load_content_encoder(CKPT, backend="onnx")


class _Exec:
    """Unpickling this calls ``exec(code)``: a stand-in for a malicious checkpoint entry."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def test_fairseq_backend_checks_the_pickle_before_fairseq(monkeypatch, tmp_path) -> None:
    marker = tmp_path / "pwned.txt"
    state = load_fairseq_checkpoint(CKPT)
    state["cfg"]["common"]["x"] = _Exec(f"open({str(marker)!r}, 'w').write('x')")
    path = _resave(state, tmp_path / "evil.pt")
    # A fake fairseq, so the "fairseq is installed" branch runs; it records any use.
    used: list[str] = []
    fake = types.ModuleType("fairseq")

    def getattr_(name: str):
        if not name.startswith("__"):  # dunder probes (e.g. by inspect) are not uses
            used.append(name)
        raise AttributeError(name)

    fake.__getattr__ = getattr_  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fairseq", fake)

    with pytest.raises(CheckpointError, match="refused to load.*builtins.exec") as err:
        load_content_encoder(path, backend="fairseq")
    assert "\n" not in str(err.value)
    assert not marker.exists()
    assert used == []


def test_fairseq_backend_matches_reference_where_fairseq_is_installed(ref) -> None:
    # Runs only beside fairseq (e.g. `.venv-fairseq`); the default install has no fairseq.
    pytest.importorskip("fairseq")
    enc = load_content_encoder(CKPT, backend="fairseq")
    for version in ("v1", "v2"):
        assert _rel_err(enc.extract(_wav(ref), version)[0], ref[version]) <= REL_TOL
