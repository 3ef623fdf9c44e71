"""bench/bench_stream.py and bench/bench_mixed.py: what they time and how their lines read
(`make bench` keeps them for the README's Benchmarks block)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _load(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))  # the scripts import their neighbours
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_stream_bench_prints_latency_and_compute_per_block_size(monkeypatch, capsys):
    bench = _load("bench_stream", monkeypatch)
    bench.main(["--models", "tiny", "--seconds", "1", "--threads", "1", "--blocks", "0.1,0.25"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("1 s of audio pushed block by block, 2 s context")
    rows = [
        re.fullmatch(r"tiny +(\d+)ms +(\d+)ms +[\d.]+ms +[\d.]+ms +([\d.]+)  (yes|no)", x)
        for x in lines[2:]
    ]
    assert all(rows) and len(rows) == 2
    # latency = block + 50 ms crossfade + 10 ms search
    assert [(int(r[1]), int(r[2])) for r in rows] == [(100, 160), (250, 310)]


def test_mixed_bench_prints_each_way_and_the_ratio(monkeypatch, capsys):
    bench = _load("bench_mixed", monkeypatch)
    bench.main(["--preset", "tiny", "--requests", "3", "--seconds", "0.3", "--repeats", "1",
                "--threads", "1"])  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "tiny, 3 requests x 0.3 s over 3 rank-8 voices, 1 CPU threads, median of 1"
    for name, line in zip(["one by one", "one by one, module decoder", "mixed batch"], lines[1:4]):
        assert re.fullmatch(rf"{re.escape(name)} +[\d.]+ s of audio per s", line)
    assert re.fullmatch(r"mixed / one by one: [\d.]+x the throughput", lines[4])
    auto = re.fullmatch(
        r"convert_batch auto on cpu: voices, ([\d.]+) s of audio per s \(([\d.]+)x one by one\)",
        lines[5],
    )
    assert auto and auto[2] == "1.00"  # on a CPU, auto is one by one
