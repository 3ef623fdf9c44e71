"""EarlyStop: stops at the right validation, keeps the best adapter, records why."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file
from torch.utils.data import DataLoader, TensorDataset

from rvc_lora.training.callbacks import AdapterExport, StepTimer
from rvc_lora.training.early_stop import EarlyStop
from rvc_lora.utils.errors import ConfigError
from tests.training.conftest import compose_train

pytestmark = pytest.mark.filterwarnings(
    "ignore:.*does not have many workers.*",
    "ignore:You defined a `validation_step` but have no `val_dataloader`",
    "ignore:.*isinstance\\(treespec, LeafSpec\\).*:FutureWarning",  # lightning on torch 2.13
)

NAN = math.nan


class _Scripted(L.LightningModule):
    """One ``nn.Linear`` "adapter"; validation ``i`` logs ``script[i]`` under ``key`` and keeps
    a snapshot of the weights it was scored with."""

    artifact_name = "adapter.pt"

    def __init__(self, script: list[float], key: str = "val/mcd") -> None:
        super().__init__()
        self.adapter = torch.nn.Linear(2, 1)
        self.frozen = torch.nn.Parameter(torch.ones(3), requires_grad=False)
        self.script, self.key = script, key
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}
        self.n_val = 0

    def training_step(self, batch, batch_idx):
        (x,) = batch  # [B, 2]
        return (self.adapter(x) - 3.0).pow(2).mean()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.log(self.key, self.script[self.n_val])
        self.n_val += 1
        self.snapshots[self.global_step] = {
            k: v.detach().clone() for k, v in self.adapter.state_dict().items()
        }

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

    def save_adapter(self, path) -> Path:
        torch.save({k: v.clone() for k, v in self.adapter.state_dict().items()}, path)
        return Path(path)


def _fit(
    tmp_path: Path,
    script: list[float],
    stop: EarlyStop,
    every: int = 1,
    max_steps: int = 40,
    key: str = "val/mcd",
    extra: tuple[L.Callback, ...] = (),
    sanity: int = 0,
) -> tuple[_Scripted, L.Trainer]:
    torch.manual_seed(0)
    module = _Scripted(script, key)
    data = TensorDataset(torch.randn(12, 2))
    trainer = L.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        val_check_interval=every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=sanity,
        logger=False,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp_path,
        callbacks=[stop, *extra],
    )
    trainer.fit(module, DataLoader(data, batch_size=2), DataLoader(data, batch_size=12))
    return module, trainer


def test_min_delta_small_gains_do_not_reset_the_count(tmp_path) -> None:
    # best 5.0@1, 4.0@2, 3.95 and 3.92 are within 0.1 (count 1, 2), 3.5@5 resets,
    # 3.6 / 3.45 / 3.41 are not 0.1 better than 3.5: the third stops at step 8.
    script = [5.0, 4.0, 3.95, 3.92, 3.5, 3.6, 3.45, 3.41, 1.0, 1.0]
    stop = EarlyStop(patience=3, min_delta=0.1)
    module, trainer = _fit(tmp_path, script, stop, sanity=2)  # sanity checks are not counted
    assert trainer.global_step == 8 and module.n_val == 8
    s = stop.summary()
    assert (s["best"], s["best_step"], s["stopped_step"]) == (3.5, 5, 8)
    assert s["reason"] == (
        "val/mcd did not improve by more than 0.1 in 3 validations after step 5 (best 3.5)"
    )
    assert set(s) == {
        "monitor",
        "mode",
        "patience",
        "min_delta",
        "best",
        "best_step",
        "best_wall_s",
        "stopped_step",
        "reason",
    }
    assert (s["monitor"], s["mode"], s["patience"], s["min_delta"]) == ("val/mcd", "min", 3, 0.1)
    assert s["best_wall_s"] is None  # no StepTimer among the callbacks


def test_mode_max_equal_is_not_better_and_validation_every_two_steps(tmp_path) -> None:
    # validations at steps 2, 4, ...: best 0.75@6, then 0.6, 0.65, 0.75 (equal): stop at 12
    script = [0.5, 0.7, 0.75, 0.6, 0.65, 0.75, 0.9]
    stop = EarlyStop(monitor="val/secs", mode="max", patience=3)
    timer = StepTimer()
    _, trainer = _fit(tmp_path, script, stop, every=2, key="val/secs", extra=(timer,))
    assert trainer.global_step == 12
    assert (stop.best, stop.best_step, stop.stopped_step) == (0.75, 6, 12)
    assert stop.reason() == "val/secs did not improve in 3 validations after step 6 (best 0.75)"
    assert stop.best_wall_s is not None and 0.0 <= stop.best_wall_s <= timer.elapsed()


def test_nan_never_counts_as_best(tmp_path) -> None:
    stop = EarlyStop(patience=2)
    _, trainer = _fit(tmp_path, [NAN, 5.0, NAN, NAN, 1.0], stop)
    assert trainer.global_step == 4
    assert (stop.best, stop.best_step, stop.stopped_step) == (5.0, 2, 4)

    never = EarlyStop(patience=2, restore_best=True)
    module, trainer = _fit(tmp_path, [NAN, math.inf, 1.0], never)
    assert trainer.global_step == 2 and never.best is None and never.best_state is None
    assert never.reason() == "val/mcd was not a finite number in 2 validations (stopped at step 2)"
    assert torch.equal(module.adapter.weight, module.snapshots[2]["weight"])  # nothing restored


def test_patience_none_never_stops(tmp_path) -> None:
    stop = EarlyStop()
    _, trainer = _fit(tmp_path, [3.0, 4.0, 5.0, 6.0, 7.0, 8.0], stop, max_steps=6)
    assert trainer.global_step == 6
    s = stop.summary()
    assert (s["best"], s["best_step"], s["stopped_step"], s["patience"]) == (3.0, 1, None, None)
    assert s["reason"] == "ran to max_steps; best at step 1"
    assert stop.wait == 5


@pytest.mark.parametrize("restore", [True, False])
def test_restore_best_puts_back_the_best_weights_before_the_export(tmp_path, restore) -> None:
    script = [5.0, 4.0, 4.5, 4.2, 4.1, 0.0]
    stop = EarlyStop(patience=3, restore_best=restore)
    export = AdapterExport(dirpath=tmp_path, best_filename="")
    module, trainer = _fit(tmp_path, script, stop, extra=(export,))
    assert trainer.global_step == 5 and stop.best_step == 2
    best, last = module.snapshots[2], module.snapshots[5]
    assert not torch.equal(best["weight"], last["weight"])  # the test can tell them apart
    kept = best if restore else last
    for k, v in module.adapter.state_dict().items():
        assert torch.equal(v, kept[k])
    written = torch.load(export.final, weights_only=True)
    for k, v in written.items():
        assert torch.equal(v, kept[k])
    assert torch.equal(module.frozen, torch.ones(3))
    assert (stop.best_state is not None) == restore  # the copy is kept only when it is used
    if restore:
        assert set(stop.best_state) == {"adapter.weight", "adapter.bias"}
        assert module.adapter.weight.requires_grad  # in place: still the same parameter


def test_restore_best_must_come_before_the_adapter_export(tmp_path) -> None:
    stop = EarlyStop(patience=3, restore_best=True)
    with pytest.raises(ConfigError, match="list early_stop before adapter_export"):
        trainer = L.Trainer(
            max_steps=2, logger=False, accelerator="cpu", enable_progress_bar=False,
            enable_checkpointing=False, callbacks=[AdapterExport(dirpath=tmp_path), stop],
            default_root_dir=tmp_path,
        )  # fmt: skip
        trainer.fit(_Scripted([1.0]), DataLoader(TensorDataset(torch.randn(4, 2)), batch_size=2))


def test_missing_monitor_at_the_first_validation_names_the_keys(tmp_path) -> None:
    with pytest.raises(ConfigError) as err:
        _fit(tmp_path, [1.0, 2.0], EarlyStop(monitor="val/mdc"), key="val/mcd")
    message = str(err.value)
    assert "'val/mdc'" in message and "val/mcd" in message and "\n" not in message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mode": "avg"},
        {"patience": 0},
        {"patience": -2},
        {"patience": 1.5},
        {"patience": True},
        {"patience": "3"},
        {"min_delta": -0.1},
        {"min_delta": NAN},
        {"monitor": ""},
        {"restore_best": "yes"},
    ],
)
def test_bad_arguments_raise_one_line(kwargs) -> None:
    with pytest.raises(ValueError, match=r"^callbacks\.early_stop\.\w+ must [^\n]*$"):
        EarlyStop(**kwargs)


def test_state_round_trip_continues_the_count_and_the_best(tmp_path) -> None:
    first = EarlyStop(patience=3, restore_best=True)
    _fit(tmp_path, [5.0, 4.0, 4.5, 4.6, 0.0], first, max_steps=4)  # wait 2 of 3, best 4.0@2
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = EarlyStop(patience=3, restore_best=True)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.summary() == first.summary()
    assert resumed.state_key == first.state_key == "EarlyStop{'monitor': 'val/mcd', 'mode': 'min'}"
    assert (resumed.wait, resumed.n_validations) == (2, 4)
    for k, v in first.best_state.items():
        assert torch.equal(resumed.best_state[k], v)
    # One more validation without a gain is the third: the resumed run stops at once, and the
    # weights it puts back are the first run's best.
    module, trainer = _fit(tmp_path, [4.4, 0.0], resumed, max_steps=10)
    assert trainer.global_step == 1 and resumed.stopped_step == 1 and resumed.best_step == 2
    for k, v in module.adapter.state_dict().items():
        assert torch.equal(v, first.best_state[f"adapter.{k}"])


# ---- the real run path --------------------------------------------------------------------


def _adapter_tensors(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


@pytest.mark.slow
def test_train_with_patience_one_exports_the_best_adapter(tmp_path, shared_root, voice_dir):
    from rvc_lora.training.run import train

    cfg = compose_train(
        shared_root,
        tmp_path,
        voice_dir,
        [
            "trainer.max_epochs=-1",
            "trainer.max_steps=12",
            "trainer.val_check_interval=1",
            "trainer.check_val_every_n_epoch=null",
            "trainer.log_every_n_steps=1",
            "data.max_frames=60",
            "train.lr=5e-3",
            "callbacks.early_stop.patience=1",
            "callbacks.early_stop.restore_best=true",
        ],
    )
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    with open(tmp_path / "csv" / "metrics.csv", newline="") as f:
        mcd = [float(r["val/mcd"]) for r in csv.DictReader(f) if r["val/mcd"]]
    # Validation n runs after step n (the CSV's own step column counts Lightning's
    # batches_that_stepped, one behind there). Patience 1: the run ends at the first
    # validation that is not better than the best so far.
    curve = list(enumerate(mcd, start=1))
    best, expected_stop = math.inf, None
    for step, value in curve:
        if value < best:
            best = value
        else:
            expected_stop = step
            break
    assert expected_stop is not None, curve  # 12 steps of lr 5e-3 on a tiny model wobble
    assert metrics["global_step"] == expected_stop, curve
    summary = metrics["early_stop"]
    assert (summary["stopped_step"], summary["best"]) == (expected_stop, best), summary
    assert summary["best_step"] == min(curve[: expected_stop - 1], key=lambda c: c[1])[0]
    final = _adapter_tensors(tmp_path / "adapter.safetensors")
    kept = _adapter_tensors(tmp_path / "best_adapter.safetensors")  # the best val/mcd's weights
    assert set(final) == set(kept)
    for k in final:
        assert torch.equal(final[k], kept[k]), k
