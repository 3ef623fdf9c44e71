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


def test_dry_run_prints_one_sweep_over_every_variant_and_the_report(
    driver, capsys, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SEEDS", raising=False)
    monkeypatch.delenv("PROFILE", raising=False)
    monkeypatch.delenv("JOBS", raising=False)
    monkeypatch.delenv("LRS", raising=False)
    sweep, report = commands(driver, capsys, ["--out", str(tmp_path / "pt"), "--jobs", "2"])
    assert sweep[:4] == [sys.executable, "train.py", "-m", "experiment=paper_table"]
    variants = next(a for a in sweep if a.startswith("+variant=")).split("=")[1].split(",")
    assert variants[0] == "full" and len(variants) == 9
    assert {f"{p}_r{r}" for p in ("decoder", "all") for r in (4, 8, 16, 32)} <= set(variants)
    for name in variants:  # every variant is a config file
        assert (SCRIPT.parents[1] / "configs" / "variant" / f"{name}.yaml").is_file()
    assert {"seed=0", f"hydra.sweep.dir={tmp_path / 'pt' / 'runs'}"} <= set(sweep)
    assert "hydra.sweep.subdir=${hydra:runtime.choices.variant}_seed${seed}" in sweep
    assert {"hydra/launcher=joblib", "hydra.launcher.n_jobs=2"} <= set(sweep)
    assert not any(a.startswith(("model=", "trainer=")) for a in sweep)  # tiny on CPU
    assert report[1:] == [
        "-m",
        "rvc_lora.report",
        str(tmp_path / "pt" / "runs"),
        "--out",
        str(tmp_path / "pt"),
    ]
    assert not (tmp_path / "pt").exists()  # nothing ran
    sweep, _ = commands(driver, capsys, ["--jobs", "1"])
    assert not any("launcher" in a for a in sweep)


def test_lr_grid_sweeps_the_rates_over_full_and_rank8(driver, capsys, monkeypatch) -> None:
    monkeypatch.delenv("LRS", raising=False)
    sweep, report = commands(driver, capsys, ["--lrs", "5e-4, 4e-3", "--jobs", "2"])
    assert "+variant=full,decoder_r8,all_r8" in sweep and "train.lr=5e-4,4e-3" in sweep
    assert "hydra.sweep.subdir=${hydra:runtime.choices.variant}_lr${train.lr}_seed${seed}" in sweep
    runs = next(a for a in sweep if a.startswith("hydra.sweep.dir=")).split("=", 1)[1]
    assert Path(runs).parts[-3:] == ("outputs", "lr_grid", "runs") and report[3] == runs
    with pytest.raises(SystemExit, match="lrs: expected comma-separated positive numbers"):
        driver.main(["--dry-run", "--lrs", "fast"])


def test_seeds_and_full_profile_from_environment(driver, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SEEDS", "0, 1")
    monkeypatch.setenv("PROFILE", "full")
    sweep, _ = commands(driver, capsys, [])
    assert "seed=0,1" in sweep
    assert {"model=v2_40k", "features=default", "trainer=gpu"} <= set(sweep)
    assert "model.pretrained_g=models/pretrained_v2/f0G40k.pth" in sweep
    assert not any("launcher" in a for a in sweep)  # one GPU: one job at a time


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
    for job in jobs:  # a job scored after it trained is not scored again
        job.mkdir()
        (job / "metrics.json").write_text("{}")
    (jobs[0] / "eval.json").write_text("{}")
    assert driver.eval_commands(jobs, "py") == [["py", "eval.py", f"run_dir={tmp_path / 'b'}"]]


def test_evals_run_side_by_side_and_a_failure_names_its_command(driver, tmp_path, capsys):
    driver.ROOT = tmp_path
    marks = [tmp_path / f"done{i}" for i in range(3)]
    ok = [[sys.executable, "-c", f"open({str(m)!r}, 'w'); print('scored {i}')"] for i, m in
          enumerate(marks)]  # fmt: skip
    driver.run_side_by_side(ok, 2, None)
    out = capsys.readouterr().out
    assert all(m.is_file() for m in marks)
    assert out.index("scored 0") < out.index("scored 1") < out.index("scored 2")  # in order
    bad = [sys.executable, "-c", "import sys; sys.exit('no eval for you')"]
    with pytest.raises(SystemExit, match=r"failed \(exit 1\): .* -c"):
        driver.run_side_by_side([ok[0], bad], 2, None)
    assert "no eval for you" in capsys.readouterr().err


def test_bad_seeds_fail_in_one_line(driver) -> None:
    with pytest.raises(SystemExit, match="seeds: expected comma-separated integers"):
        driver.main(["--dry-run", "--seeds", "zero"])
