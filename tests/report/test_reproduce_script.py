"""scripts/reproduce_paper_table.py: the commands it would run (--dry-run runs nothing)."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "reproduce_paper_table.py"
CONFIGS = SCRIPT.parents[1] / "configs"


@pytest.fixture
def driver(monkeypatch):
    for name in ("SEEDS", "PROFILE", "JOBS", "LRS"):
        monkeypatch.delenv(name, raising=False)
    spec = importlib.util.spec_from_file_location("reproduce_paper_table", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def commands(driver, capsys, argv: list[str]) -> list[list[str]]:
    assert driver.main(["--dry-run", *argv]) == 0
    out = capsys.readouterr().out
    return [shlex.split(line[2:]) for line in out.splitlines() if line.startswith("+ ")]


def arg(cmd: list[str], key: str) -> str:
    return next(a for a in cmd if a.startswith(key + "=")).split("=", 1)[1]


def test_default_profile_prepares_once_then_sweeps_every_block_and_reports(
    driver, capsys, tmp_path: Path
) -> None:
    cmds = commands(driver, capsys, ["--out", str(tmp_path / "pt"), "--jobs", "2"])
    prepare, *sweeps, report = cmds
    assert prepare[1:5] == ["-m", "rvc_lora.data.prepare", "-m", "model=tiny_demo"]
    folders = arg(prepare, "data.input_dir").split(",")
    assert len(folders) == 2 * len(driver.VOICES) == 6  # each voice: train and held-out
    assert all(Path(f).is_dir() for f in folders)
    assert len(sweeps) == len(driver.PROFILES["tiny"].blocks)
    cells = set()
    for sweep in sweeps:
        assert sweep[1:4] == ["train.py", "-m", "experiment=paper_table"]
        assert arg(sweep, "seed") == "0,1,2"  # the CPU profile's seeds
        assert {"hydra/launcher=joblib", "hydra.launcher.n_jobs=2"} <= set(sweep)
        assert arg(sweep, "hydra.sweep.dir") == str(tmp_path / "pt" / "runs")
        assert "${voice}/${data.max_seconds}/" in arg(sweep, "hydra.sweep.subdir")
        for v in arg(sweep, "voice").split(","):
            for s in arg(sweep, "data.max_seconds").split(","):
                cells |= {(v, s, x) for x in arg(sweep, "+variant").split(",")}
    assert len(cells) == sum(b.cells for b in driver.PROFILES["tiny"].blocks)
    voices = {c[0] for c in cells}
    assert len(voices) >= 3 and all((CONFIGS / "voice" / f"{v}.yaml").is_file() for v in voices)
    assert {c[1] for c in cells} >= {"15", "30", "60", "all"}
    variants = {c[2] for c in cells}
    assert {"full", "full_frozen_d", "decoder_r8"} <= variants
    assert all((CONFIGS / "variant" / f"{v}.yaml").is_file() for v in variants)
    # the baseline that isolates LoRA sits beside full and LoRA at the same budget
    assert {(v, "all", x) for v in voices for x in ("full", "full_frozen_d", "decoder_r8")} <= cells
    assert report[1:] == ["-m", "rvc_lora.report", str(tmp_path / "pt" / "runs"), "--out",
                          str(tmp_path / "pt")]  # fmt: skip
    assert not (tmp_path / "pt").exists()  # nothing ran
    one = commands(driver, capsys, ["--jobs", "1"])
    assert not any("launcher" in a for cmd in one for a in cmd)


def test_quick_profile_is_smaller_and_cells_can_be_cut(driver, capsys) -> None:
    quick = driver.PROFILES["quick"]
    assert (
        sum(b.cells for b in quick.blocks) * 1
        < sum(b.cells for b in driver.PROFILES["tiny"].blocks) * 3
    )
    cmds = commands(
        driver, capsys,
        ["--profile", "quick", "--voices", "slt", "--sizes", "30", "--variants", "full,decoder_r8",
         "--set", "trainer.max_steps=4", "--cache-dir", "cache_x"],
    )  # fmt: skip
    prepare, sweep, _ = cmds
    assert arg(prepare, "data.input_dir").count(",") == 1  # slt only: train and held-out
    assert arg(prepare, "paths.cache_dir") == arg(sweep, "paths.cache_dir")
    assert Path(arg(sweep, "paths.cache_dir")).is_absolute()
    assert (arg(sweep, "voice"), arg(sweep, "data.max_seconds")) == ("slt", "30")
    assert arg(sweep, "+variant") == "full,decoder_r8" and "trainer.max_steps=4" in sweep
    assert arg(sweep, "seed") == "0"
    with pytest.raises(SystemExit, match="no cell of the profile is left"):
        driver.main(["--dry-run", "--voices", "nobody"])


def test_lr_grid_sweeps_the_rates_over_full_and_rank8(driver, capsys) -> None:
    _, sweep, report = commands(driver, capsys, ["--lrs", "5e-4, 4e-3", "--jobs", "2"])
    assert "+variant=full,decoder_r8,all_r8" in sweep and "train.lr=5e-4,4e-3" in sweep
    assert "voice=slt" in sweep and "seed=0" in sweep
    assert "hydra.sweep.subdir=${hydra:runtime.choices.variant}_lr${train.lr}_seed${seed}" in sweep
    runs = arg(sweep, "hydra.sweep.dir")
    assert Path(runs).parts[-3:] == ("outputs", "lr_grid", "runs") and report[3] == runs
    with pytest.raises(SystemExit, match="lrs: expected comma-separated positive numbers"):
        driver.main(["--dry-run", "--lrs", "fast"])


def test_seeds_and_full_profile_from_environment(driver, capsys, monkeypatch) -> None:
    monkeypatch.setenv("SEEDS", "0, 1")
    monkeypatch.setenv("PROFILE", "full")
    out = commands(driver, capsys, [])
    prepare, sweep = out[0], out[1]
    assert "model=v2_40k" in prepare and "features=default" in prepare
    assert "seed=0,1" in sweep
    assert {"model=v2_40k", "features=default", "trainer=gpu"} <= set(sweep)
    assert "model.pretrained_g=models/pretrained_v2/f0G40k.pth" in sweep
    assert not any("launcher" in a for a in sweep)  # one GPU: one job at a time


def test_eval_runs_per_job_with_the_flag_and_not_twice(driver, tmp_path, capsys) -> None:
    out = capsys.readouterr
    driver.main(["--dry-run"])
    assert " eval.py " not in out().out  # the CPU profiles score on held-out data in training
    driver.main(["--dry-run", "--eval"])
    assert "eval.py run_dir=<job>  # for every job dir under" in out().out
    jobs = [tmp_path / "a", tmp_path / "b"]
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


def test_bad_seeds_and_missing_voice_configs_fail_in_one_line(driver, tmp_path) -> None:
    with pytest.raises(SystemExit, match="seeds: expected comma-separated integers"):
        driver.main(["--dry-run", "--seeds", "zero"])
    driver.ROOT = tmp_path
    with pytest.raises(SystemExit, match=r"voice 'slt': no configs/voice/slt.yaml"):
        driver.voice_folders("slt")


def test_slurm_launcher_submits_every_cell_and_scores_through_it(driver, capsys, tmp_path):
    cmds = commands(
        driver, capsys,
        ["--profile", "full", "--launcher", "slurm", "--set", "hydra.launcher.partition=gpu",
         "--out", str(tmp_path / "pt")],
    )  # fmt: skip
    prepare, *sweeps, scores, report = cmds
    assert "hydra/launcher" not in " ".join(prepare)  # prepared here, once, before any job
    for sweep in sweeps:
        assert "hydra/launcher=slurm" in sweep and "hydra.launcher.partition=gpu" in sweep
        assert not any(a.startswith("hydra.launcher.n_jobs") for a in sweep)
        assert arg(sweep, "hydra.sweep.dir") == str(tmp_path / "pt" / "runs")  # as with joblib
    assert report[1:3] == ["-m", "rvc_lora.report"]
    assert scores[1:6] == ["eval.py", "-m", "hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                           "run_dir=<jobs>"]  # fmt: skip
    jobs = [tmp_path / "a,b", tmp_path / "c"]
    for job in jobs:
        job.mkdir()
        (job / "metrics.json").write_text("{}")
    cmd = driver.eval_sweep_command(jobs, "py", "slurm", tmp_path, ["hydra.launcher.qos=high",
                                                                    "trainer=gpu"])  # fmt: skip
    assert cmd[:5] == ["py", "eval.py", "-m", "hydra/launcher=slurm", "hydra.launcher.qos=high"]
    from hydra.core.override_parser.overrides_parser import OverridesParser

    (override,) = OverridesParser.create().parse_overrides([f"run_dir={arg(cmd, 'run_dir')}"])
    assert [v.text for v in override.value().list] == [str(j) for j in jobs]  # a comma inside
    (jobs[0] / "eval.json").write_text("{}")
    (jobs[1] / "eval.json").write_text("{}")
    assert driver.eval_sweep_command(jobs, "py", "slurm", tmp_path) is None
    with pytest.raises(SystemExit):
        driver.main(["--dry-run", "--launcher", "pbs"])
