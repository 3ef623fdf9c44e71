"""VoiceConversionModule on the tiny preset: what trains, step counting, LR decay, metrics,
checkpoints and resume, builders. CPU only, synthetic batches."""

from __future__ import annotations

import copy
import csv
import math
import warnings

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins import MixedPrecision
from torch.utils.data import DataLoader

from rvc_lora.lora import (
    LoraConfig,
    LoraError,
    injection,
    read_adapter,
    trainable_parameters,
    unload_lora,
)
from rvc_lora.models import build_discriminator, build_synthesizer, export_rvc_model, get_preset
from rvc_lora.models.checkpoint import load_rvc_checkpoint
from rvc_lora.spectral import linear_spectrogram
from rvc_lora.training import build
from rvc_lora.training.callbacks import AdapterExport, ResumeCheckpoint
from rvc_lora.training.media import _render_numpy, log_media, mel_image
from rvc_lora.training.module import CKPT_KEY, VoiceConversionModule
from rvc_lora.utils.errors import CheckpointError, ConfigError

TINY = get_preset("tiny")
LR0, GAMMA = 1e-4, 0.999875

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers.*",
    "ignore:.*(LightningModule.)?self.log.*",
    "ignore:.*number of training batches.*",
    "ignore:You defined a `validation_step` but have no `val_dataloader`",
    "ignore:You're resuming from a checkpoint that ended before the epoch",  # list loaders
    "ignore:.*isinstance\\(treespec, LeafSpec\\).*:FutureWarning",  # lightning on torch 2.13
)


def make_batch(seed: int, batch: int = 2, frames: int = 60, f0: bool = True) -> dict:
    """A batch as VoiceDataModule's collate makes it, with a short second item (zero padded)."""
    g = torch.Generator().manual_seed(seed)
    hop = TINY.hop_length
    lengths = torch.tensor([frames, frames - 12])[:batch]
    t = torch.arange(frames * hop) / TINY.sr
    f = 110 + 110 * torch.rand(batch, 1, generator=g)
    wav = 0.3 * torch.sin(2 * math.pi * f * t) + 0.01 * torch.randn(
        batch, frames * hop, generator=g
    )
    for i, n in enumerate(lengths.tolist()):
        wav[i, n * hop :] = 0.0
    spec = linear_spectrogram(wav, TINY.n_fft, hop)  # [B, F, frames]
    return {
        "phone": torch.randn(batch, frames, TINY.feature_dim, generator=g),
        "pitch": torch.randint(1, 256, (batch, frames), generator=g),
        "pitchf": f.expand(batch, frames).clone() if f0 else torch.zeros(batch, frames),
        "spec": spec,
        "wav": wav.unsqueeze(1),
        "lengths": lengths,
        "wav_lengths": lengths * hop,
        "sid": torch.zeros(batch, dtype=torch.long),
    }


def loader(n: int, seed: int = 0) -> DataLoader:
    return DataLoader([make_batch(seed + i) for i in range(n)], batch_size=None)


def make_module(lora: bool = True, d_policy: str = "frozen", seed: int = 0, f0: bool = True, **kw):
    torch.manual_seed(seed)  # the "pretrained" base: same seed, same weights
    gen, disc = build_synthesizer("tiny", f0=f0), build_discriminator("tiny")
    cfg = LoraConfig(preset="decoder", rank=4, alpha=8) if lora else None
    return VoiceConversionModule(gen, disc, lora=cfg, d_policy=d_policy, **kw)


def trainer(**kw) -> L.Trainer:
    args = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    args.update(kw)
    return L.Trainer(**args)


def rvc_state(module: VoiceConversionModule) -> dict[str, torch.Tensor]:
    """The generator's tensors under RVC names (adapters dropped, extras kept)."""
    gen = copy.deepcopy(module.generator)
    if module.lora is not None:
        unload_lora(gen, merge=False)
    return {k: v.detach().clone() for k, v in gen.state_dict().items()}


