"""Media for the loggers that take it: validation audio and a mel-spectrogram picture.

Media are a convenience, never a reason to stop a run: a missing optional package (matplotlib,
tensorboard, wandb) or a logger that cannot take media is skipped with one warning.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn


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
