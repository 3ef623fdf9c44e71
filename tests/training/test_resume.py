"""A run killed mid-epoch and resumed from last.ckpt ends where an uninterrupted run ends.

Fast: the resumable batch order (``EpochSampler``, ``ResumableLoader``) alone and under a toy
Lightning fit, and random crops as a function of (seed, epoch, index). Slow: ``python train.py``
killed with SIGKILL, resumed with ``ckpt_path=.../last.ckpt``, compared tensor by tensor.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file
from torch.utils.data import Dataset

from rvc_lora.features.hubert_tiny import ensure_tiny_encoder
from rvc_lora.utils.cli import CONFIG_DIR
from rvc_lora.utils.determinism import EpochSampler, ItemKey, ResumableLoader, step_seed
from rvc_lora.utils.errors import CheckpointError
from tests.training.conftest import FAST, compose_train, make_voice_folder

REPO = Path(CONFIG_DIR).parent


class _Keys(Dataset):
    """Items are their own keys: a batch shows which (index, epoch) pairs it holds."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, key: ItemKey) -> tuple[int, int]:
        return key.index, key.epoch


def _loader(n: int = 10, batch_size: int = 3, seed: int = 7) -> ResumableLoader:
    return ResumableLoader(
        _Keys(n), batch_size=batch_size, sampler=EpochSampler(n, seed), collate_fn=list
    )


def _epoch(loader: ResumableLoader, epoch: int) -> list[list[tuple[int, int]]]:
    loader.sampler.set_epoch(epoch)
    return list(loader)


def test_order_is_a_function_of_seed_and_epoch() -> None:
    a, b = EpochSampler(50, seed=3), EpochSampler(50, seed=3)
    assert a.order(2) == b.order(2) and sorted(a.order(2)) == list(range(50))
    assert a.order(0) != a.order(1) and a.order(0) != EpochSampler(50, seed=4).order(0)
    b.order(5)  # no hidden state: drawing other epochs first changes nothing
    assert a.order(3) == b.order(3)
    a.set_epoch(4)
    assert list(a) == [ItemKey(i, 4) for i in a.order(4)] and len(a) == 50
    assert EpochSampler(5, seed=3, shuffle=False).order(9) == [0, 1, 2, 3, 4]
    assert step_seed(1, 2) != step_seed(2, 1) and step_seed(1234, 10**9) < 2**63


def test_ddp_ranks_share_one_order() -> None:
    whole = EpochSampler(11, seed=3).order(2)
    ranks = [EpochSampler(11, seed=3, num_replicas=3, rank=r) for r in range(3)]
    assert [len(r) for r in ranks] == [4, 4, 4]  # 11 items padded to 12
    padded = whole + whole[:1]
    assert [r.order(2) for r in ranks] == [padded[r::3] for r in range(3)]


@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_loader_resumes_after_k_batches_in_another_process(k: int) -> None:
    reference = _loader()
    whole = [_epoch(reference, e) for e in range(3)]
    assert whole[0] != whole[1] and len(reference) == 4  # 10 items in batches of 3, last of 1

    first = _loader()  # the killed run: epoch 1 stopped after k batches
    _epoch(first, 0)
    first.sampler.set_epoch(1)
    it = iter(first)
    seen = [next(it) for _ in range(k)]
    state = first.state_dict()  # k == 0: the pass has not begun, epoch 0 is complete
    assert (state["epoch"], state["batches"]) == ((1, k) if k else (0, len(first)))

    resumed = _loader()  # a new process: new objects, the checkpointed state only
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state  # loaded but not iterated: same position
    assert seen + _epoch(resumed, 1) == whole[1]
    assert resumed.state_dict()["batches"] == len(resumed)
    assert _epoch(resumed, 2) == whole[2]  # the skip belonged to epoch 1 only


def test_state_taken_at_epoch_end_starts_the_next_epoch_whole() -> None:
    first = _loader()
    _epoch(first, 0)
    resumed = _loader()
    resumed.load_state_dict(first.state_dict())  # (epoch 0, all batches)
    assert _epoch(resumed, 1) == _epoch(_loader(), 1)


def test_loader_refuses_a_state_of_other_data() -> None:
    state = _loader().state_dict()
    two_ranks = ResumableLoader(_Keys(10), batch_size=3, sampler=EpochSampler(10, 7, True, 2, 0))
    for other in (_loader(n=11), _loader(batch_size=2), _loader(seed=8), two_ranks):
        with pytest.raises(CheckpointError, match="other training data"):
            other.load_state_dict(state)


