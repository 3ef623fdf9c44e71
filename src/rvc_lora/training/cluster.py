"""Training as one job of a cluster: where a started (or requeued) job resumes from.

A SLURM job that is preempted or runs out of time is requeued by submitit with the same
arguments, so it starts again in the same run directory. ``ckpt_path=auto`` makes such a start
continue from the run's ``last.ckpt`` (:class:`~rvc_lora.training.callbacks.ResumeCheckpoint`)
and a first start begin fresh; a requeued job (``SLURM_RESTART_COUNT`` > 0) resumes that way
even when ``ckpt_path`` was left null, because starting over would overwrite the run it
continues.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from rvc_lora.training.callbacks import ResumeCheckpoint
from rvc_lora.utils.errors import ConfigError

log = logging.getLogger(__name__)


def restart_count(env: Mapping[str, str] | None = None) -> int:
    """How many times SLURM has requeued this job (0 outside SLURM or on a first start)."""
    value = (os.environ if env is None else env).get("SLURM_RESTART_COUNT", "0")
    return int(value) if value.strip().isdigit() else 0


def resume_path(ckpt_path: Any, trainer: Any, env: Mapping[str, str] | None = None) -> str | None:
    """The checkpoint ``trainer.fit`` starts from.

    Args:
        ckpt_path: the ``ckpt_path`` setting: None, ``"auto"`` or a file.
        trainer: the run's trainer; ``auto`` reads the file of its ResumeCheckpoint callback.
        env: the environment (default ``os.environ``).
    """
    if ckpt_path is not None and str(ckpt_path) != "auto":
        return str(ckpt_path)
    requeued = restart_count(env) > 0
    if ckpt_path is None and not requeued:
        return None
    keeper = next((c for c in trainer.callbacks if isinstance(c, ResumeCheckpoint)), None)
    if keeper is None:
        if ckpt_path is None:  # requeued, but this run keeps no resume point
            log.warning("requeued job without callbacks.last_checkpoint: starting over")
            return None
        raise ConfigError(
            "ckpt_path=auto resumes from callbacks.last_checkpoint's file, which is off; "
            "turn it on or give ckpt_path=<a last.ckpt>"
        )
    last = keeper.path(trainer)
    if not last.is_file():
        log.info("no %s yet: starting fresh", last)
        return None
    why = "requeued job" if requeued else "ckpt_path=auto"
    log.info("%s: resuming from %s", why, last)
    return str(last)
