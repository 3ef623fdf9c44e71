"""``VoiceConversionModule``: RVC's GAN training step (RVC_FACTS.md §4) as a LightningModule.

The generator trains through LoRA adapters (or fully, the baseline); the discriminator is frozen
(default) or trained as in RVC. Checkpoints hold only what trains, plus the identity of the base
they were trained on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NamedTuple

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from omegaconf import OmegaConf
from torch import nn

from rvc_lora.lora import LoraConfig, base_identity, inject_lora, trainable_parameters
from rvc_lora.lora import save_adapter as save_lora_adapter
from rvc_lora.lora.config import LoraError
from rvc_lora.lora.layers import reference_base_weights
from rvc_lora.models.activations import reference_activations
from rvc_lora.models.commons import sequence_mask, slice_segments
from rvc_lora.models.discriminator import MultiPeriodDiscriminator
from rvc_lora.models.nn import fold_weight_norm
from rvc_lora.models.presets import PRESETS, SynthConfig
from rvc_lora.models.synthesizer import Synthesizer
from rvc_lora.spectral import mel_numerics as named_mel_numerics
from rvc_lora.spectral import mel_spectrogram, spec_to_mel
from rvc_lora.training.checkpointing import checkpoint_activations as checkpoint_blocks
from rvc_lora.training.losses import (
    GeneratorLosses,
    discriminator_loss,
    generator_total,
    generator_total_streaming,
)
from rvc_lora.training.media import log_media, mel_image
from rvc_lora.training.quality import (
    VAL_F0_RMSE,
    VAL_MCD,
    VAL_SECS,
    ValQuality,
    finite_means,
    score_item,
)
from rvc_lora.utils.atomic import atomic_torch_save
from rvc_lora.utils.determinism import seed_step
from rvc_lora.utils.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)

D_POLICIES = ("frozen", "trained")
CKPT_KEY = "rvc_lora"  # our entry in Lightning checkpoints
VAL_SEED = 1234  # prior noise of `infer` in validation: the same draw every epoch


def rvc_adamw(params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
    """RVC's optimiser: AdamW lr 1e-4, betas (0.8, 0.99), eps 1e-9; weight decay 0.01 is
    AdamW's default, which RVC leaves in place."""
    return torch.optim.AdamW(params, lr=1e-4, betas=(0.8, 0.99), eps=1e-9, weight_decay=0.01)


def preset_name(config: SynthConfig) -> str | None:
    """Name of the preset ``config`` is (speaker-table size aside), or None."""
    for name, preset in PRESETS.items():
        if preset.replace(spk_embed_dim=config.spk_embed_dim) == config:
            return name
    return None


def _no_closure() -> None:
    return None


def _plain_param_groups(optimizer: torch.optim.Optimizer) -> None:
    # A Hydra `_partial_` optimiser gets `betas: [0.8, 0.99]` as a ListConfig. Recent torch
    # turns betas into a tuple; where a ListConfig stays in param_groups it is pickled into every
    # checkpoint, which torch.load(weights_only=True) (fit(..., weights_only=True)) refuses.
    for group in optimizer.param_groups:
        for key, value in group.items():
            if key != "params" and OmegaConf.is_config(value):
                plain = OmegaConf.to_container(value, resolve=True)
                group[key] = tuple(plain) if isinstance(plain, list) else plain


def _as_list(x: Any) -> list:
    return [] if x is None else list(x) if isinstance(x, (list, tuple)) else [x]


class StepLosses(NamedTuple):
    """One training step's losses: the generator's (total and terms) and, when D trains, D's."""

    g: GeneratorLosses
    d: torch.Tensor | None


