"""scripts/fcpe_crosscheck.py: how it counts agreement, and (slow) our FCPE against torchfcpe's.

The slow test pip-installs torchfcpe 0.0.4 from PyPI (``--no-deps``, into a temporary folder) and
needs ``models/fcpe_c_v001.pt`` (``make install`` fetches it).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "fcpe_crosscheck.py"
REFERENCE_PACKAGES = {"torchaudio", "torchfcpe", "einops", "local_attention"}


@pytest.fixture
def xc(monkeypatch):
    spec = importlib.util.spec_from_file_location("fcpe_crosscheck", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def reference_modules(monkeypatch):
    """Take the stub torchaudio and torchfcpe's packages out of ``sys.modules`` afterwards."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    before = dict(sys.modules)
    yield
    for name in list(sys.modules):
        if name.split(".")[0] in REFERENCE_PACKAGES and sys.modules[name] is not before.get(name):
            del sys.modules[name]
            if name in before:
                sys.modules[name] = before[name]


def _glide(frames: int = 100) -> np.ndarray:
    return 150.0 * 2 ** (np.arange(frames) / frames)


def test_a_10_cent_offset_on_2_of_100_frames_leaves_98_percent_within_5_cents(xc):
    ref = _glide()
    ours = ref.copy()
    ours[[10, 70]] *= 2 ** (10 / 1200)
    ours[40] *= 2 ** (4.9 / 1200)  # inside the limit
    s = xc.compare_tracks(ref, ours)
    assert (s["frames"], s["voiced_ref"], s["both_voiced"], s["within"]) == (100, 100, 100, 98)
    assert s["max_cents"] == pytest.approx(10.0, abs=1e-9)
    assert xc.rates(s) == (pytest.approx(0.98), 1.0)
    assert not xc.passes(s)


def test_voicing_flips_count_against_agreement_and_leave_the_cents_alone(xc):
    ref = _glide()
    ours = ref.copy()
    ref[:5] = 0.0  # torchfcpe unvoiced, ours voiced
    ours[50] = 0.0  # ours unvoiced
    ours[60] *= 2 ** (100 / 1200)  # far off, but voiced on both sides
    s = xc.compare_tracks(ref, ours)
    assert (s["voiced_ref"], s["both_voiced"], s["within"], s["vuv_agree"]) == (95, 94, 93, 94)
    assert s["max_cents"] == pytest.approx(100.0, abs=1e-9)
    assert xc.rates(s)[1] == pytest.approx(0.94)


def test_merge_sums_counts_and_keeps_the_largest_difference(xc):
    a = {**xc.compare_tracks(_glide(), _glide()), "ref_s": 1.0}
    ours = _glide(50)
    ours[0] *= 2 ** (3 / 1200)
    b = {**xc.compare_tracks(_glide(50), ours), "ref_s": 2.0}
    m = xc.merge([a, b])
    assert (m["frames"], m["within"], m["ref_s"]) == (150, 150, 3.0)
    assert m["max_cents"] == pytest.approx(3.0, abs=1e-9)
    assert xc.passes(m)


def test_nothing_voiced_fails_and_unequal_lengths_are_refused(xc):
    silent = xc.compare_tracks(np.zeros(10), np.zeros(10))
    assert silent["vuv_agree"] == 10 and silent["max_cents"] == 0.0
    assert not xc.passes(silent)  # no pitch compared: no evidence of agreement
    with pytest.raises(ValueError, match="differ in length"):
        xc.compare_tracks(np.zeros(10), np.zeros(11))


def test_install_reference_words_a_pip_failure_and_skips_pip_once_installed(
    xc, tmp_path, monkeypatch
):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        err = "Looking in indexes: https://pypi.org/simple\nERROR: No matching distribution found for torchfcpe==0.0.4\n"
        return subprocess.CompletedProcess(cmd, 1, "", err)

    monkeypatch.setattr(xc.subprocess, "run", fake_run)
    with pytest.raises(RuntimeError, match=r"\(needs PyPI\): ERROR: No matching distribution"):
        xc.install_reference(tmp_path)
    assert calls[0][1:4] == ["-m", "pip", "install"]
    assert {"--no-deps", "torchfcpe==0.0.4", "local-attention<=1.9"} <= set(calls[0])
    for name in ("torchfcpe", "einops", "local_attention"):
        (tmp_path / name).mkdir()
    assert xc.install_reference(tmp_path) == tmp_path and len(calls) == 1


def test_the_torchaudio_stub_refuses_to_resample(xc, reference_modules):
    xc.stub_torchaudio()
    import torchaudio

    with pytest.raises(RuntimeError, match="16 kHz"):
        torchaudio.transforms.Resample(44100, 16000)


@pytest.mark.slow
def test_our_fcpe_matches_torchfcpe_on_demo_files(xc, tmp_path, reference_modules):
    from rvc_lora.audio import load_audio
    from rvc_lora.features.fcpe import load_fcpe

    weights = ROOT / "models" / "fcpe_c_v001.pt"
    ours = load_fcpe(weights)  # a missing file names `rvc-lora download fcpe`
    try:
        target = xc.install_reference(tmp_path / "reference")
    except RuntimeError as exc:
        pytest.fail(f"{exc} (CI has registry access; this test needs it)")
    ref, asset = xc.spawn_reference(target)
    assert xc.sha256(asset) == xc.sha256(weights)

    files = sorted((ROOT / "data" / "demo" / "voices").glob("*/eval/*.flac"))[::6]  # all 3 voices
    assert len(files) == 4
    stats = []
    for path in files:
        x, _ = load_audio(path, 16000)
        stats.append(xc.compare_tracks(xc.reference_f0(ref, x), ours.infer(x)))
    s = xc.merge(stats)
    within, vuv = xc.rates(s)
    assert s["both_voiced"] > 0.5 * s["frames"], s
    assert within >= 0.99 and vuv >= 0.99, s
