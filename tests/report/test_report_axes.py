"""Issue-18 axes of the paper table: voice, data size, D policy; held-out scores, early stops,
pooled cells with 95% t intervals, sorting, curves, plots."""

from __future__ import annotations

import math
import statistics
from pathlib import Path

import pytest

from rvc_lora.report import build_table, collect, read_csv, write_report
from rvc_lora.report.collect import EARLY_STOP_SOURCE, read_job
from rvc_lora.report.plots import (
    PLOTS,
    README_PLOTS,
    overtraining_figure,
    quality_vs_data_size_figure,
    quality_vs_wall_figure,
)
from rvc_lora.report.table import (
    POOLED,
    cell,
    cell_means,
    curve_records,
    markdown_table,
    means,
    voice_table,
)
from tests.report.jobs import GENERATOR, axes_jobs, write_job

T_975 = {1: 12.706204736, 3: 3.182446305}  # Student t quantiles (0.975; df)
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def axes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("axes")
    axes_jobs(root / "jobs")
    return root / "jobs"


@pytest.fixture(scope="module")
def records(axes: Path) -> list[dict]:
    return build_table(collect([axes]))


def _half(values: list[float]) -> float:
    return T_975[len(values) - 1] * statistics.stdev(values) / math.sqrt(len(values))


def test_job_reads_voice_size_policy_heldout_memory_and_early_stop(axes: Path) -> None:
    row = read_job(axes / "slt_15.0_1_full_(D_frozen)")
    assert (row.voice, row.d_policy, row.max_seconds, row.data_s) == ("slt", "frozen", 15.0, 14.8)
    assert (row.data_size, row.variant) == ("15 s", "full (D frozen)")
    # Held-out scores of metrics.json win over eval.json (this job has none anyway).
    assert row.heldout == {"mcd_db": 6.2 + 0.5 + 0.4 + 0.2, "f0_rmse_cents": 41.0,
                           "secs": 0.8, "mel_l1": 0.7}  # fmt: skip
    assert row.heldout_items == "test"
    assert row.train_memory_mb == 201.0
    # Best step and its time from the early-stop summary, not the val mel curve (best at 250)
    # nor the CSV clock at step 200 (20 s).
    assert (row.best_step, row.stopped_step) == (200, 200)
    assert (row.wall_to_best_s, row.wall_to_best_source) == (22.0, EARLY_STOP_SOURCE)
    assert row.mcd_curve == [(50, 9.0), (100, 8.0), (150, 7.0), (200, 6.5), (250, 6.6), (300, 6.7)]
    seed0 = read_job(axes / "bdl_None_0_lora_r8_decoder")
    assert (seed0.data_size, seed0.stopped_step, seed0.early_stop) == ("all", None, True)


def test_heldout_scores_win_over_eval_json(tmp_path: Path) -> None:
    heldout = {"mcd_db": 5.0, "f0_rmse_cents": 30.0, "secs": 0.9, "mel_l1": 0.5, "items": "all"}
    run = write_job(tmp_path, "both", heldout=heldout, eval_metrics={"mcd_db": 7.0, "pesq": 2.0})
    row = read_job(run)
    assert row.heldout == {k: v for k, v in heldout.items() if k != "items"}
    assert (row.heldout_items, row.eval["pesq"]) == ("all", 2.0)


def test_d_policy_from_config_else_the_modes_default(tmp_path: Path) -> None:
    frozen = write_job(tmp_path, "f", mode="full", config={"discriminator": {"policy": "frozen"}})
    trained = write_job(tmp_path, "t", mode="full")
    lora = write_job(tmp_path, "l")
    assert read_job(frozen).variant == "full (D frozen)"
    assert (read_job(trained).d_policy, read_job(trained).variant) == ("trained", "full")
    assert read_job(lora).d_policy == "frozen"


def test_mcd_checkpoint_monitor_picks_the_best_step_by_mcd(tmp_path: Path) -> None:
    run = write_job(tmp_path, "m", curve=(3.0, 2.0, 2.5), mcd_curve=(9.0, 8.0, 7.5))
    metrics = run / "metrics.json"
    metrics.write_text(
        metrics.read_text().replace('"best_score"', '"best_monitor": "val/mcd", "x"')
    )
    assert read_job(run).best_step == 150  # val/mcd lowest at 150, val mel at 100


def test_axes_do_not_split_a_variant(records: list[dict]) -> None:
    # voice, data.input_dir, data.heldout_dir, data.max_seconds and data.subset_seed differ
    # between the jobs: axes, never "settings" in the variant's name.
    names = {r["variant"] for r in records}
    assert names == {"full", "full (D frozen)", "lora r8 decoder"}


def test_cells_sort_pooled_first_then_size_then_variant(records: list[dict]) -> None:
    cells = [(r["voice"], r["data_size"], r["variant"]) for r in means(records)]
    order = ["full", "full (D frozen)", "lora r8 decoder"]
    expected = [(v, s, n) for v in (POOLED, "bdl", "slt") for s in ("15 s", "all") for n in order]
    assert cells == expected
    # Pooled means first (no runs between them), then each voice's mean followed by its runs.
    kinds = [r["kind"] for r in records]
    assert kinds[:6] == ["mean"] * 6 and kinds[6:9] == ["mean", "run", "run"]
    assert len(records) == 6 + 2 * 6 * 3


