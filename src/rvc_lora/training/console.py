"""What a training run prints: each log line once, and no warning the user cannot act on.

Lightning gives its loggers a stderr handler of their own; under Hydra, whose handlers sit on
the root logger, every Lightning line was printed twice (``INFO: ...`` and Hydra's format).
Warnings whose cause is ours are fixed where they arise (the logging interval here, the
generator's train mode in ``training.build``); the few left come from dependencies and are
filtered one by one, by message, category and module, never as a class.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import lightning as L

log = logging.getLogger(__name__)

LIGHTNING_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric")

# (message regex, category, module regex) of warnings no setting of ours can act on.
NOT_ACTIONABLE: tuple[tuple[str, type[Warning], str], ...] = (
    # torch >= 2.9 deprecates LeafSpec, which Lightning 2.6 still builds for every batch.
    (
        r"`isinstance\(treespec, LeafSpec\)` is deprecated",
        FutureWarning,
        r"lightning\.pytorch\.utilities\._pytree",
    ),
)

# Lightning's advertisements, logged at INFO on every fit.
_TIP_PREFIX = "💡 Tip: "


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TIP_PREFIX)


_DROP_TIPS = _DropTips()


def log_once() -> None:
    """Send Lightning's log records through the root logger's handlers only.

    Does nothing when the root logger has no handler (no Hydra, no ``logging.basicConfig``):
    then Lightning's own handler is the only one that prints.
    """
    if not logging.getLogger().handlers:
        return
    for name in LIGHTNING_LOGGERS:
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            if type(handler) is logging.StreamHandler:  # Lightning's console; never a file
                logger.removeHandler(handler)
        logger.propagate = True
    rank_zero = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _DROP_TIPS not in rank_zero.filters:
        rank_zero.addFilter(_DROP_TIPS)


def quiet_warnings() -> None:
    """Ignore the warnings in :data:`NOT_ACTIONABLE`, and only those."""
    for message, category, module in NOT_ACTIONABLE:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)


def train_batches(trainer: L.Trainer, datamodule: Any) -> int | None:
    """Training batches per epoch as Lightning will count them, or None when unknown."""
    try:
        n = len(datamodule.train_dataloader())
    except (AttributeError, TypeError, NotImplementedError):
        return None
    limit = trainer.limit_train_batches
    if isinstance(limit, int):
        return min(n, limit)
    if isinstance(limit, float):
        return int(n * limit)
    return n


class LogIntervalWithinEpoch(L.Callback):
    """``log_every_n_steps`` = min(configured, batches per epoch).

    With fewer batches per epoch than the interval, an epoch logs no training step and
    Lightning warns; a small dataset (the demo's 4 batches) should still log every epoch.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage != "fit" or trainer.fast_dev_run or not trainer.log_every_n_steps:
            return
        n = train_batches(trainer, trainer.datamodule)
        if n and n < trainer.log_every_n_steps:
            log.debug(
                "log_every_n_steps %d -> %d (batches per epoch)", trainer.log_every_n_steps, n
            )
            trainer.log_every_n_steps = n
