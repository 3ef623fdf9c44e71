"""Training side channels: adapter files written during fit, media for the loggers that take it.

Media (audio, mel images) are a convenience, never a reason to stop a run: a missing optional
package (matplotlib, tensorboard, wandb) or a logger that cannot take media is skipped with one
warning.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn

if TYPE_CHECKING:
    from rvc_lora.training.module import VoiceConversionModule


def _render_matplotlib(mels: Sequence[np.ndarray], titles: Sequence[str]) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    fig = Figure(figsize=(8, 2.2 * len(mels)), dpi=100)
    canvas = FigureCanvasAgg(fig)
    axes = fig.subplots(len(mels), 1, squeeze=False)[:, 0]
    lo, hi = min(float(m.min()) for m in mels), max(float(m.max()) for m in mels)
    for ax, mel, title in zip(axes, mels, titles):
        im = ax.imshow(mel, origin="lower", aspect="auto", interpolation="none", vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=9)
        ax.set_ylabel("mel bin")
        fig.colorbar(im, ax=ax)
    axes[-1].set_xlabel("frame")
    fig.tight_layout()
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()  # [H, W, 3] uint8


def _render_numpy(mels: Sequence[np.ndarray]) -> np.ndarray:
    # Fallback without matplotlib: shared min-max scaling to grey levels, low bins at the bottom.
    lo, hi = min(float(m.min()) for m in mels), max(float(m.max()) for m in mels)
    width = max(m.shape[1] for m in mels)
    rows = []
    for mel in mels:
        grey = (mel - lo) / max(hi - lo, 1e-8)
        grey = np.pad(grey[::-1], ((0, 2), (0, width - mel.shape[1])))  # 2-row gap between
        rows.append(grey)
    img = (np.concatenate(rows, axis=0) * 255).astype(np.uint8)  # [H, W]
    return np.repeat(img[..., None], 3, axis=-1)  # [H, W, 3]


def mel_image(mels: Sequence[np.ndarray], titles: Sequence[str]) -> np.ndarray:
    """Stacked log-mel panels (each ``[n_mels, T]``) as an ``[H, W, 3]`` uint8 image.

    Uses matplotlib (titles, colour bars) when installed, else a plain grey-scale picture.
    """
    try:
        return _render_matplotlib(mels, titles)
    except ImportError:
        return _render_numpy(mels)


def log_media(
    loggers: Iterable[Any],
    step: int,
    sample_rate: int,
    audio: Mapping[str, np.ndarray],
    image: np.ndarray | None,
    prefix: str = "val",
) -> None:
    """Send audio clips (``[N]`` float in [-1, 1]) and an ``[H, W, 3]`` image to the loggers.

    TensorBoard and Weights & Biases take media; other loggers are skipped.
    """
    try:
        from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
    except ImportError:  # pragma: no cover - part of lightning
        return
    for logger in loggers:
        try:
            if isinstance(logger, TensorBoardLogger):
                exp = logger.experiment
                for name, wav in audio.items():
                    clip = torch.from_numpy(np.clip(wav, -1.0, 1.0))[None]  # [1, N]
                    exp.add_audio(f"{prefix}/audio/{name}", clip, step, sample_rate=sample_rate)
                if image is not None:
                    exp.add_image(f"{prefix}/mel", image, step, dataformats="HWC")
            elif isinstance(logger, WandbLogger):
                logger.log_audio(
                    f"{prefix}/audio",
                    [np.clip(w, -1.0, 1.0) for w in audio.values()],
                    step=step,
                    caption=list(audio),
                    sample_rate=[sample_rate] * len(audio),
                )
                if image is not None:
                    logger.log_image(f"{prefix}/mel", [image], step=step)
        except Exception as err:  # noqa: BLE001 - a media side channel must not end a run
            rank_zero_warn(
                f"could not log media to {type(logger).__name__} ({type(err).__name__}: {err})"
            )


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

    def on_train_start(self, trainer: L.Trainer, pl_module: VoiceConversionModule) -> None:
        # After a resume the restored best is not this process's weights: only newer bests count.
        self._best_seen = self._best(trainer)

    def _check_best(self, trainer: L.Trainer, pl_module: VoiceConversionModule) -> None:
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
        self, trainer: L.Trainer, pl_module: VoiceConversionModule, batch: Any, batch_idx: int
    ) -> None:
        self._check_best(trainer, pl_module)

    def on_train_end(self, trainer: L.Trainer, pl_module: VoiceConversionModule) -> None:
        self._check_best(trainer, pl_module)

    def on_fit_end(self, trainer: L.Trainer, pl_module: VoiceConversionModule) -> None:
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