def test_lora_with_frozen_d_trains_only_adapters() -> None:
    module = make_module()
    g_before, d_before = rvc_state(module), copy.deepcopy(module.discriminator.state_dict())
    tr = trainer(max_steps=3)
    tr.fit(module, loader(5))
    assert tr.global_step == 3
    extras = set(injection(module.generator).extras)  # {'emb_g.weight'}
    g_after = rvc_state(module)
    assert g_after.keys() == g_before.keys()
    changed = [k for k in g_before if not torch.equal(g_before[k], g_after[k])]
    assert set(changed) == extras
    lora_b = [p for k, p in trainable_parameters(module.generator).items() if k.endswith("lora_B")]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)
    for k, v in module.discriminator.state_dict().items():
        assert torch.equal(v, d_before[k]), k
    counts = module.count_parameters()
    assert counts["trainable"] == counts["trainable_g"] < counts["total_g"] / 10
    assert counts["trainable_d"] == 0


def test_full_mode_with_trained_d_changes_g_and_d() -> None:
    module = make_module(lora=False, d_policy="trained")
    g_before = rvc_state(module)
    d_before = copy.deepcopy(module.discriminator.state_dict())
    tr = trainer(max_steps=3)
    tr.fit(module, loader(5))
    assert tr.global_step == 3  # D steps are not counted: one global step per batch
    g_after, d_after = rvc_state(module), module.discriminator.state_dict()
    assert all(not torch.equal(g_before[k], g_after[k]) for k in g_before)  # enc_q included
    assert all(not torch.equal(d_before[k], d_after[k]) for k in d_before)
    metrics = tr.callback_metrics
    for name in ("train/loss_d", "train/grad_norm_d", "train/grad_norm_g", "train/loss_g"):
        assert torch.isfinite(metrics[name]), name
    counts = module.count_parameters()
    assert counts["trainable_g"] == counts["total_g"]
    assert counts["trainable_d"] == counts["total_d"] > 0


def test_every_step_logs_d_and_g_metrics_the_first_of_each_epoch_too(tmp_path) -> None:
    # Lightning drops what a hook logged on an epoch's first batch when another hook logs in
    # between (LightningModule.log resets the values of a hook name it sees anew there): D's
    # loss and gradient norm, logged before G's step, vanished from step 0 of every epoch.
    module = make_module(d_policy="trained", val_metric_items=0)
    csv_logger = CSVLogger(tmp_path, name="", version="")
    tr = trainer(max_epochs=2, logger=csv_logger, log_every_n_steps=1)
    tr.fit(module, loader(2))
    with open(tmp_path / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["train/loss_g"]]
    assert [int(r["step"]) for r in rows] == [0, 1, 2, 3]
    for row in rows:
        for name in ("train/loss_d", "train/grad_norm_d", "train/grad_norm_g", "train/loss_mel"):
            assert math.isfinite(float(row[name] or "nan")), (row["step"], name)


@pytest.mark.parametrize("every", [-1, 2.5])
def test_resume_checkpoint_refuses_a_bad_interval(every) -> None:
    with pytest.raises(ConfigError, match=r"^callbacks.last_checkpoint.every_n_train_steps must "):
        ResumeCheckpoint(every_n_train_steps=every)


def test_lr_decays_once_per_epoch_for_both_optimizers() -> None:
    module = make_module(d_policy="trained")
    tr = trainer(max_epochs=2)
    tr.fit(module, loader(2))
    assert tr.global_step == 4
    opts = module.optimizers(use_pl_optimizer=False)
    assert len(opts) == 2
    for opt in opts:
        assert abs(opt.param_groups[0]["lr"] - LR0 * GAMMA**2) < 1e-12
    assert abs(float(tr.callback_metrics["train/lr"]) - LR0 * GAMMA) < 1e-9  # logged in epoch 2