class VoiceConversionModule(L.LightningModule):
    """RVC fine-tuning with manual GAN optimisation.

    Args:
        generator: RVC synthesizer with ``enc_q`` (see ``training.build.build_generator``).
        discriminator: RVC multi-period discriminator.
        lora: adapters to inject into the generator; None trains every generator weight.
        d_policy: ``frozen`` (D only scores, no D step) or ``trained`` (D steps first, as RVC).
        optimizer_g, optimizer_d: ``params -> Optimizer`` (Hydra ``_partial_``); default
            :func:`rvc_adamw`.
        lr_decay: ExponentialLR gamma, stepped once per epoch (RVC: 0.999875).
        c_mel, c_kl: weights of the mel L1 and KL terms (RVC: 45, 1).
        grad_clip: max gradient norm per optimiser; None (default, as RVC) only measures it
            (logged as ``train/grad_norm_g`` / ``_d``) and leaves the gradients untouched.
        log_audio: send validation audio and a mel image to loggers that take media.
        val_metric_items: validation items per epoch that also get ``val/mcd``,
            ``val/f0_rmse`` and ``val/secs`` (:mod:`rvc_lora.training.quality`); 0 turns them
            off.
        seed: base of the per-step RNG seeds (see ``training.determinism``); None takes the seed
            the process was seeded with (``L.seed_everything(cfg.seed)`` in ``train``) at fit
            start. A resumed fit continues with the seed stored in its checkpoint.
        mel_numerics: the spectrogram eps and mel floor of the mel loss, by name
            (:data:`rvc_lora.spectral.MEL_NUMERICS`; ``features.mel_numerics``).
        checkpoint_activations: recompute the decoder's last two upsampling stages' resblocks
            (and, when D trains, the first two convs of every member discriminator) during
            backward instead of keeping their activations
            (:mod:`rvc_lora.training.checkpointing`): less memory, more time; the same
            gradients bit for bit.
        reference: run the code as it was before the speed and memory levers (issue 17), for
            tests and benchmarks that compare against it: weight norm recomputed in the frozen
            D, D(y, ŷ) of all members before the loss, plain activations, no cached LoRA base
            weights, and ``clip_grad_norm_`` also when not clipping. Same losses and gradients.
    """

    def __init__(
        self,
        generator: Synthesizer,
        discriminator: MultiPeriodDiscriminator,
        lora: LoraConfig | None = None,
        d_policy: str = "frozen",
        optimizer_g: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
        optimizer_d: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
        lr_decay: float = 0.999875,
        c_mel: float = 45.0,
        c_kl: float = 1.0,
        grad_clip: float | None = None,
        log_audio: bool = True,
        seed: int | None = None,
        val_metric_items: int = 4,
        mel_numerics: str = "rvc_release",
        checkpoint_activations: bool = False,
        reference: bool = False,
    ) -> None:
        super().__init__()
        if d_policy not in D_POLICIES:
            raise ValueError(f"d_policy {d_policy!r} unknown; choose one of {D_POLICIES}")
        if not 0.0 < lr_decay <= 1.0:
            raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay}; RVC uses 0.999875")
        if grad_clip is not None and grad_clip <= 0:
            raise ValueError(f"grad_clip must be positive or null, got {grad_clip}")
        if generator.enc_q is None:
            raise ValueError(
                "generator has no enc_q (an exported inference model); build it from a "
                "pretrained base with build_generator"
            )
        if generator.config.n_mels <= 0:
            raise ValueError("generator config has no n_mels; use a preset config")
        if reference and checkpoint_activations:
            raise ValueError(
                "reference=True runs the code before the memory levers; it cannot also "
                "checkpoint activations (set one of them to false)"
            )
        self.automatic_optimization = False
        # Checkpoints hold only trainable tensors; the base comes from the pretrained file and
        # on_load_checkpoint checks keys and base identity itself.
        self.strict_loading = False
        self.generator, self.discriminator = generator, discriminator
        self.lora, self.d_policy = lora, d_policy
        self.d_trained = d_policy == "trained"
        self.optimizer_g, self.optimizer_d = optimizer_g or rvc_adamw, optimizer_d or rvc_adamw
        self.lr_decay, self.c_mel, self.c_kl = float(lr_decay), float(c_mel), float(c_kl)
        self.grad_clip, self.log_audio = grad_clip, log_audio
        self.seed = seed
        self.mel_numerics = named_mel_numerics(mel_numerics)
        self._grad_norms: dict[str, torch.Tensor] = {}  # of the current step, by "g" / "d"
        self.val_quality = ValQuality(val_metric_items)
        if lora is not None:
            self.lora_targets = inject_lora(generator, lora)
        else:
            self.lora_targets = []
            generator.requires_grad_(True)
        # D has no dropout or norm layers, so train/eval mode does not matter for it.
        discriminator.requires_grad_(self.d_trained)
        # Counted as RVC's file holds it (weight_g + weight_v), before any folding.
        self.total_d = sum(p.numel() for p in discriminator.parameters())
        self.reference = bool(reference)
        # A frozen D never changes: weight norm's w = g * v / |v| is computed once instead of at
        # every call (bit-identical values). Its state dict then has `weight` keys, which is
        # fine: a frozen D is never saved (trainable_state, run.py save a trained D only).
        self.folded_d = [] if self.d_trained or reference else fold_weight_norm(discriminator)
        # A folded frozen D's convs keep only their inputs, which a checkpoint would keep as
        # well: checkpointing them would only add recompute. A trained D's convs also keep the
        # weight copies weight norm makes at every call, which a checkpoint does free.
        self.checkpointed = (
            checkpoint_blocks(generator, discriminator if self.d_trained else None)
            if checkpoint_activations
            else []
        )
        # Taken before any step: in full mode the base weights themselves move.
        self.base_id = base_identity(generator)
        self.preset = preset_name(generator.config)
        self.save_hyperparameters(
            {
                "mode": self.mode,
                "lora": None if lora is None else lora.to_dict(),
                "d_policy": d_policy,
                "lr_decay": self.lr_decay,
                "c_mel": self.c_mel,
                "c_kl": self.c_kl,
                "mel_numerics": mel_numerics,
                "grad_clip": grad_clip,
                "preset": self.preset,
                "f0": generator.f0,
                "checkpoint_activations": bool(checkpoint_activations),
                "reference": self.reference,
            }
        )

    @property
    def mode(self) -> str:
        return "full" if self.lora is None else "lora"

    @property
    def artifact_name(self) -> str:
        """The file name of what a run leaves: the adapter, or the whole generator when full."""
        return "generator.pth" if self.lora is None else "adapter.safetensors"

    # ---- parameters and state -------------------------------------------------------------

    def trainable_generator_parameters(self) -> dict[str, nn.Parameter]:
        """LoRA mode: adapter tensors + extras (adapter-file keys); full: every G parameter."""
        if self.lora is not None:
            return trainable_parameters(self.generator)
        return dict(self.generator.named_parameters())

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """What trains, under this module's state-dict names (``generator.dec.ups.0.lora_A``).

        LoRA: adapter tensors and extras; full: every generator tensor. Plus the discriminator's
        tensors when it is trained.
        """
        state = self.state_dict()
        if self.lora is not None:
            keys = [f"generator.{k}" for k in trainable_parameters(self.generator)]
        else:
            keys = [k for k in state if k.startswith("generator.")]
        if self.d_trained:
            keys += [k for k in state if k.startswith("discriminator.")]
        missing = [k for k in keys if k not in state]
        if missing:  # a wrapper whose state-dict names differ from its parameter names
            raise RuntimeError(f"trainable tensors missing from the state dict: {missing[:5]}")
        return {k: state[k] for k in keys}

    def count_parameters(self) -> dict[str, int]:
        """Element counts: ``total_g`` (every generator tensor, ``enc_q`` and adapters
        included), ``trainable_g``, ``total_d``, ``trainable_d`` and ``trainable`` (G + D)."""
        g = sum(p.numel() for p in self.trainable_generator_parameters().values())
        d = sum(p.numel() for p in self.discriminator.parameters()) if self.d_trained else 0
        return {
            "total_g": sum(p.numel() for p in self.generator.parameters()),
            "trainable_g": g,
            "total_d": self.total_d,
            "trainable_d": d,
            "trainable": g + d,
        }

    def save_adapter(self, path: str | os.PathLike[str]) -> Path:
        """Write what was learned: the LoRA adapter (``.safetensors``, with the base identity),
        or for full fine-tuning the whole generator as an RVC pretrained-layout
        ``{"model": state}`` ``.pth`` (the suffix is forced). Returns the path written."""
        if self.lora is not None:
            return save_lora_adapter(self.generator, path, base_identity=self.base_id)
        state = {k: v.detach().to("cpu").clone() for k, v in self.generator.state_dict().items()}
        return atomic_torch_save({"model": state}, Path(path).with_suffix(".pth"))

    def _record(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "lora_config": None if self.lora is None else self.lora.to_dict(),
            "targets": list(self.lora_targets),
            "base_identity": dict(self.base_id),
            "d_policy": self.d_policy,
            "preset": self.preset,
            "f0": self.generator.f0,
            "seed": self.seed,
            "mel_numerics": self.hparams["mel_numerics"],
        }

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["state_dict"] = self.trainable_state()
        checkpoint[CKPT_KEY] = self._record()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        theirs = checkpoint.get(CKPT_KEY)
        if not isinstance(theirs, dict):
            raise CheckpointError(
                "checkpoint has no 'rvc_lora' entry: not written by VoiceConversionModule; "
                "resume only from this project's training checkpoints"
            )
        mine = self._record()
        a, b = theirs.get("base_identity") or {}, mine["base_identity"]
        if a.get("sha256") != b["sha256"]:
            raise CheckpointError(
                f"checkpoint was trained on another base (sha256 {str(a.get('sha256'))[:16]}, "
                f"preset {theirs.get('preset')}) than this model ({b['sha256'][:16]}, preset "
                f"{mine['preset']}); build the model from the same pretrained_g"
            )
        theirs = {
            **theirs,
            "lora_config": _comparable_lora_config(theirs.get("lora_config")),
            # Checkpoints from before the choice existed were trained with RVC's release values.
            "mel_numerics": theirs.get("mel_numerics", "rvc_release"),
        }
        for key in ("mode", "d_policy", "f0", "targets", "lora_config", "mel_numerics"):
            if theirs.get(key) != mine[key]:
                raise CheckpointError(
                    f"checkpoint {key} differs from this run's ({_short(theirs.get(key))} vs "
                    f"{_short(mine[key])}); resume with the settings it was trained with"
                )
        expected, got = set(self.trainable_state()), set(checkpoint.get("state_dict", {}))
        if expected != got:
            raise CheckpointError(
                f"checkpoint tensors do not fit: missing {sorted(expected - got)[:5]}, "
                f"unexpected {sorted(got - expected)[:5]}"
            )
        if theirs.get("seed") is not None:  # the resumed run draws the noise the first one would
            self.seed = int(theirs["seed"])

    # ---- optimisation ---------------------------------------------------------------------

    def configure_optimizers(self):
        opt_g = self.optimizer_g(list(self.trainable_generator_parameters().values()))
        optimizers = [opt_g]
        if self.d_trained:
            optimizers.append(self.optimizer_d(list(self.discriminator.parameters())))
        for opt in optimizers:
            _plain_param_groups(opt)
        # Manual optimisation: Lightning keeps (and checkpoints) these but does not step them.
        scheds = [
            torch.optim.lr_scheduler.ExponentialLR(o, gamma=self.lr_decay) for o in optimizers
        ]
        return optimizers, scheds

    def on_fit_start(self) -> None:
        if self.seed is None:  # runs after on_load_checkpoint: a resumed seed is kept
            self.seed = torch.initial_seed()
        # ModelCheckpoint(every_n_train_steps) warns that under manual optimisation it saves the
        # weights after the step (Lightning-AI/pytorch-lightning#21239). That is what a resume
        # point must hold: the optimiser state and step counter are post-step as well.
        warnings.filterwarnings(
            "ignore", message="Using ModelCheckpoint with manual optimization", category=UserWarning
        )
        speakers = getattr(getattr(self.trainer, "datamodule", None), "speakers", None) or []
        n_emb = self.generator.config.spk_embed_dim
        if len(speakers) > n_emb:
            raise ConfigError(
                f"data has {len(speakers)} speaker folders but preset {self.preset} has "
                f"{n_emb} speaker embeddings (spk_embed_dim); use fewer folders or a larger preset"
            )
        counts = self.count_parameters()
        rank_zero_info(
            f"rvc-lora: mode={self.mode} d_policy={self.d_policy} preset={self.preset} "
            f"lora_targets={len(self.lora_targets)} parameters={counts}"
        )

    def _mel_of_spec(self, spec: torch.Tensor) -> torch.Tensor:
        c = self.generator.config
        return spec_to_mel(spec, c.sr, c.n_fft, c.n_mels, numerics=self.mel_numerics)

    def _mel_of_wav(self, wav: torch.Tensor) -> torch.Tensor:
        c = self.generator.config
        return mel_spectrogram(
            wav, c.sr, c.n_fft, c.hop_length, c.n_mels, numerics=self.mel_numerics
        )

    def _step_uncounted(self, optimizer: Any) -> None:
        # Lightning counts every LightningOptimizer.step() in manual optimisation as a global
        # step (Lightning-AI/pytorch-lightning#17958), so D + G steps would advance global_step,
        # max_steps and step-based checkpoints twice per batch. LightningOptimizer.step is the
        # counter hooks around strategy.optimizer_step; calling the latter for D keeps what the
        # precision plugin does (AMP unscale / skip-on-inf / scaler update,
        # on_before_optimizer_step) and leaves global_step counting G steps only.
        self.trainer.strategy.optimizer_step(optimizer.optimizer, closure=_no_closure, model=self)

    def _code_path(self) -> contextlib.AbstractContextManager:
        """The pre-issue activations and LoRA base weights when ``reference``, else nothing."""
        stack = contextlib.ExitStack()
        if self.reference:
            stack.enter_context(reference_activations())
            stack.enter_context(reference_base_weights())
        return stack

    def step_losses(
        self,
        batch: dict[str, torch.Tensor],
        d_step: Callable[[torch.Tensor], None] | None = None,
    ) -> StepLosses:
        """One training step's forward passes and losses, without backward or optimiser steps.

        The step's noise comes from the global RNGs: seed them first (``training_step`` calls
        ``seed_step``). When D trains, its loss (on the detached ŷ) is computed first and
        handed to ``d_step``, which may step D (as RVC: G's loss then sees the stepped D) and
        must turn D's ``requires_grad`` off if G's backward is not to reach D.

        Args:
            batch: a collated batch (``phone``, ``pitch``, ``pitchf``, ``spec``, ``wav``,
                ``lengths``, ``sid``).
            d_step: called with D's loss before G's losses are computed (D trained only).
        Returns:
            G's losses (total and unweighted terms) and D's loss (None when D is frozen).
        """
        with self._code_path():
            g = self.generator
            c = g.config
            hop, seg, lengths = c.hop_length, c.segment_size, batch["lengths"]
            pitch, pitchf = (batch["pitch"], batch["pitchf"]) if g.f0 else (None, None)
            y_hat, ids, _, z_mask, (_, z_p, m_p, logs_p, _, logs_q) = g(
                batch["phone"], lengths, pitch, pitchf, batch["spec"], lengths, batch["sid"]
            )  # y_hat [B, 1, seg*hop]; ids [B] start frames
            y_mel = slice_segments(self._mel_of_spec(batch["spec"]), ids, seg)  # [B, M, seg]
            y_hat_mel = self._mel_of_wav(y_hat)  # [B, M, seg], fp32 also under autocast
            y = slice_segments(batch["wav"], ids * hop, seg * hop)  # [B, 1, seg*hop]

            loss_d = None
            if self.d_trained:  # RVC: D steps first, on the detached fake
                real, fake, _, _ = self.discriminator(y, y_hat.detach())
                loss_d = discriminator_loss(real, fake)
                del real, fake
                if d_step is not None:
                    d_step(loss_d)
            rest = (y_mel, y_hat_mel, z_p, logs_q, m_p, logs_p, z_mask)
            if self.reference:
                _, fake, fmap_real, fmap_fake = self.discriminator(y, y_hat)
                losses = generator_total(
                    fake, fmap_real, fmap_fake, *rest, c_mel=self.c_mel, c_kl=self.c_kl
                )
            else:  # one member at a time: its real maps are freed before the next one runs
                losses = generator_total_streaming(
                    self.discriminator, y, y_hat, *rest, c_mel=self.c_mel, c_kl=self.c_kl
                )
        return StepLosses(losses, loss_d)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        # The step's noise (posterior sample, NSF noise, segment starts) is a function of
        # (seed, step): a run resumed in a new process draws what the uninterrupted one drew,
        # and validation (or anything else) between steps cannot shift it.
        seed_step(self.seed if self.seed is not None else 0, self.global_step)
        opts = _as_list(self.optimizers())
        opt_g, opt_d = opts[0], opts[1] if self.d_trained else None
        n = len(batch["lengths"])
        toggled = False

        def d_step(loss_d: torch.Tensor) -> None:
            nonlocal toggled
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(loss_d)
            self._step_uncounted(opt_d)
            self.toggle_optimizer(opt_g)  # no D gradients from the G loss
            toggled = True

        try:
            losses, loss_d = self.step_losses(batch, d_step if opt_d is not None else None)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(losses.total)
            opt_g.step()
        finally:
            if toggled:
                self.untoggle_optimizer(opt_g)
        # Everything is logged here, after both steps: on an epoch's first batch Lightning drops
        # what training_step logged before another hook (on_before_optimizer_step) logged.
        self.log("train/loss_mel", losses.mel.detach(), prog_bar=True, batch_size=n)
        scalars = {
            "train/loss_g": losses.total.detach(),
            "train/loss_gen": losses.gen.detach(),
            "train/loss_fm": losses.fm.detach(),
            "train/loss_kl": losses.kl.detach(),
            "train/lr": float(opt_g.optimizer.param_groups[0]["lr"]),
        }
        if loss_d is not None:
            scalars["train/loss_d"] = loss_d.detach()
        scalars.update({f"train/grad_norm_{k}": v for k, v in self._grad_norms.items()})
        self._grad_norms = {}
        self.log_dict(scalars, batch_size=n)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # The precision plugin calls this after AMP unscaled the gradients: the place to clip.
        raw = _as_list(self.optimizers(use_pl_optimizer=False))
        which = "d" if len(raw) > 1 and optimizer is raw[1] else "g"
        params = [p for grp in optimizer.param_groups for p in grp["params"] if p.grad is not None]
        if not params:
            return
        self._grad_norms[which] = self.clip_gradients_of(params)  # logged by training_step

    def clip_gradients_of(self, params: list[nn.Parameter]) -> torch.Tensor:
        """The total 2-norm of ``params``' gradients, which are clipped to ``grad_clip`` if set.

        Without ``grad_clip`` the gradients are left as they are: ``clip_grad_norm_(..., inf)``
        (the reference path) would still multiply every gradient by its clamped coefficient.
        """
        if self.grad_clip is not None or self.reference:
            max_norm = self.grad_clip if self.grad_clip is not None else float("inf")
            return torch.nn.utils.clip_grad_norm_(params, max_norm).detach()
        # The norm clip_grad_norm_ returns (its own helper, same foreach choice), no rescaling.
        return torch.nn.utils.get_total_norm([p.grad for p in params]).detach()

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Catch up decays that never ran. Resumed from a checkpoint written after the last batch
        # of an epoch (every_n_train_steps), Lightning 2.6 counts that epoch as finished without
        # calling on_train_epoch_end, and starts the next one without on_train_epoch_start.
        for sched in _as_list(self.lr_schedulers()):
            while sched.last_epoch < self.current_epoch:
                sched.step()

    def on_train_epoch_end(self) -> None:
        # RVC decays once per finished epoch: after epoch e, e + 1 decays in all. Counted, not
        # one step per call: resumed from a checkpoint written at an epoch's end, Lightning calls
        # this again for that epoch. And Lightning also ends an epoch cut short by max_steps
        # here; decaying then would leave a continued run one decay ahead.
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        if progress.ready < self.trainer.num_training_batches:
            return
        for sched in _as_list(self.lr_schedulers()):
            while sched.last_epoch < self.current_epoch + 1:
                sched.step()

    # ---- validation -----------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self.val_quality.reset()

    def on_validation_epoch_end(self) -> None:
        """``val/mcd`` (dB), ``val/f0_rmse`` (cents) and ``val/secs`` over the items scored
        this epoch."""
        if self.val_quality.limit == 0 or self.trainer.sanity_checking:
            return
        # Logged on every rank, NaN where nothing was defined, so DDP's reduction never waits
        # on a rank that had nothing to score; ModelCheckpoint treats NaN as the worst value.
        for key, value in self.val_quality.means().items():
            self.log(key, value, sync_dist=True)  # a float: Lightning puts it on our device

    def _val_forward(
        self, batch: dict[str, torch.Tensor], batch_idx: int
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Validation's conversion of a batch and its masked mel error, shared by
        :meth:`validation_step` and :meth:`score_items`.

        Returns:
            ``audio`` ``[B, 1, T_out]`` (``infer``'s output, prior noise seeded by
            ``batch_idx``), ``y_mel`` ``[B, M, T]``, ``y_hat_mel`` ``[B, M, T']``, ``diff`` (the
            absolute log-mel error on valid frames, 0 elsewhere) ``[B, M, t]`` and ``mask``
            ``[B, 1, t]`` with ``t = min(T, T')``.
        """
        g, lengths = self.generator, batch["lengths"]
        pitch, pitchf = (batch["pitch"], batch["pitchf"]) if g.f0 else (None, None)
        kind = self.device.type
        devices = [] if kind == "cpu" else [self.device]
        with torch.random.fork_rng(devices=devices, device_type="cuda" if kind == "cpu" else kind):
            # fixed prior noise each epoch; the training RNG streams are restored afterwards
            torch.manual_seed(VAL_SEED + batch_idx)
            audio, _, _ = g.infer(batch["phone"], lengths, pitch, pitchf, batch["sid"])
        y_hat_mel = self._mel_of_wav(audio)  # [B, M, T']
        y_mel = self._mel_of_spec(batch["spec"])  # [B, M, T]
        t = min(y_mel.shape[-1], y_hat_mel.shape[-1])
        mask = sequence_mask(lengths, t).unsqueeze(1).to(y_mel.dtype)  # [B, 1, t]
        diff = (y_mel[..., :t] - y_hat_mel[..., :t]).abs() * mask  # [B, M, t]
        return audio, y_mel, y_hat_mel, diff, mask

    def validation_step(
        self, batch: dict[str, torch.Tensor], batch_idx: int, dataloader_idx: int = 0
    ) -> torch.Tensor:
        """``val/loss_mel``: L1 between the target log-mel and the log-mel of ``infer``'s output
        (prior path, as used at conversion time) over the valid frames. The first items of the
        epoch are also scored for ``val/mcd``, ``val/f0_rmse`` and ``val/secs`` (logged at its
        end)."""
        lengths = batch["lengths"]
        audio, y_mel, y_hat_mel, diff, mask = self._val_forward(batch, batch_idx)
        loss = diff.sum() / (mask.sum() * y_mel.shape[1]).clamp(min=1.0)
        self.log("val/loss_mel", loss, sync_dist=True, prog_bar=True, batch_size=len(lengths))
        if not self.trainer.sanity_checking:
            c = self.generator.config
            self.val_quality.add_batch(audio, batch["wav"], lengths, c.hop_length, c.sr)
        if (
            self.log_audio
            and batch_idx == 0
            and dataloader_idx == 0
            and self.trainer.is_global_zero
        ):
            self._log_media(batch, audio, y_mel, y_hat_mel)
        return loss

    @torch.no_grad()
    def score_items(self, loader: Iterable[dict[str, torch.Tensor]], skip: int = 0) -> dict:
        """Scores of the current weights on a validation loader's items after the first
        ``skip`` (those validation monitored); on all of them when there are no others.

        The same conversion as :meth:`validation_step` (eval mode, prior noise seeded by the
        batch index, no gradients): ``mel_l1`` is the log-mel L1 over the scored items' valid
        frames (``val/loss_mel``'s maths), ``mcd_db``, ``f0_rmse_cents`` and ``secs`` are means
        over the items where each is defined (:func:`rvc_lora.training.quality.score_item`).

        Args:
            loader: batches as the validation loader yields them, in its order.
            skip: leading items left out (``val_metric_items``).
        Returns:
            ``{"mcd_db", "f0_rmse_cents", "secs", "mel_l1", "n_items", "items"}``, ``items``
            being ``"test"`` (items after ``skip``) or ``"all"``.
        """
        batches = list(loader)  # the item count decides what is scored before any is scored
        total = sum(len(b["lengths"]) for b in batches)
        first = skip if total > skip else 0
        c, was_training = self.generator.config, self.training
        diff_sum, weight, scores, seen = 0.0, 0.0, [], 0
        self.eval()
        try:
            for batch_idx, batch in enumerate(batches):
                batch = {
                    k: v.to(self.device) if torch.is_tensor(v) else v for k, v in batch.items()
                }
                audio, y_mel, _, diff, mask = self._val_forward(batch, batch_idx)
                for i, frames in enumerate(batch["lengths"].tolist()):
                    seen += 1
                    if seen <= first:
                        continue
                    diff_sum += float(diff[i].sum())
                    weight += float(mask[i].sum()) * y_mel.shape[1]
                    n = min(frames * c.hop_length, audio.shape[-1], batch["wav"].shape[-1])
                    conv = audio[i, 0, :n].float().cpu().numpy()
                    ref = batch["wav"][i, 0, :n].float().cpu().numpy()
                    scores.append(score_item(conv, ref, c.sr, self.val_quality.embeddings))
        finally:
            self.train(was_training)
        means = finite_means(scores)
        return {
            "mcd_db": means[VAL_MCD],
            "f0_rmse_cents": means[VAL_F0_RMSE],
            "secs": means[VAL_SECS],
            "mel_l1": diff_sum / weight if weight > 0 else math.nan,
            "n_items": len(scores),
            "items": "test" if first else "all",
        }

    def _log_media(self, batch, audio, y_mel, y_hat_mel) -> None:
        if not self.loggers:
            return
        frames, c = int(batch["lengths"][0]), self.generator.config
        n = frames * c.hop_length
        clips = {
            "target": batch["wav"][0, 0, :n].float().cpu().numpy(),
            "converted": audio[0, 0, :n].float().cpu().numpy(),
        }
        mels = [m[0, :, :frames].float().cpu().numpy() for m in (y_mel, y_hat_mel)]
        try:
            image = mel_image(mels, ["target", "converted"])
        except Exception as err:  # noqa: BLE001 - a picture must not end a run
            rank_zero_warn(f"could not draw the mel image ({type(err).__name__}: {err})")
            image = None
        log_media(self.loggers, self.global_step, c.sr, clips, image)


def _comparable_lora_config(value: Any) -> Any:
    """A checkpoint's LoRA config as this version writes it: earlier checkpoints stored the
    patterns as mappings, which compare unequal to today's ``[regex, value]`` lists."""
    if not isinstance(value, dict):
        return value
    try:
        return LoraConfig.from_dict(value).to_dict()
    except (LoraError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint lora_config is not valid ({exc})") from None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
