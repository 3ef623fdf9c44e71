"""Training callbacks: the adapter files written during fit, the resume checkpoint, timing.

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
from lightning.pytorch.callbacks import Checkpoint

from rvc_lora.utils.errors import ConfigError


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


class ResumeCheckpoint(Checkpoint):
    """The resume point: ``last.ckpt``, rewritten every ``every_n_train_steps`` optimisation
    steps (also mid-epoch) and at the end of fit; ``ckpt_path=.../last.ckpt`` continues the run.

    Saves are mid-epoch positions, the one kind Lightning 2.6 resumes exactly. A save due on
    an epoch's last batch moves to the first batch of the next epoch: resumed from a checkpoint
    taken between the last batch and the validation, Lightning counts the epoch as finished and
    skips that validation (and the best checkpoint and best adapter it would have chosen); from
    one taken at the epoch's end, it ends that epoch a second time, hands the samplers the next
    epoch's number and logs every later step one step on. Only one-batch epochs, and a fit that
    ends with its epoch, are saved at an epoch's end; for those, each epoch start puts the
    samplers back in the trainer's epoch and the module counts its LR decays by epoch. The file
    is written beside the target and renamed over it, so a kill mid-write keeps the previous
    one.

    Args:
        dirpath: folder of the file; None means ``trainer.default_root_dir``.
        every_n_train_steps: steps between saves; 0 saves only at the end of fit.
        filename: the file's name.
    """

    def __init__(
        self,
        dirpath: str | os.PathLike[str] | None = None,
        every_n_train_steps: int = 100,
        filename: str = "last.ckpt",
    ) -> None:
        if int(every_n_train_steps) != every_n_train_steps or every_n_train_steps < 0:
            raise ConfigError(
                f"callbacks.last_checkpoint.every_n_train_steps must be an integer >= 0 "
                f"(0: only at the end of fit), got {every_n_train_steps}"
            )
        self.dirpath, self.every, self.filename = dirpath, int(every_n_train_steps), filename
        self._pending = False
        self._saved_step: int | None = None
        self.last_model_path = ""

    def path(self, trainer: L.Trainer) -> Path:
        root = self.dirpath if self.dirpath is not None else trainer.default_root_dir
        return Path(root) / self.filename

    def _save(self, trainer: L.Trainer) -> None:
        self._pending = False
        if trainer.fast_dev_run or trainer.sanity_checking:
            return
        path = self.path(trainer)
        tmp = path.with_name(path.name + ".tmp")
        # Every rank takes part; rank zero writes. A resume needs the whole state (optimisers,
        # loops, callbacks), so not weights only; said here so Lightning does not log its default.
        trainer.save_checkpoint(tmp, weights_only=False)
        if trainer.is_global_zero:
            os.replace(tmp, path)
        trainer.strategy.barrier("ResumeCheckpoint")
        self._saved_step, self.last_model_path = trainer.global_step, str(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        # The last step of a max_steps run that ends mid-epoch is saved here, before Lightning
        # ends the epoch it cuts short: saved after that, the epoch would resume as finished.
        final = 0 < trainer.max_steps <= step
        if final or (self.every > 0 and step % self.every == 0):
            self._pending = True
        if self._pending and batch_idx + 1 < trainer.num_training_batches:
            self._save(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # No mid-epoch position is left: one-batch epochs, or the fit ends with this epoch.
        # Here rather than at the end of fit: resumed from there, Lightning 2.6 skips an epoch.
        ends = 0 < trainer.max_steps <= trainer.global_step or trainer.should_stop
        ends = ends or 0 < (trainer.max_epochs or 0) <= trainer.current_epoch + 1
        if self._saved_step == trainer.global_step:  # a mid-epoch position already
            return
        if (self._pending and trainer.num_training_batches == 1) or ends:
            self._save(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Resumed from a checkpoint written at an epoch's end, Lightning 2.6 ends that epoch a
        # second time (the module's LR decay counts epochs for that) and hands the samplers the
        # number of the epoch after the one it starts: batch order and crops would be another
        # epoch's. The first batch is drawn after this hook.
        loaders = trainer.train_dataloader
        if isinstance(loaders, dict):
            loaders = list(loaders.values())
        for loader in loaders if isinstance(loaders, (list, tuple)) else [loaders]:
            batch_sampler = getattr(loader, "batch_sampler", None)
            for sampler in (
                getattr(loader, "sampler", None),
                getattr(batch_sampler, "sampler", None),
            ):
                if getattr(sampler, "epoch", None) not in (None, trainer.current_epoch):
                    sampler.set_epoch(trainer.current_epoch)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._saved_step != trainer.global_step:
            self._save(trainer)


class StepTimer(L.Callback):
    """The run's timing: wall time of each training batch (data to optimiser step), and the
    run's own clock at each validation.

    The clock starts when the first training batch starts: data preparation (slicing, HuBERT
    and F0 extraction on a cold cache), model set-up and the sanity check are left out, so
    runs compare by the time they spent training, however warm their feature cache was. What
    came before is kept in :attr:`prepare_s` (from :meth:`fit_called`, or ``on_fit_start``, to
    the first training batch). Data
    loading and validations after that are on the clock. The clock is logged as
    ``time/wall_s`` at the end of every validation, beside ``val/loss_mel`` in the curves the
    loggers write, and kept in :attr:`val_wall_s`. It travels in checkpoints: a resumed run's
    clock continues from the time its checkpoint was written (the minutes between that and the
    kill, and the resumed process's own preparation, are not counted).

    The first ``warmup`` batches are left out of the step times: they include allocator growth
    and kernel choice. On CUDA the clock waits for the device so that asynchronous kernels are
    counted.
    """

    WALL_KEY = "time/wall_s"

    def __init__(self, warmup: int = 1) -> None:
        self.warmup = warmup
        self.times: list[float] = []
        self.val_wall_s: dict[int, float] = {}  # optimisation steps done -> seconds
        self._seen = 0
        self._start = 0.0
        self._fit_begin: float | None = None  # fit_called() or on_fit_start
        self._fit_start: float | None = None  # the first training batch's start: the clock's 0
        self._offset = 0.0  # seconds a resumed run's checkpoint had already counted
        self.prepare_s: float | None = None  # fit start -> first training batch

    def _sync(self, pl_module: L.LightningModule) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize(pl_module.device)

    def elapsed(self) -> float:
        """Seconds on the run's clock (the resumed offset, or 0, before the first batch)."""
        if self._fit_start is None:
            return self._offset
        return self._offset + time.perf_counter() - self._fit_start

    def fit_called(self) -> None:
        """Mark the call of ``trainer.fit``: Lightning prepares the data (``prepare_data``,
        ``setup``) before any callback hook, so :attr:`prepare_s` only includes that when the
        caller marks it (``train`` does); else it counts from ``on_fit_start``."""
        self._fit_begin = time.perf_counter()

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_start, self.prepare_s = None, None
        if self._fit_begin is None:  # fit_called() was not used
            self._fit_begin = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._start = time.perf_counter()
        if self._fit_start is None:
            self._fit_start = self._start
            if self._fit_begin is not None:
                self.prepare_s = self._start - self._fit_begin
                self._fit_begin = None  # a later fit measures its own preparation

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._sync(pl_module)
        self._seen += 1
        if self._seen > self.warmup:
            self.times.append(time.perf_counter() - self._start)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self._fit_start is None:  # not a validation of the run
            return
        self._sync(pl_module)
        wall = self.elapsed()
        self.val_wall_s[trainer.global_step] = wall
        pl_module.log(self.WALL_KEY, wall, rank_zero_only=True)

    def state_dict(self) -> dict[str, float]:
        return {"elapsed_s": self.elapsed()}

    def load_state_dict(self, state_dict: dict[str, float]) -> None:
        self._offset = float(state_dict.get("elapsed_s", 0.0))

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
