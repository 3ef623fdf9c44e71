"""bench/bench_f0.py: which methods it times, with which networks, and how its lines read.

`make bench` keeps the printed lines for the README's Benchmarks block, so the format is part of
the output.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_f0.py"
LINE = r"{} +\d+\.\d{{3}} s  ->  +\d+\.\d{{2}} s per minute of audio  \(voiced \d+%\)"


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("bench_f0", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    return module


def test_fcpe_runs_the_full_size_network_and_prints_its_lines(bench, capsys):
    from rvc_lora.features.fcpe import FCPEConfig, FCPENet

    n_params = sum(p.numel() for p in FCPENet(FCPEConfig()).parameters())
    bench.main(["--seconds", "1", "--repeats", "1", "--methods", "pm,fcpe"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"FCPE (random weights): {n_params:,} parameters"
    assert n_params > 10_000_000  # fcpe_c_v001.pt's sizes, not a tiny preset
    assert lines[1] == "1 s of audio, 2 CPU threads, median of 1"
    assert re.fullmatch(LINE.format("pm"), lines[2])
    assert re.fullmatch(LINE.format("fcpe"), lines[3])
    assert len(lines) == 4


def test_default_run_times_every_method_and_hands_each_network_over(bench, capsys, monkeypatch):
    from rvc_lora.features.fcpe import FCPEConfig, FCPENet

    seen = {}

    def fake_f0(x, method, rmvpe=None, fcpe=None):
        seen[method] = (rmvpe, fcpe)
        return np.full(len(x) // 160, 100.0)

    fake_rmvpe = SimpleNamespace(infer_from_audio=lambda x: None)
    monkeypatch.setattr(bench, "compute_f0", fake_f0)
    monkeypatch.setattr(bench, "E2E", lambda: torch.nn.Linear(2, 3))  # 9 parameters
    monkeypatch.setattr(bench, "RMVPE", lambda net: fake_rmvpe)
    tiny = FCPEConfig(hidden=8, n_layers=1)
    monkeypatch.setattr(bench, "FCPENet", lambda config: FCPENet(tiny))

    bench.main(["--seconds", "0.5", "--repeats", "2"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "RMVPE (random weights): 9 parameters"
    assert lines[1].startswith("FCPE (random weights): ")
    assert lines[2] == "0.5 s of audio, 2 CPU threads, median of 2"
    for line, method in zip(lines[3:], ["pm", "harvest", "dio", "rmvpe", "fcpe"], strict=True):
        assert re.fullmatch(LINE.format(method), line), line
    assert seen["rmvpe"][0] is fake_rmvpe and isinstance(seen["fcpe"][1], bench.FCPE)