def test_metrics_are_logged_finite_and_media_reach_tensorboard(tmp_path) -> None:
    module = make_module()
    tb = TensorBoardLogger(tmp_path, name="tb", version=0)
    tr = trainer(max_epochs=1, logger=tb, log_every_n_steps=1)
    tr.fit(module, loader(2), loader(1, seed=100))
    metrics = tr.callback_metrics
    names = ["train/loss_" + s for s in ("g", "mel", "kl", "fm", "gen")]
    for name in [*names, "train/lr", "train/grad_norm_g", "val/loss_mel"]:
        assert name in metrics and torch.isfinite(metrics[name]), name
    assert "train/loss_d" not in metrics
    assert list((tmp_path / "tb" / "version_0").glob("events.out.tfevents.*"))


def test_validation_metric_is_deterministic_and_uses_infer() -> None:
    module = make_module()
    module.eval()
    tr = trainer()
    val = loader(1, seed=100)
    first = tr.validate(module, val, verbose=False)[0]["val/loss_mel"]
    second = tr.validate(module, val, verbose=False)[0]["val/loss_mel"]
    assert first == second and math.isfinite(first)


def test_nono_model_trains() -> None:
    module = make_module(f0=False)
    tr = trainer(max_steps=1)
    tr.fit(module, loader(1))
    assert tr.global_step == 1 and torch.isfinite(tr.callback_metrics["train/loss_mel"])


class _Capture(L.Callback):
    def on_train_start(self, trainer, pl_module) -> None:
        self.state = {k: v.clone() for k, v in pl_module.trainable_state().items()}


def test_checkpoint_holds_trainables_resumes_and_refuses_other_base(tmp_path) -> None:
    # Optimisers as train.yaml builds them: `betas` arrives as a ListConfig.
    adamw = {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": LR0, "betas": [0.8, 0.99]}
    module = make_module(optimizer_g=instantiate(adamw))
    tr = trainer(max_steps=2, max_epochs=-1)
    tr.fit(module, loader(4))
    path = tmp_path / "lora.ckpt"
    tr.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    keys = {f"generator.{k}" for k in trainable_parameters(module.generator)}
    assert set(ckpt["state_dict"]) == keys
    assert all(k.endswith(("lora_A", "lora_B", "emb_g.weight")) for k in keys)
    meta = ckpt[CKPT_KEY]
    assert meta["mode"] == "lora" and meta["targets"] == module.lora_targets
    assert meta["base_identity"] == module.base_id and meta["preset"] == "tiny" and meta["f0"]
    assert meta["lora_config"]["rank"] == 4
    full = make_module(lora=False)
    tr_full = trainer(max_steps=1)
    tr_full.fit(full, loader(1))
    tr_full.save_checkpoint(tmp_path / "full.ckpt")
    assert path.stat().st_size < (tmp_path / "full.ckpt").stat().st_size / 10

    resumed, capture = make_module(optimizer_g=instantiate(adamw)), _Capture()
    tr2 = trainer(max_steps=4, max_epochs=-1, callbacks=[capture])
    tr2.fit(resumed, loader(4), ckpt_path=path)
    assert tr2.global_step == 4
    for k, v in ckpt["state_dict"].items():
        assert torch.equal(capture.state[k], v), k

    with pytest.raises(CheckpointError, match="another base"):
        trainer(max_steps=4).fit(make_module(seed=1), loader(4), ckpt_path=path)
    with pytest.raises(CheckpointError, match="mode"):
        trainer(max_steps=4).fit(make_module(lora=False), loader(4), ckpt_path=path)


def test_full_trained_checkpoint_holds_g_and_d(tmp_path) -> None:
    module = make_module(lora=False, d_policy="trained")
    tr = trainer(max_steps=1, max_epochs=-1)
    tr.fit(module, loader(2))
    tr.save_checkpoint(tmp_path / "full.ckpt")
    ckpt = torch.load(tmp_path / "full.ckpt", map_location="cpu", weights_only=True)
    assert set(ckpt["state_dict"]) == set(module.state_dict())
    assert ckpt[CKPT_KEY]["mode"] == "full" and ckpt[CKPT_KEY]["lora_config"] is None
    # RVC names (weight_g / weight_v) load back into the parametrized weight norm
    resumed, capture = make_module(lora=False, d_policy="trained"), _Capture()
    tr2 = trainer(max_steps=2, max_epochs=-1, callbacks=[capture])
    tr2.fit(resumed, loader(2), ckpt_path=tmp_path / "full.ckpt")
    assert tr2.global_step == 2
    for k, v in ckpt["state_dict"].items():
        assert torch.equal(capture.state[k], v), k


def test_adapter_files_at_fit_end_and_on_new_best(tmp_path) -> None:
    module = make_module()
    export = AdapterExport(dirpath=tmp_path)
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss_mel", save_top_k=1)
    tr = trainer(max_epochs=1, enable_checkpointing=True, callbacks=[export, best])
    tr.fit(module, loader(1), loader(1, seed=100))
    assert (tmp_path / "adapter.safetensors").is_file()
    assert (tmp_path / "best_adapter.safetensors").is_file()
    adapter = read_adapter(tmp_path / "adapter.safetensors")
    assert adapter.matched == module.lora_targets
    assert adapter.base_identity["sha256"] == module.base_id["sha256"]


def test_full_fine_tuning_exports_the_generator_once_under_its_own_names(tmp_path) -> None:
    module = make_module(lora=False)
    export = AdapterExport(dirpath=tmp_path)
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/loss_mel", save_top_k=1)
    tr = trainer(max_epochs=1, enable_checkpointing=True, callbacks=[export, best])
    tr.fit(module, loader(1), loader(1, seed=100))
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "best_generator.pth",
        "generator.pth",
    ]
    assert export.final == tmp_path / "generator.pth"
    assert load_rvc_checkpoint(export.final).kind == "pretrained"


