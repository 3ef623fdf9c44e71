"""Kill and resume with everything that carries state: a trained discriminator (two optimisers,
two LR schedules), fp16 AMP with a GradScaler, validation and best-adapter selection.

In-process (tiny preset, synthetic batches, a resumable loader as VoiceDataModule's): a fit of
``STEPS`` steps against a fit killed (an exception, nothing saved on the way out) right after
``last.ckpt`` was written, resumed by new objects from that file. CPU fp16 autocast with a real
``GradScaler("cpu")`` is the path ``trainer=gpu`` (``precision: 16-mixed``) takes.
"""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins import MixedPrecision
from safetensors import safe_open
from torch.utils.data import Dataset

from rvc_lora.training.callbacks import AdapterExport, ResumeCheckpoint
from rvc_lora.utils.determinism import EpochSampler, ItemKey, ResumableLoader
from tests.training.test_module import loader, make_batch, make_module, trainer

BATCHES = 3  # an epoch
STEPS = 8  # two whole epochs (two validations, two LR decays) and two batches of a third
INIT_SCALE = 2.0**-4  # grows 2x every 2 updates (D and G: one step): 16 after STEPS, no overflow
STOPS = {  # how the first run ends: (hook that kills it | None, step, step of its last.ckpt)
    "mid_epoch": ("on_train_batch_start", 5, 5),
    # after the epoch's last batch, before its validation: that save moved to the next epoch
    "epoch_end": ("on_validation_start", 6, 5),
    # after epoch 1's validation and LR decay, and the first batch of epoch 2
    "after_epoch_end": ("on_train_batch_start", 7, 7),
    # max_steps cuts epoch 1 short; last.ckpt of its last step; continued to STEPS
    "max_steps": (None, 5, 5),
    # max_steps ends the run with epoch 1; last.ckpt at the end of fit; continued to STEPS
    "max_steps_at_epoch_end": (None, 6, 6),
}

pytestmark = [
    pytest.mark.slow,  # 2 fits of 5-8 steps each per case
    pytest.mark.filterwarnings(
        "ignore:.*does not have many workers.*",
        "ignore:.*(LightningModule.)?self.log.*",
        "ignore:.*isinstance\\(treespec, LeafSpec\\).*:FutureWarning",  # lightning on torch 2.13
        "ignore:Be aware that when using `ckpt_path`, callbacks",
        "ignore:.*number of training batches.*",
        "ignore:.*Detected call of `lr_scheduler.step\\(\\)` before `optimizer.step\\(\\)`",
    ),
]


class _Batches(Dataset):
    """Item i is a whole synthetic batch; the loader hands out one item per step."""

    def __init__(self, n: int) -> None:
        self.batches = [make_batch(i) for i in range(n)]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, key: ItemKey) -> dict:
        return self.batches[key.index]


def _train_loader() -> ResumableLoader:
    return ResumableLoader(
        _Batches(BATCHES), batch_size=1, sampler=EpochSampler(BATCHES, seed=3), collate_fn=_one
    )


def _one(items: list[dict]) -> dict:
    return items[0]


class _Killed(Exception):
    pass


class _Kill(L.Callback):
    def __init__(self, hook: str, step: int) -> None:
        def die(trainer, *args) -> None:
            if trainer.global_step == step and not trainer.sanity_checking:
                raise _Killed

        setattr(self, hook, die)


class _Record(L.Callback):
    """Losses of every step and the val metrics of every validation, keyed by global step."""

    def __init__(self) -> None:
        self.steps: dict[int, tuple[float, float, float, float]] = {}
        self.vals: dict[int, float] = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        m = trainer.callback_metrics
        lr = pl_module.optimizers()[0].optimizer.param_groups[0]["lr"]
        scale = trainer.precision_plugin.scaler.get_scale()
        losses = float(m["train/loss_g"]), float(m["train/loss_d"])
        self.steps[trainer.global_step] = (*losses, lr, scale)

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self.vals[trainer.global_step] = float(trainer.callback_metrics["val/loss_mel"])


def _plugin() -> MixedPrecision:
    # A scale that grows during the run: a scaler restarted from its initial state after the
    # resume shows at once. (Grown past 256, the tiny G's fp16 gradients overflow and its steps
    # are skipped.)
    scaler = torch.amp.GradScaler("cpu", init_scale=INIT_SCALE, growth_interval=2)
    return MixedPrecision("16-mixed", "cpu", scaler=scaler)


