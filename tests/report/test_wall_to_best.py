"""Wall time to best: the run's own clock at each validation, never steps x median step time."""

from __future__ import annotations

import csv
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from rvc_lora.report import collect
from rvc_lora.report.table import (
    MD_COLUMNS,
    MISSING,
    markdown_table,
    mean_record,
    run_record,
)
from rvc_lora.training.callbacks import StepTimer
from tests.report.jobs import write_job


class _Tiny(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, batch_idx) -> None:
        self.log("val/x", self.layer(batch[0]).mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(8, 2)))


def test_step_timer_records_the_clock_at_each_validation(tmp_path: Path) -> None:
    timer = StepTimer()
    trainer = L.Trainer(
        max_steps=6,
        val_check_interval=2,
        limit_val_batches=1,
        num_sanity_val_steps=1,  # the sanity check is not a validation of the run
        callbacks=[timer],
        logger=CSVLogger(tmp_path, name="", version=""),
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(_Tiny(), _loader(), _loader())
    # Keyed by optimisation steps done, the same count as the report's validation curve.
    assert list(timer.val_wall_s) == [2, 4, 6]
    walls = list(timer.val_wall_s.values())
    assert 0 < walls[0] < walls[1] < walls[2]
    # ... and in the run's curve, on the rows of the validations, as the report reads it.
    with open(tmp_path / "metrics.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r[StepTimer.WALL_KEY]]
    assert all(r["val/x"] for r in rows)
    logged = {int(r["step"]) + 1: float(r[StepTimer.WALL_KEY]) for r in rows}
    assert logged == pytest.approx(timer.val_wall_s, rel=1e-6)


def _with_clock(run: Path, walls: dict[int, float]) -> None:
    """Add StepTimer's ``time/wall_s`` to the validation rows of the job's CSV log."""
    log = run / "csv" / "metrics.csv"
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(log, "w", newline="") as f:
        w = csv.DictWriter(f, [*rows[0], StepTimer.WALL_KEY])
        w.writeheader()
        for row in rows:
            done = int(row["step"]) + 1
            w.writerow({**row, StepTimer.WALL_KEY: walls[done] if row["val/loss_mel"] else ""})


def test_wall_to_best_comes_from_the_recorded_clock(tmp_path: Path) -> None:
    # Best val mel after 100 steps; the clock says 41.5 s there (validation and loading
    # included), while 100 x the 0.17 s median step would say 17 s.
    run = write_job(tmp_path, "clocked", curve=(3.0, 2.0, 2.5), step_time_s=0.17)
    _with_clock(run, {50: 20.25, 100: 41.5, 150: 60.0})
    (row,) = collect([tmp_path])
    assert row.best_step == 100
    assert row.wall_to_best_s == 41.5
    assert row.wall_to_best_source == "the run's clock at that validation"
    rec = run_record(row)
    assert (rec["wall_to_best_s"], rec["wall_to_best_source"]) == (41.5, row.wall_to_best_source)


def test_without_a_recorded_clock_wall_to_best_is_not_estimated(tmp_path: Path) -> None:
    write_job(tmp_path, "unclocked", curve=(3.0, 2.0, 2.5), step_time_s=0.17)
    (row,) = collect([tmp_path])
    assert row.best_step == 100 and row.step_time_s == 0.17
    assert row.wall_to_best_s is None and row.wall_to_best_source == ""
    mean = mean_record([run_record(row)])
    assert mean["wall_to_best_s"] is None
    keys = [key for _, key, _ in MD_COLUMNS]
    cells = markdown_table([mean])[2].strip("|").split("|")
    assert cells[keys.index("wall_to_best_s")].strip() == MISSING


def test_a_resumed_run_clock_continues_from_its_checkpoint() -> None:
    timer = StepTimer()
    timer.load_state_dict({"elapsed_s": 100.0})
    assert timer.elapsed() == 100.0
    timer.on_fit_start(None, None)
    assert 100.0 <= timer.elapsed() < 110.0
    assert StepTimer().state_dict() == {"elapsed_s": 0.0}
