"""scripts/reproduce_paper_table.py: the commands it would run (--dry-run runs nothing)."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reproduce_paper_table.py"


@pytest.fixture
def driver():
    spec = importlib.util.spec_from_file_location("reproduce_paper_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def commands(driver, capsys, argv: list[str]) -> list[list[str]]:
    assert driver.main(["--dry-run", *argv]) == 0
    out = capsys.readouterr().out
    lines = [line[2:] for line in out.splitlines() if line.startswith("+ ")]
    # The eval step is one placeholder line in a dry run (there are no job dirs yet).
    assert [line for line in lines if " eval.py " in line] == (
        [f"{shlex.quote(sys.executable)} eval.py run_dir=<job>  # for every job dir under "
         f"{driver_runs(out)}"]
        if (SCRIPT.parents[1] / "eval.py").is_file()
        else []
    )  # fmt: skip
    return [shlex.split(line) for line in lines if " eval.py " not in line]


def driver_runs(out: str) -> str:
    first = next(line for line in out.splitlines() if line.startswith("paper table:"))
    return first.split("out=")[1] + "/runs"


def test_dry_run_prints_sweeps_and_report(driver, capsys, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SEEDS", raising=False)
    monkeypatch.delenv("PROFILE", raising=False)
    full, decoder, every, report = commands(driver, capsys, ["--out", str(tmp_path / "pt")])
    for preset, lora in (("decoder", decoder), ("all", every)):
        assert lora[:4] == [sys.executable, "train.py", "-m", "experiment=paper_table"]
        assert {f"lora={preset}", "lora.rank=4,8,16,32", "seed=0"} <= set(lora)
        assert f"hydra.sweep.dir={tmp_path / 'pt' / 'runs' / 'lora'}" in lora
        assert "hydra.sweep.subdir=${lora.preset}_r${lora.rank}_seed${seed}" in lora
    assert {"lora=full", "seed=0", f"hydra.sweep.dir={tmp_path / 'pt' / 'runs' / 'full'}"} <= set(
        full
    )
    # tiny on CPU
    assert not any(a.startswith(("model=", "trainer=")) for a in decoder + every + full)
    assert report[1:] == [
        "-m",
        "rvc_lora.report",
        str(tmp_path / "pt" / "runs"),
        "--out",
        str(tmp_path / "pt"),
    ]
    assert not (tmp_path / "pt").exists()  # nothing ran


def test_seeds_and_full_profile_from_environment(driver, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SEEDS", "0, 1")
    monkeypatch.setenv("PROFILE", "full")
    *sweeps, _ = commands(driver, capsys, [])
    assert len(sweeps) == 3
    for cmd in sweeps:
        assert "seed=0,1" in cmd
        assert {"model=v2_40k", "features=default", "trainer=gpu"} <= set(cmd)
        assert "model.pretrained_g=models/pretrained_v2/f0G40k.pth" in cmd


def test_eval_hook_runs_per_job_only_when_eval_py_exists(driver, tmp_path, capsys) -> None:
    jobs = [tmp_path / "a", tmp_path / "b"]
    driver.ROOT = tmp_path  # a checkout without eval.py
    assert driver.eval_commands(jobs, "py") == []
    driver.main(["--dry-run"])
    assert "note: no eval.py at the repo root; skipping evaluation" in capsys.readouterr().out
    (tmp_path / "eval.py").write_text("")
    assert driver.eval_commands(jobs, "py") == [
        ["py", "eval.py", f"run_dir={tmp_path / 'a'}"],
        ["py", "eval.py", f"run_dir={tmp_path / 'b'}"],
    ]
    driver.main(["--dry-run"])
    assert "eval.py run_dir=<job>  # for every job dir under" in capsys.readouterr().out


def test_bad_seeds_fail_in_one_line(driver) -> None:
    with pytest.raises(SystemExit, match="seeds: expected comma-separated integers"):
        driver.main(["--dry-run", "--seeds", "zero"])


def test_parallel_runner_runs_everything_and_stops_on_a_failure(driver, tmp_path) -> None:
    marks = [tmp_path / f"m{i}" for i in range(3)]
    cmds = [[sys.executable, "-c", f"open({str(m)!r}, 'w').write('x')"] for m in marks]
    driver._run_all(cmds, jobs=2, dry_run=False)
    assert all(m.exists() for m in marks)
    with pytest.raises(SystemExit, match="failed"):
        driver._run_all([[sys.executable, "-c", "raise SystemExit(3)"]], jobs=2, dry_run=False)
