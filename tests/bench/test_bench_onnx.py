"""bench/bench_onnx.py: what it times and how its lines read (`make bench` keeps them for the
README's Benchmarks block)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "bench_onnx.py"


def test_prints_the_rtf_of_each_backend_their_ratio_and_difference(monkeypatch, capsys):
    spec = importlib.util.spec_from_file_location("bench_onnx", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)
    module.main(["--preset", "tiny", "--seconds", "0.5", "--repeats", "1", "--threads", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "tiny synthesis, 0.5 s of audio (50 frames), 1 CPU threads, median of 1"
    assert re.fullmatch(r"export: \d+\.\d s, \d+\.\d MB \(fp32, opset 17\)", lines[1])
    names = ["torch", "torch, module decoder", "torch, weight norm folded", "onnxruntime"]
    for name, line in zip(names, lines[2:6]):
        assert re.fullmatch(rf"{re.escape(name)} +RTF \d+\.\d{{3}}", line)
    assert re.fullmatch(r"onnxruntime / torch: \d+\.\d\dx the time", lines[6])
    err = re.fullmatch(r"max \|onnxruntime - torch\| / peak: (\S+)", lines[7])
    assert err and float(err.group(1)) <= 1e-4
    assert len(lines) == 8