def _fit(
    out: Path,
    ckpt_path: Path | None = None,
    kill: tuple[str, int] | None = None,
    max_steps: int = STEPS,
    every: int = 1,
):
    # lr 3e-3: validations far enough apart for the best one to be a real choice
    adamw = functools.partial(torch.optim.AdamW, lr=3e-3, betas=(0.8, 0.99), eps=1e-9)
    module = make_module(
        d_policy="trained", val_metric_items=0, optimizer_g=adamw, optimizer_d=adamw
    )
    record, plugin = _Record(), _plugin()
    callbacks = [
        record,
        AdapterExport(),
        ModelCheckpoint(dirpath=out / "best", monitor="val/loss_mel", save_top_k=1),
        ResumeCheckpoint(dirpath=out, every_n_train_steps=every),
    ]
    if kill is not None:
        callbacks.append(_Kill(*kill))
    tr = trainer(
        default_root_dir=out,
        max_steps=max_steps,
        max_epochs=-1,
        plugins=[plugin],
        enable_checkpointing=True,
        callbacks=callbacks,
        num_sanity_val_steps=0,
    )
    try:
        tr.fit(module, _train_loader(), loader(1, seed=100), ckpt_path=ckpt_path)
    except _Killed:
        pass
    return module, tr, plugin, record


def _optimizer_tensors(tr: L.Trainer) -> list[dict[str, torch.Tensor]]:
    out = []
    for opt in tr.optimizers:
        state = opt.state_dict()["state"]
        out.append({f"{i}.{k}": v for i, s in state.items() for k, v in s.items()})
    return out


def _adapter(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    # Not the bytes: safetensors writes the metadata in a random order (a Rust HashMap).
    with safe_open(path, "pt") as f:
        return f.metadata(), {k: f.get_tensor(k) for k in f.keys()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return _fit(tmp_path_factory.mktemp("whole"))


@pytest.mark.parametrize("how", list(STOPS))
def test_stopped_gan_amp_run_resumes_like_an_uninterrupted_one(tmp_path, uninterrupted, how):
    whole, tr_whole, plugin_whole, rec_whole = uninterrupted
    assert sorted(rec_whole.vals) == [3, 6] and tr_whole.global_step == STEPS
    assert len(set(rec_whole.vals.values())) == 2  # the weights moved enough to show

    hook, stop, saved = STOPS[how]
    first = tmp_path / "b"
    if hook is None:
        _, tr_first, _, rec_first = _fit(first, max_steps=stop, every=100)
    else:
        _, tr_first, _, rec_first = _fit(first, kill=(hook, stop))
        assert not (first / "adapter.safetensors").exists()  # it died
    assert tr_first.global_step == stop
    last = first / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == saved
    # Two optimisers and two schedules (G, D), D's tensors, and the scaler under the plugin's name.
    assert len(ckpt["optimizer_states"]) == 2 and len(ckpt["lr_schedulers"]) == 2
    assert any(k.startswith("discriminator.") for k in ckpt["state_dict"])
    assert ckpt["MixedPrecision"]["scale"] == rec_whole.steps[saved][3] > INIT_SCALE

    resumed, tr_resumed, plugin_resumed, rec_resumed = _fit(first, ckpt_path=last)
    assert tr_resumed.global_step == STEPS  # G steps only

    # Every step's losses, LR and loss scale, and every validation, as the uninterrupted run.
    steps = {s: v for s, v in rec_first.steps.items() if s <= saved} | rec_resumed.steps
    assert steps == rec_whole.steps
    vals = {s: v for s, v in rec_first.vals.items() if s <= saved} | rec_resumed.vals
    assert vals == rec_whole.vals
    best_whole, best_resumed = tr_whole.checkpoint_callback, tr_resumed.checkpoint_callback
    assert best_whole.best_model_score == best_resumed.best_model_score
    assert Path(best_whole.best_model_path).name == Path(best_resumed.best_model_path).name
    for name in ("best_adapter.safetensors", "adapter.safetensors"):
        (meta_a, a), (meta_b, b) = (
            _adapter(Path(tr_whole.default_root_dir) / name),
            _adapter(first / name),
        )
        assert meta_a == meta_b and set(a) == set(b), name
        assert all(torch.equal(a[k], b[k]) for k in a), name

    assert plugin_resumed.scaler.state_dict() == plugin_whole.scaler.state_dict()
    for a, b in zip(tr_whole.lr_scheduler_configs, tr_resumed.lr_scheduler_configs):
        assert a.scheduler.state_dict() == b.scheduler.state_dict()
        assert a.scheduler.last_epoch == 2  # one decay per finished epoch
    for which, (a, b) in zip(
        "GD", zip(_optimizer_tensors(tr_whole), _optimizer_tensors(tr_resumed))
    ):
        assert set(a) == set(b) and a, which
        for k in a:  # Adam moments and step counts of both optimisers
            assert torch.equal(a[k], b[k]), (which, k)
    wa, wb = whole.trainable_state(), resumed.trainable_state()
    assert set(wa) == set(wb)
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
