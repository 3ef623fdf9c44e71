"""The overtraining detector: stop a run once its validation metric stops improving, and
optionally hand back the adapter of its best validation instead of the last one.

A small dataset overfits: after some hundred steps the held-out MCD climbs again while the
training loss keeps falling. :class:`EarlyStop` watches one logged metric (``val/mcd`` by
default, the one ``optimized_metric`` and the best checkpoint use), counts validations without
an improvement and stops the trainer after ``patience`` of them. Its :meth:`EarlyStop.summary`
is what ``metrics.json`` records under ``early_stop``.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.trainer.states import TrainerFn

from rvc_lora.training.callbacks import AdapterExport, StepTimer
from rvc_lora.utils.errors import ConfigError

log = logging.getLogger(__name__)

_KEY = "callbacks.early_stop"


def _trainable_tensors(pl_module: L.LightningModule) -> dict[str, torch.Tensor]:
    """The module's trainable tensors, sharing storage with its parameters.

    ``trainable_state()`` where the module has it (adapter + extras, or the whole generator,
    plus a trained discriminator); else every parameter with ``requires_grad``.
    """
    state = getattr(pl_module, "trainable_state", None)
    if callable(state):
        return state()
    return {k: p.detach() for k, p in pl_module.named_parameters() if p.requires_grad}


class EarlyStop(L.Callback):
    """Stop after ``patience`` validations without an improvement of ``monitor``.

    An improvement is a finite value better than the best so far by more than ``min_delta``
    (smaller ones do not reset the count; NaN, inf and a missing value count as no
    improvement). The first validation of a run must log ``monitor``: a misspelt key would
    otherwise never stop anything.

    Args:
        monitor: the logged metric (``val/mcd``: dB, lower is better).
        mode: ``"min"`` (lower is better) or ``"max"``.
        patience: validations without an improvement before the run stops; None never stops
            (the best is still recorded for :meth:`summary`).
        min_delta: the margin an improvement must exceed, in the metric's unit (>= 0).
        restore_best: at the end of fit, copy the trainable tensors of the best validation
            back into the module, so the final adapter file (and anything scored after fit)
            is the best one. The copy is taken only when this is set: it would double the
            size of every resume checkpoint for full fine-tuning.

    The restore happens in ``on_fit_end``, after Lightning's ``on_train_end`` hooks: the
    resume checkpoint and the ``best_*`` adapter keep the weights their step really had. The
    final adapter is written by :class:`AdapterExport` in its own ``on_fit_end``, so this
    callback must come before it in ``trainer.callbacks`` (checked at fit start).
    """

    def __init__(
        self,
        monitor: str = "val/mcd",
        mode: str = "min",
        patience: int | None = None,
        min_delta: float = 0.0,
        restore_best: bool = False,
    ) -> None:
        if not isinstance(monitor, str) or not monitor:
            raise ConfigError(f"{_KEY}.monitor must be a logged metric name, got {monitor!r}")
        if mode not in ("min", "max"):
            raise ConfigError(f"{_KEY}.mode must be 'min' or 'max', got {mode!r}")
        whole = (
            isinstance(patience, (int, float))
            and not isinstance(patience, bool)
            and math.isfinite(patience)
            and patience == int(patience)
        )
        if patience is not None and not (whole and patience >= 1):
            raise ConfigError(
                f"{_KEY}.patience must be an integer >= 1 or null (never stop), got {patience!r}"
            )
        if isinstance(min_delta, bool) or not (
            isinstance(min_delta, (int, float)) and 0 <= min_delta < math.inf
        ):
            raise ConfigError(f"{_KEY}.min_delta must be a number >= 0, got {min_delta!r}")
        if not isinstance(restore_best, bool):
            raise ConfigError(f"{_KEY}.restore_best must be true or false, got {restore_best!r}")
        self.monitor, self.mode = monitor, mode
        self.patience = None if patience is None else int(patience)
        self.min_delta, self.restore_best = float(min_delta), restore_best
        self.best: float | None = None
        self.best_step: int | None = None
        self.best_wall_s: float | None = None
        self.best_state: dict[str, torch.Tensor] | None = None  # CPU copies, restore_best only
        self.wait = 0  # validations since the best
        self.n_validations = 0
        self.stopped_step: int | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, mode=self.mode)

    # ---- the decision -----------------------------------------------------------------------

    def improves(self, value: float) -> bool:
        """Whether ``value`` beats the best so far by more than ``min_delta``."""
        if not math.isfinite(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def _read(self, trainer: L.Trainer) -> float:
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            if self.n_validations == 0:
                keys = ", ".join(sorted(metrics)) or "none"
                raise ConfigError(
                    f"{_KEY}.monitor {self.monitor!r} was not logged at the first validation "
                    f"(logged: {keys}); set it to one of those"
                )
            return math.nan
        return float(metrics[self.monitor])

    @staticmethod
    def _wall_s(trainer: L.Trainer) -> float | None:
        timer = next((c for c in trainer.callbacks if isinstance(c, StepTimer)), None)
        if timer is None:
            return None
        # The clock value the timer logged as time/wall_s at this validation, when it has one.
        logged = getattr(timer, "val_wall_s", {}).get(trainer.global_step)
        return float(logged) if logged is not None else float(timer.elapsed())

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # After the validation loop has put the epoch's logged values in callback_metrics.
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return
        value = self._read(trainer)
        self.n_validations += 1
        step = trainer.global_step
        if self.improves(value):
            self.best, self.best_step, self.wait = value, step, 0
            self.best_wall_s = self._wall_s(trainer)
            if self.restore_best:
                self.best_state = {
                    k: t.detach().to("cpu", copy=True)
                    for k, t in _trainable_tensors(pl_module).items()
                }
            return
        self.wait += 1
        if self.patience is None or self.stopped_step is not None:
            return
        stop = self.wait >= self.patience
        # Every rank sees the same synced value; the reduction keeps ranks from diverging anyway.
        stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            trainer.should_stop = True
            self.stopped_step = step
            log.info("early stop at step %d: %s", step, self.reason())

    # ---- the end of fit ----------------------------------------------------------------------

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.restore_best:
            return
        mine = trainer.callbacks.index(self)
        for i, cb in enumerate(trainer.callbacks[:mine]):
            if isinstance(cb, AdapterExport):
                raise ConfigError(
                    f"{_KEY} (restore_best) comes after adapter_export (callback {i}): the final "
                    f"adapter would be the last weights; list early_stop before adapter_export"
                )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.restore_best or self.best_state is None:
            return
        current = _trainable_tensors(pl_module)
        if set(current) != set(self.best_state):
            raise RuntimeError(
                f"early stop: the best state's tensors differ from the module's: missing "
                f"{sorted(set(current) - set(self.best_state))[:5]}, unexpected "
                f"{sorted(set(self.best_state) - set(current))[:5]}"
            )
        with torch.no_grad():
            for k, t in current.items():  # in place: optimisers and wrappers keep their tensors
                t.copy_(self.best_state[k].to(device=t.device, dtype=t.dtype))
        log.info(
            "restored the adapter of step %d (%s %.4g)", self.best_step, self.monitor, self.best
        )

    # ---- what the run records -----------------------------------------------------------------

    def reason(self) -> str:
        """One sentence: why the run stopped, or that it ran to the end."""
        if self.stopped_step is None:
            if self.best_step is None:
                return f"ran to max_steps; {self.monitor} was never a finite number"
            return f"ran to max_steps; best at step {self.best_step}"
        margin = f" by more than {self.min_delta:g}" if self.min_delta > 0 else ""
        n = f"{self.patience} validation{'' if self.patience == 1 else 's'}"
        if self.best_step is None:
            return (
                f"{self.monitor} was not a finite number in {n} "
                f"(stopped at step {self.stopped_step})"
            )
        return (
            f"{self.monitor} did not improve{margin} in {n} after step {self.best_step} "
            f"(best {self.best:.4g})"
        )

    def summary(self) -> dict[str, Any]:
        """The ``early_stop`` entry of ``metrics.json``."""
        return {
            "monitor": self.monitor,
            "mode": self.mode,
            "patience": self.patience,
            "min_delta": self.min_delta,
            "best": self.best,
            "best_step": self.best_step,
            "best_wall_s": self.best_wall_s,
            "stopped_step": self.stopped_step,
            "reason": self.reason(),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "best": self.best,
            "best_step": self.best_step,
            "best_wall_s": self.best_wall_s,
            "wait": self.wait,
            "n_validations": self.n_validations,
            "stopped_step": self.stopped_step,
            "best_state": self.best_state,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = state_dict.get("best")
        self.best_step = state_dict.get("best_step")
        self.best_wall_s = state_dict.get("best_wall_s")
        self.wait = int(state_dict.get("wait", 0))
        self.n_validations = int(state_dict.get("n_validations", 0))
        self.stopped_step = state_dict.get("stopped_step")
        best_state = state_dict.get("best_state")
        self.best_state = (
            None if best_state is None else {k: t.to("cpu") for k, t in best_state.items()}
        )
