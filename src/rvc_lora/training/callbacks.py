"""Training callbacks: the adapter files written during fit, timing, the progress bar.

They see the LightningModule only through the small :class:`ExportsArtifact` protocol, so this
file does not import ``training.module`` (which imports ``training.media``): the training
layer's imports read one way.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch


class ExportsArtifact(Protocol):
    """What :class:`AdapterExport` needs of the module (``VoiceConversionModule`` has it)."""

    artifact_name: str

    def save_adapter(self, path: str | os.PathLike[str]) -> Path: ...


class AdapterExport(L.Callback):
    """Write the adapter at the end of fit, and again whenever the best checkpoint changes.

    The module's ``save_adapter`` decides the format (``.safetensors`` adapter, or a full ``.pth``
    generator for full fine-tuning).

    Args:
        dirpath: folder for the files; None means ``trainer.default_root_dir``.
        filename: written at the end of fit; None means the module's ``artifact_name``
            (``adapter.safetensors``, or ``generator.pth`` for full fine-tuning).
        best_filename: written when ``trainer.checkpoint_callback.best_model_path`` changes;
            None means ``best_`` + the module's ``artifact_name``; "" disables it.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike[str] | None = None,
        filename: str | None = None,
        best_filename: str | None = None,
    ) -> None:
        self.dirpath, self.filename, self.best_filename = dirpath, filename, best_filename
        self._best_seen = ""
        self.written: list[Path] = []
        self.final: Path | None = None

    def _dir(self, trainer: L.Trainer) -> Path:
        return Path(self.dirpath if self.dirpath is not None else trainer.default_root_dir)

    @staticmethod
    def _best(trainer: L.Trainer) -> str:
        ckpt = trainer.checkpoint_callback
        return str(getattr(ckpt, "best_model_path", "") or "")

    def on_train_start(self, trainer: L.Trainer, pl_module: ExportsArtifact) -> None:
        # After a resume the restored best is not this process's weights: only newer bests count.
        self._best_seen = self._best(trainer)

    def _check_best(self, trainer: L.Trainer, pl_module: ExportsArtifact) -> None:
        # ModelCheckpoint runs after other callbacks, so a new best shows up at the next hook;
        # no optimiser step has happened since, so the weights are the checkpoint's.
        best = self._best(trainer)
        if best and best != self._best_seen:
            self._best_seen = best
            name = self.best_filename
            name = "best_" + pl_module.artifact_name if name is None else name
            if name and trainer.is_global_zero:
                self.written.append(pl_module.save_adapter(self._dir(trainer) / name))

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: ExportsArtifact, batch: Any, batch_idx: int
    ) -> None:
        self._check_best(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: ExportsArtifact) -> None:
        self._check_best(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: ExportsArtifact) -> None:
        if trainer.is_global_zero:
            name = self.filename or pl_module.artifact_name
            self.final = pl_module.save_adapter(self._dir(trainer) / name)
            self.written.append(self.final)


class StepTimer(L.Callback):
    """Wall time of each training batch (data to optimiser step), for the run's metrics.

    The first ``warmup`` batches are left out: they include allocator growth and kernel choice.
    On CUDA the clock waits for the device so that asynchronous kernels are counted.
    """

    def __init__(self, warmup: int = 1) -> None:
        self.warmup = warmup
        self.times: list[float] = []
        self._seen = 0
        self._start = 0.0

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._seen += 1
        if self._seen > self.warmup:
            self.times.append(time.perf_counter() - self._start)

    @property
    def median(self) -> float | None:
        """Median seconds per training step, or None before any timed step."""
        return float(np.median(self.times)) if self.times else None


class StepProgressBar(L.pytorch.callbacks.RichProgressBar):
    """Rich progress bar that, on a step-limited run, labels the epoch bar with the step count
    toward ``max_steps`` and an ETA for the whole run (Lightning shows "Epoch 4/-2" there)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.perf_counter()
        self._first_step = trainer.global_step  # a resumed run's rate counts its own steps
        super().on_train_start(trainer, pl_module)

    def _get_train_description(self, current_epoch: int) -> str:
        t = self.trainer
        if not (t.max_steps and t.max_steps > 0 and (t.max_epochs is None or t.max_epochs < 0)):
            return super()._get_train_description(current_epoch)
        text = f"Epoch {current_epoch} · step {t.global_step}/{t.max_steps}"
        done = t.global_step - getattr(self, "_first_step", 0)
        if done > 0:
            rate = (time.perf_counter() - self._started) / done
            left = int(rate * max(t.max_steps - t.global_step, 0))
            text += f" · ETA {left // 60}:{left % 60:02d}"
        return text
