"""Paper table: collect fake job dirs -> table.csv / table.md (golden), aggregation, plots, CLI."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest

from rvc_lora.report import ReportError, build_table, collect, read_csv, write_report
from rvc_lora.report.__main__ import main
from rvc_lora.report.plots import PLOTS
from rvc_lora.report.table import MISSING, means
from tests.conftest import UPDATE_GOLDEN
from tests.report.jobs import EVAL, GENERATOR, paper_jobs, write_job

GOLDEN = Path(__file__).parent.parent / "golden"


@pytest.fixture
def report(tmp_path: Path) -> Path:
    paper_jobs(tmp_path / "jobs")
    out = tmp_path / "out"
    write_report(collect([tmp_path / "jobs"]), out)
    return out


@pytest.mark.parametrize("name", ["table.md", "table.csv"])
def test_report_matches_golden(report: Path, name: str) -> None:
    golden = GOLDEN / f"report_{name}"
    text = (report / name).read_text(encoding="utf-8")
    if UPDATE_GOLDEN:
        golden.write_text(text, encoding="utf-8")
    assert text == golden.read_text(encoding="utf-8")


def test_rows_are_sorted_full_first_then_preset_then_rank(tmp_path: Path) -> None:
    for name, preset, rank in [("c", "all", 4), ("a", "decoder", 16), ("b", "decoder", 4)]:
        write_job(tmp_path, name, preset=preset, rank=rank)
    write_job(tmp_path, "z", mode="full", trainable_g=GENERATOR, artifact_kb=2902.7)
    variants = [r["variant"] for r in means(build_table(collect([tmp_path])))]
    assert variants == ["full", "lora r4 decoder", "lora r16 decoder", "lora r4 all"]


def test_two_seeds_aggregate_to_mean_interval_and_sample_std(tmp_path: Path) -> None:
    write_job(tmp_path, "s0", seed=0, step_time_s=0.10, eval_metrics={**EVAL, "mcd_db": 6.0})
    write_job(tmp_path, "s1", seed=1, step_time_s=0.14, eval_metrics={**EVAL, "mcd_db": 7.0})
    records = build_table(collect([tmp_path]))
    assert [r["kind"] for r in records] == ["mean", "run", "run"]
    mean = records[0]
    assert mean["seed"] == "0 1" and mean["n_runs"] == 2
    assert (mean["voice"], mean["data_size"]) == ("pooled", "all")  # an older job dir's axes
    assert mean["step_time_s"] == pytest.approx(0.12)
    assert mean["step_time_s_std"] == pytest.approx(statistics.stdev([0.10, 0.14]))
    # 95% t interval, n = 2: mean ± t(0.975, 1) s / sqrt(2) = 0.12 ± 12.7062 x 0.02.
    assert mean["step_time_s_lo"] == pytest.approx(0.12 - 12.7062047 * 0.02, rel=1e-6)
    assert mean["step_time_s_hi"] == pytest.approx(0.12 + 12.7062047 * 0.02, rel=1e-6)
    assert mean["mcd_db"] == pytest.approx(6.5)  # eval.json's, no held-out scores
    assert mean["mcd_db_std"] == pytest.approx(math.sqrt(0.5))
    assert mean["trainable_params"] == 72_192
    out = tmp_path / "out"
    write_report(collect([tmp_path]), out)
    md = (out / "table.md").read_text(encoding="utf-8")
    row = next(line for line in md.splitlines() if "| lora r8 decoder |" in line)
    assert "| 2 |" in row  # runs
    assert "| 0.120 [-0.134, 0.374] |" in row  # step time
    assert "| 6.50 [0.15, 12.85] |" in row  # MCD: 6.5 ± 12.7062 x 0.5
    csv_rows = read_csv(out / "table.csv")
    assert [r["seed"] for r in csv_rows] == ["0 1", "0", "1"]
    assert csv_rows[1]["mcd_db"] == 6.0 and csv_rows[1]["mcd_db_std"] is None
    assert csv_rows[1]["mcd_db_lo"] is None and csv_rows[0]["mcd_db_lo"] == pytest.approx(
        0.147, abs=1e-3
    )


def test_jobs_differing_in_more_than_the_seed_are_not_averaged(tmp_path: Path) -> None:
    for name, seed, lr in [("a", 0, 5e-4), ("b", 1, 5e-4), ("c", 0, 1e-3)]:
        log_dir = {"logger": {"csv": {"save_dir": f"/runs/{name}"}}}  # differs, names the job
        write_job(tmp_path, name, seed=seed, config={"train": {"lr": lr}, **log_dir})
    write_job(tmp_path, "f", mode="full", trainable_g=GENERATOR, config={"train": {"lr": 1e-3}})
    table = means(build_table(collect([tmp_path])))
    assert [(r["variant"], r["n_runs"]) for r in table] == [
        ("full", 1),
        ("lora r8 decoder lr=0.0005", 2),
        ("lora r8 decoder lr=0.001", 1),
    ]


def test_missing_eval_shows_dash(tmp_path: Path) -> None:
    write_job(tmp_path, "noeval", eval_metrics=None)
    write_job(tmp_path, "nan", preset="all", eval_metrics={"mcd_db": float("nan"), "pesq": 2.5})
    out = tmp_path / "out"
    write_report(collect([tmp_path]), out)
    lines = (out / "table.md").read_text(encoding="utf-8").splitlines()
    noeval = next(line for line in lines if "| lora r8 decoder |" in line)
    cells = [c.strip() for c in noeval.strip("|").split("|")]
    assert cells[-5:-1] == [MISSING] * 4  # MCD, F0 RMSE, SECS, mel L1
    assert cells[-1] == MISSING  # early stop: an older run has no summary
    nan = next(line for line in lines if "| lora r8 all |" in line)
    cells = [c.strip() for c in nan.strip("|").split("|")]
    assert cells[-5:-1] == [MISSING] * 4
    table = read_csv(out / "table.csv")
    assert table[1]["mcd_db"] is None and table[3]["pesq"] == 2.5  # eval.json extras kept


def test_best_step_and_no_wall_time_without_the_runs_clock(report: Path) -> None:
    full, lora8, lora16 = (r for r in read_csv(report / "table.csv") if r["kind"] == "run")
    assert full["best_step"] == 200  # lowest val mel after 4 x 50 steps (logged at step 199)
    assert lora8["best_step"] == 300 and lora16["best_step"] == 250
    # The fixture logs no time/wall_s: not measured, never best step x median step time.
    assert full["wall_to_best_s"] is None and full["wall_to_best_source"] is None


def test_logged_wall_time_is_preferred(tmp_path: Path) -> None:
    run = write_job(tmp_path, "walled", curve=(3.0, 2.0, 2.5))
    log = run / "csv" / "metrics.csv"
    lines = log.read_text().splitlines()
    lines[0] += ",time/wall_s"
    lines[1:] = [f"{line},{(i + 1) * 7.5}" for i, line in enumerate(lines[1:])]
    log.write_text("\n".join(lines) + "\n")
    (row,) = collect([tmp_path])
    assert row.best_step == 100
    assert row.wall_to_best_s == 30.0  # the last row logged at step 99
    assert row.wall_to_best_source == "the run's clock at that validation"


def test_storage_and_share_of_generator(report: Path) -> None:
    full, lora8, _ = (r for r in read_csv(report / "table.csv") if r["kind"] == "mean")
    assert full["storage_10_mb"] == pytest.approx(29027 / 1024, rel=1e-5)
    assert lora8["base_kb"] == 2902.7  # the full run's generator.pth
    assert lora8["storage_10_mb"] == pytest.approx((2902.7 + 1537) / 1024, rel=1e-5)
    assert lora8["pct_g"] == pytest.approx(100 * 72_192 / GENERATOR, rel=1e-5)


def test_base_size_falls_back_to_fp16_parameter_count(tmp_path: Path) -> None:
    write_job(tmp_path, "alone")
    (row,) = collect([tmp_path])
    assert row.base_kb == pytest.approx(row.total_g * 2 / 1024)
    assert row.base_source == "parameter count x 2 bytes (fp16)"
    (tmp_path / "alone" / "base.pth").write_bytes(b"\0" * 2048)
    (row,) = collect([tmp_path])
    assert (row.base_kb, row.base_source) == (2.0, "base.pth of the run")


def test_plots_are_written(report: Path) -> None:
    assert len(PLOTS) == 5
    for name in PLOTS:
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 15_000, name
    assert not list(report.glob(".*.tmp"))  # atomic writes left no temp files


def test_curves_csv(report: Path) -> None:
    curves = read_csv(report / "curves.csv")
    assert len(curves) == 18
    assert curves[0] == {
        "voice": None,  # an older job dir: no voice, all the data, no val/mcd column
        "data_size": "all",
        "variant": "full",
        "model": "tiny",
        "seed": "0",
        "step": 50.0,
        "val_mel": 3.1,
        "val_mcd": None,
    }


def test_cli_writes_report_and_fails_in_one_line(tmp_path: Path, capsys) -> None:
    paper_jobs(tmp_path / "jobs")
    assert main([str(tmp_path / "jobs"), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "table.md").is_file()
    assert "3 jobs" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no job dirs") and err.count("\n") == 1
    assert not (tmp_path / "out2").exists()


def test_unreadable_job_file_names_it(tmp_path: Path) -> None:
    run = write_job(tmp_path, "broken")
    (run / "metrics.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"broken/metrics.json: unreadable JSON"):
        collect([tmp_path])


def test_eval_json_values_are_read(report: Path) -> None:
    lora8 = read_csv(report / "table.csv")[3]
    assert lora8["variant"] == "lora r8 decoder" and lora8["kind"] == "run"
    # Without held-out scores in metrics.json, the quality columns fall back to eval.json.
    assert (lora8["mcd_db"], lora8["f0_rmse_cents"]) == (6.3, 40.0)
    assert (lora8["secs"], lora8["mel_l1"]) == (0.78, 0.7)  # secs_target, log_mel_l1
    extras = ("f0_corr", "vuv_error", "pesq", "secs_source")
    assert {k: lora8[k] for k in extras} == {k: EVAL[k] if k != "pesq" else 1.7 for k in extras}
    assert json.loads((report.parent / "jobs" / "full" / "eval.json").read_text()) == EVAL