def test_pooled_and_voice_cells_have_known_means_and_t_intervals(records: list[dict]) -> None:
    pooled = next(
        r for r in cell_means(records) if (r["data_size"], r["variant"]) == ("all", "full")
    )
    values = [6.0, 6.2, 6.4, 6.6]  # bdl seeds 0, 1; slt (+0.4) seeds 0, 1
    assert pooled["n_runs"] == 4 and pooled["seed"] == "0 1"
    assert pooled["mcd_db"] == pytest.approx(6.3)
    assert pooled["mcd_db_lo"] == pytest.approx(6.3 - _half(values))
    assert pooled["mcd_db_hi"] == pytest.approx(6.3 + _half(values))
    assert _half(values) == pytest.approx(0.410852, abs=1e-6)  # 3.1824 x 0.2582 / 2
    assert pooled["mcd_db_std"] == pytest.approx(statistics.stdev(values))
    assert pooled["train_memory_mb"] == 300.5 and pooled["n_stopped"] == 2
    assert pooled["stopped_step"] == 200.0 and pooled["data_s"] == 180.0
    slt = next(
        r
        for r in cell_means(records, "slt")
        if (r["data_size"], r["variant"]) == ("15 s", "lora r8 decoder")
    )
    assert slt["mcd_db"] == pytest.approx(6.3 + 0.5 + 0.4 + 0.1)
    assert slt["mcd_db_hi"] - slt["mcd_db"] == pytest.approx(T_975[1] * 0.1, rel=1e-6)
    assert slt["data_s"] == 14.8 and slt["d_policy"] == "frozen"


def test_markdown_cells_show_mean_and_interval(records: list[dict]) -> None:
    rec = {"mcd_db": 6.3, "mcd_db_lo": 5.889, "mcd_db_hi": 6.711}
    assert cell(rec, "mcd_db", lambda x: f"{x:.2f}") == "6.30 [5.89, 6.71]"
    assert cell({"mcd_db": 6.3, "mcd_db_lo": None}, "mcd_db", lambda x: f"{x:.2f}") == "6.30"
    pooled = markdown_table(records)
    assert pooled[0].startswith("| data | audio (s) | variant |")  # no voice column
    row = pooled[2 + 3].split(" | ")  # all, full
    assert row[:3] == ["| all", "180", "full"]
    assert "6.30 [5.89, 6.71]" in row and row[-1] == "2/4 at 200 |"
    per_voice = voice_table(records)
    assert per_voice[0].startswith("| voice | data |") and len(per_voice) == 2 + 12
    assert per_voice[2].startswith("| bdl | 15 s | 14 | full |")


def test_one_voice_has_no_per_voice_table(tmp_path: Path) -> None:
    write_job(tmp_path, "a", voice="slt", max_seconds=30, data_s=29.0)
    records = build_table(collect([tmp_path]))
    assert [(r["kind"], r["voice"]) for r in records] == [("mean", POOLED), ("run", "slt")]
    assert records[0]["data_size"] == "30 s" and voice_table(records) == []


def test_curves_carry_voice_size_and_val_mcd(axes: Path, tmp_path: Path) -> None:
    rows = collect([axes])
    curves = curve_records(rows)
    assert len(curves) == 24 * 6
    assert curves[0] == {
        "voice": "bdl", "data_size": "15 s", "variant": "full", "model": "tiny", "seed": "0",
        "step": 50, "val_mel": 3.11, "val_mcd": 9.0,
    }  # fmt: skip
    write_report(rows, tmp_path)
    on_disk = read_csv(tmp_path / "curves.csv")
    assert on_disk[3]["val_mcd"] == 6.5 and on_disk[3]["data_size"] == "15 s"


@pytest.mark.slow  # five figures of 24 jobs: several seconds on 2 busy cores
def test_report_writes_every_plot_and_a_per_voice_table(axes: Path, tmp_path: Path) -> None:
    written = write_report(collect([axes]), tmp_path)
    assert set(PLOTS) <= set(written) and set(README_PLOTS) <= set(PLOTS)
    for name in PLOTS:
        assert (tmp_path / name).read_bytes()[:8] == PNG, name
    md = (tmp_path / "table.md").read_text(encoding="utf-8")
    for heading in ("## Pooled over voices", "## Per voice", "## Is LoRA worth it"):
        assert heading in md
    assert "voices: bdl, slt." in md


def test_plots_draw_one_series_per_variant_and_mark_early_stops(axes: Path) -> None:
    rows = collect([axes])
    records = build_table(rows)
    fig = quality_vs_data_size_figure(records)
    ax = fig.axes[0]
    assert len(ax.containers) == 3  # full, full (D frozen), lora r8 decoder
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "full", "full (D frozen)", "lora r8 decoder"
    ]  # fmt: skip
    xs = sorted(ax.containers[0].lines[0].get_xdata())
    assert xs == pytest.approx([14.65, 180.0])  # pooled seconds used: (14.5 + 14.8) / 2
    assert len(quality_vs_wall_figure(records).axes[0].containers) == 3
    over = overtraining_figure(records, curve_records(rows))
    assert [a.get_title() for a in over.axes] == ["data 15 s", "data all"]
    # Per panel: 3 mean curves + one triangle per stopped run (2 voices x seed 1 x 3 variants).
    assert [len(a.lines) for a in over.axes] == [3 + 6, 3 + 6]
    mean_full = over.axes[1].lines[0]
    assert list(mean_full.get_ydata()) == [9.0, 8.0, 7.0, 6.5, 6.6, 6.7]


def test_full_generator_size_is_the_lora_base(records: list[dict]) -> None:
    lora = next(r for r in cell_means(records) if r["variant"] == "lora r8 decoder")
    assert lora["base_kb"] == 2902.7 and lora["pct_g"] == pytest.approx(100 * 72_192 / GENERATOR)