def test_full_mode_saves_rvc_pretrained_layout(tmp_path) -> None:
    module = make_module(lora=False)
    path = module.save_adapter(tmp_path / "adapter.safetensors")
    assert path.suffix == ".pth"
    loaded = load_rvc_checkpoint(path)
    assert (
        loaded.kind == "pretrained" and loaded.preset == "tiny" and loaded.model.enc_q is not None
    )


def test_amp_fp16_with_grad_scaler_steps_d_and_g_once_per_batch() -> None:
    # CPU float16 autocast + a real GradScaler: the path `precision="16-mixed"` takes on a GPU.
    module = make_module(lora=False, d_policy="trained")
    g_before = rvc_state(module)
    d_before = copy.deepcopy(module.discriminator.state_dict())
    plugin = MixedPrecision("16-mixed", "cpu", scaler=torch.amp.GradScaler("cpu", init_scale=4.0))
    tr = trainer(max_steps=2, max_epochs=-1, plugins=[plugin])
    tr.fit(module, loader(3))
    assert tr.global_step == 2
    assert plugin.scaler.get_scale() == 4.0  # no step was skipped for overflow
    g_after, d_after = rvc_state(module), module.discriminator.state_dict()
    assert all(not torch.equal(g_before[k], g_after[k]) for k in g_before)
    assert all(not torch.equal(d_before[k], d_after[k]) for k in d_before)
    # norms are measured after unscaling: the same order as in fp32, not x4
    assert 0 < float(tr.callback_metrics["train/grad_norm_d"]) < 100


@pytest.mark.parametrize("render", [mel_image, lambda mels, _: _render_numpy(mels)])
def test_mel_image_is_an_rgb_array(render) -> None:
    img = render([torch.randn(64, 30).numpy(), torch.randn(64, 20).numpy()], ["a", "b"])
    assert img.ndim == 3 and img.shape[-1] == 3 and img.dtype.name == "uint8"


