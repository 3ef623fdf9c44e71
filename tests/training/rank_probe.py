"""A callback the DDP test adds to `train.py` (``+callbacks.probe``): what each rank trained on,
what its cache build did, and the adapter it holds at the end, written to ``out/rank<r>.*``."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L


class RankProbe(L.Callback):
    def __init__(self, out: str) -> None:
        self.out = Path(out)
        self.batches: list[list[float]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        # A batch's identity: each row's waveform sum (distinct slices give distinct sums).
        self.batches.append([round(float(x), 4) for x in batch["wav"].double().sum((1, 2))])

    def on_fit_end(self, trainer, pl_module) -> None:
        rank = trainer.global_rank
        self.out.mkdir(parents=True, exist_ok=True)
        report = trainer.datamodule.report
        record = {
            "rank": rank,
            "world_size": trainer.world_size,
            "global_step": trainer.global_step,
            "batches": self.batches,
            "slices_extracted": report.slices_extracted,
            "slices_reused": report.slices_reused,
        }
        (self.out / f"rank{rank}.json").write_text(json.dumps(record))
        pl_module.save_adapter(self.out / f"rank{rank}.safetensors")