class _Recorder(L.LightningModule):
    """A linear model that records the keys of every training batch it sees."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen: list[list[tuple[int, int]]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append([tuple(x) for x in batch.tolist()])
        return self.layer(batch[:, :1].float()).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _toy_trainer(tmp_path: Path, max_steps: int, **kw) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps,
        max_epochs=-1,
        logger=False,
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kw,
    )


@pytest.mark.filterwarnings(
    "ignore:.*does not have many workers.*",
    "ignore:Be aware that when using `ckpt_path`, callbacks",  # no checkpoints after the resume
    "ignore:.*isinstance\\(treespec, LeafSpec\\).*:FutureWarning",  # lightning on torch 2.13
)
def test_lightning_checkpoints_the_loader_and_continues_mid_epoch(tmp_path) -> None:
    def loader() -> ResumableLoader:  # 10 items, batches of 3: 4 batches an epoch
        return ResumableLoader(
            _Keys(10), batch_size=3, sampler=EpochSampler(10, seed=5), collate_fn=torch.tensor
        )  # [B, 2] (index, epoch) rows

    whole = _Recorder()
    _toy_trainer(tmp_path / "a", 10).fit(whole, loader())
    stopped = _Recorder()
    every = ModelCheckpoint(
        dirpath=tmp_path / "b", save_top_k=0, save_last=True, every_n_train_steps=6
    )  # step 6: batch 2 of epoch 1
    _toy_trainer(tmp_path / "b", 6, callbacks=[every]).fit(stopped, loader())
    ckpt = torch.load(tmp_path / "b" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": 1, "batches": 2, "num_items": 10, "num_replicas": 1, "batch_size": 3, "seed": 5}
    ]
    resumed = _Recorder()
    _toy_trainer(tmp_path / "c", 10).fit(resumed, loader(), ckpt_path=tmp_path / "b" / "last.ckpt")
    assert stopped.seen + resumed.seen == whole.seen


def test_crops_are_a_function_of_seed_epoch_and_index(tmp_path, shared_root, voice_dir) -> None:
    cfg = compose_train(shared_root, tmp_path, voice_dir, ["data.max_frames=60"])
    ensure_tiny_encoder(cfg.features)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    ds = dm.train_dataloader().dataset
    again = dm.train_dataloader().dataset
    assert ds.max_frames == 60 and ds.random_crop
    for i in range(len(ds)):
        assert torch.equal(ds[ItemKey(i, 3)]["wav"], again[ItemKey(i, 3)]["wav"])
        assert torch.equal(ds[i]["wav"], ds[ItemKey(i, 0)]["wav"])
    moved = [
        not torch.equal(ds[ItemKey(i, 0)]["wav"], ds[ItemKey(i, 1)]["wav"]) for i in range(len(ds))
    ]
    assert any(moved)  # another epoch, another window


# ---- end to end: python train.py, SIGKILL, ckpt_path=last.ckpt --------------------------------

MAX_STEPS, EVERY = 12, 2  # 4 voice files: 6 training slices, 3 batches of 2 an epoch
PER_EPOCH = 3
KILL_AT = {  # which last.ckpt to kill on; both come after one validation and one LR decay
    "mid_epoch": lambda step: step > PER_EPOCH and step % PER_EPOCH == 2,
    # step 6 is due on epoch 1's last batch; ResumeCheckpoint writes it after the first batch
    # of epoch 2 (step 7), with epoch 1's validation and LR decay in between
    "epoch_end": lambda step: step == 2 * PER_EPOCH + 1,
}


def _train_cmd(voice: Path, root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "train.py",
        f"data.input_dir={voice}",
        f"paths.root_dir={root}",
        f"hydra.run.dir={run_dir}",
        f"trainer.max_steps={MAX_STEPS}",
        "trainer.max_epochs=-1",
        f"callbacks.last_checkpoint.every_n_train_steps={EVERY}",
        "+trainer.enable_progress_bar=false",
        "trainer.log_every_n_steps=1",
        *FAST,
        *extra,
    ]


def _env() -> dict[str, str]:
    # One intra-op thread: both runs sum in the same order (bitwise-equal results), and two
    # OpenMP threads on 2 busy cores would make each step many times slower.
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _train(cmd: list[str]) -> str:
    run = subprocess.run(cmd, cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout + run.stderr


def _step_of(path: Path) -> int | None:
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except (OSError, RuntimeError, EOFError, KeyError):
        return None  # not written yet


def _kill_when(cmd: list[str], last: Path, log: Path, wanted) -> int | None:
    """Start ``cmd``; SIGKILL it as soon as last.ckpt holds a step for which ``wanted`` holds."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=out, stderr=subprocess.STDOUT)
        killed, mtime, deadline = False, None, time.monotonic() + 300
        try:
            while not killed and proc.poll() is None and time.monotonic() < deadline:
                stamp = last.stat().st_mtime_ns if last.exists() else None
                if stamp != mtime:
                    mtime, step = stamp, _step_of(last)
                    if step is not None and wanted(step):
                        os.kill(proc.pid, signal.SIGKILL)
                        killed = True
                time.sleep(0.005)
        finally:
            if proc.poll() is None and not killed:
                proc.kill()
            proc.wait()
    assert killed, "the run ended before the wanted last.ckpt: " + log.read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL
    return _step_of(last)