class _BrokenTensorBoard(TensorBoardLogger):
    @property
    def experiment(self):
        raise RuntimeError("no tensorboard here")


def test_media_logging_failure_only_warns(tmp_path) -> None:
    wav = torch.zeros(160).numpy()
    with pytest.warns(UserWarning, match="could not log media"):
        log_media([_BrokenTensorBoard(tmp_path)], 0, 16000, {"target": wav}, None)


def test_make_lora_config() -> None:
    assert build.make_lora_config("full") is None
    cfg = build.make_lora_config("lora", rank=4, alpha=8, preset="decoder", targets=None)
    assert cfg.rank == 4 and cfg.targets  # targets: null -> the preset's
    with pytest.raises(LoraError, match="mode"):
        build.make_lora_config("qlora")
    with pytest.raises(LoraError, match="unknown keys"):
        build.make_lora_config("lora", preset="decoder", rnak=4)


def test_build_generator_and_discriminator_refuse_wrong_files(tmp_path, caplog) -> None:
    gen = build_synthesizer("tiny")
    torch.save({"model": gen.state_dict()}, tmp_path / "G.pth")
    loaded = build.build_generator("tiny", True, str(tmp_path / "G.pth"))
    assert loaded.enc_q is not None
    with pytest.raises(CheckpointError, match="preset tiny.*preset v2_40k"):
        build.build_generator("v2_40k", True, str(tmp_path / "G.pth"))
    with pytest.raises(CheckpointError, match="f0=True.*f0=False"):
        build.build_generator("tiny", False, str(tmp_path / "G.pth"))
    export_rvc_model(gen, tmp_path / "voice.pth")
    with pytest.raises(CheckpointError, match="exported inference model"):
        build.build_generator("tiny", True, str(tmp_path / "voice.pth"))
    with caplog.at_level("WARNING", logger="rvc_lora.training.build"):
        build.build_generator("tiny")
    assert "training from random init" in caplog.text

    torch.save({"model": build_discriminator("tiny").state_dict()}, tmp_path / "D.pth")
    assert len(build.build_discriminator_for("tiny", str(tmp_path / "D.pth")).discriminators) == 7
    with pytest.raises(CheckpointError, match="a tiny discriminator, but v1"):
        build.build_discriminator_for("v1", str(tmp_path / "D.pth"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build.build_discriminator_for("tiny")


def test_resume_reads_older_records_and_refuses_other_mel_numerics(tmp_path) -> None:
    module = make_module()
    tr = trainer(max_steps=1, max_epochs=-1)
    tr.fit(module, loader(2))
    path = tmp_path / "lora.ckpt"
    tr.save_checkpoint(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert ckpt[CKPT_KEY]["mel_numerics"] == "rvc_release"
    # Written before patterns were [regex, value] lists and before the mel choice was recorded.
    old = copy.deepcopy(ckpt)
    old[CKPT_KEY]["lora_config"].update(rank_pattern={}, alpha_pattern={})
    del old[CKPT_KEY]["mel_numerics"]
    torch.save(old, tmp_path / "old.ckpt")
    tr2 = trainer(max_steps=2, max_epochs=-1)
    tr2.fit(make_module(), loader(2), ckpt_path=tmp_path / "old.ckpt")
    assert tr2.global_step == 2

    with pytest.raises(
        CheckpointError, match=r"mel_numerics differs .*'rvc_release' vs 'rvc_main'"
    ):
        trainer(max_steps=2).fit(make_module(mel_numerics="rvc_main"), loader(2), ckpt_path=path)
    bad = copy.deepcopy(ckpt)
    bad[CKPT_KEY]["lora_config"]["rank"] = "eight"
    torch.save(bad, tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointError, match="checkpoint lora_config is not valid"):
        trainer(max_steps=2).fit(make_module(), loader(2), ckpt_path=tmp_path / "bad.ckpt")