def _logged_steps(run_dir: Path) -> dict[int, dict[str, float]]:
    """Per-step training metrics of the CSV log (the resumed process's rows only for run B:
    the killed one never flushed)."""
    with (run_dir / "csv" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("train/lr")]
    return {int(r["step"]): {k: float(v) for k, v in r.items() if v and "/" in k} for r in rows}


def _logged_vals(run_dir: Path) -> dict[int, float]:
    """``val/loss_mel`` of each validation in the CSV log, by step."""
    with (run_dir / "csv" / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/loss_mel")]
    return {int(r["step"]): float(r["val/loss_mel"]) for r in rows}


def _final(run_dir: Path) -> tuple[dict, dict, dict]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return ckpt, metrics, load_file(run_dir / "adapter.safetensors")


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, shared_root) -> tuple[Path, Path]:
    """The voice folder and the run dir of run A: MAX_STEPS steps without a stop."""
    voice = make_voice_folder(tmp_path_factory.mktemp("voice4"), files=4)
    run_dir = tmp_path_factory.mktemp("uninterrupted")
    _train(_train_cmd(voice, shared_root, run_dir))
    return voice, run_dir


@pytest.mark.slow
@pytest.mark.parametrize("where", list(KILL_AT))
def test_killed_run_resumed_from_last_ckpt_equals_uninterrupted(
    tmp_path, shared_root, uninterrupted, where
) -> None:
    voice, a = uninterrupted
    b = tmp_path / "b"
    last = b / "checkpoints" / "last.ckpt"
    killed_at = _kill_when(
        _train_cmd(voice, shared_root, b), last, tmp_path / "b.log", KILL_AT[where]
    )
    assert killed_at is not None and KILL_AT[where](killed_at) and killed_at < MAX_STEPS
    assert not (b / "metrics.json").exists()  # it really died
    output = _train(_train_cmd(voice, shared_root, b, f"ckpt_path={last}"))  # same run dir

    (ca, ma, ad_a), (cb, mb, ad_b) = _final(a), _final(b)
    assert ca["global_step"] == cb["global_step"] == ma["global_step"] == mb["global_step"]
    assert ma["global_step"] == MAX_STEPS and ca["epoch"] == cb["epoch"]
    lr_a = ca["optimizer_states"][0]["param_groups"][0]["lr"]
    assert lr_a == cb["optimizer_states"][0]["param_groups"][0]["lr"] < 1e-4  # and decayed
    assert ma["train/lr"] == mb["train/lr"] and ca["lr_schedulers"] == cb["lr_schedulers"]
    steps_a, steps_b = _logged_steps(a), _logged_steps(b)
    assert max(steps_b) == MAX_STEPS - 1 and set(steps_b) <= set(steps_a)
    for step, logged in steps_b.items():  # the LR and the losses of every step after the resume
        assert logged["train/lr"] == steps_a[step]["train/lr"], step
        assert logged["train/loss_g"] == pytest.approx(steps_a[step]["train/loss_g"], rel=1e-6)
    assert set(ca["state_dict"]) == set(cb["state_dict"]) and ca["state_dict"]
    diffs = {
        k: (ca["state_dict"][k] - cb["state_dict"][k]).abs().max().item() for k in ca["state_dict"]
    }
    worst = max(diffs, key=diffs.get)
    assert diffs[worst] <= 1e-6, f"{worst}: {diffs[worst]:.3g} (killed at step {killed_at})"
    for k, v in ca["optimizer_states"][0]["state"].items():  # Adam moments too
        for name in ("exp_avg", "exp_avg_sq"):
            assert (v[name] - cb["optimizer_states"][0]["state"][k][name]).abs().max() <= 1e-6
    assert set(ad_a) == set(ad_b)
    for k in ad_a:  # the exported adapter (fp16) as well
        assert (ad_a[k].float() - ad_b[k].float()).abs().max().item() <= 1e-6, k
    assert "dataloader is not resumable" not in output  # Lightning took the loader's state
    # The same best validation and best checkpoint, and the same best adapter.
    assert ma["best_score"] == mb["best_score"] and ma["best_monitor"] == mb["best_monitor"]
    assert Path(ma["best_checkpoint"]).name == Path(mb["best_checkpoint"]).name
    best_a, best_b = (load_file(d / "best_adapter.safetensors") for d in (a, b))
    assert set(best_a) == set(best_b)
    assert all(torch.equal(best_a[k], best_b[k]) for k in best_a)
    vals_a, vals_b = _logged_vals(a), _logged_vals(b)
    assert vals_b and all(vals_b[s] == pytest.approx(vals_a[s], rel=1e-6) for s in vals_b)
