"""A training run reads cleanly: each log line once, no warning the user cannot act on."""

from __future__ import annotations

import collections
import re
import subprocess
import sys
import warnings
from pathlib import Path

import lightning as L
import pytest
from lightning.pytorch.utilities.warnings import PossibleUserWarning

from rvc_lora.utils.cli import CONFIG_DIR
from tests.training.conftest import FAST

REPO = Path(CONFIG_DIR).parent
UNRELATED = "an unrelated warning from the test"
NOT_SHOWN = (
    "module(s) in eval mode",  # a loaded base was left in eval mode; it trains in train mode
    "smaller than the logging interval",  # log_every_n_steps follows the batches per epoch
    "LeafSpec",  # torch's deprecation of a class Lightning uses
    "💡 Tip",  # Lightning's advertisements
    "Could not load library",  # faiss' CPU-build probing at INFO
    "`weights_only` was not set",  # Lightning's default on each resume save, said by us instead
)


class UnrelatedWarnings(L.Callback):
    """Warnings that no filter of ours may hide, one of them from Lightning's own category."""

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        warnings.warn(f"{UNRELATED} (UserWarning)", UserWarning, stacklevel=1)
        warnings.warn(f"{UNRELATED} (PossibleUserWarning)", PossibleUserWarning, stacklevel=1)


def _info_messages(text: str) -> list[str]:
    """Messages of INFO records in Hydra's format (``[time][logger][INFO] - msg``) and in
    Lightning's own (``INFO: msg``), which must not appear at all."""
    hydra = re.findall(r"^\[[^\]]+\]\[([^\]]+)\]\[INFO\] - (.*)$", text, flags=re.M)
    lightning = re.findall(r"^INFO: (.*)$", text, flags=re.M)
    return [f"{name}: {msg}" for name, msg in hydra] + [f"lightning: {m}" for m in lightning]


@pytest.mark.slow
def test_a_tiny_run_logs_each_line_once_and_only_actionable_warnings(
    tmp_path, shared_root, voice_dir
) -> None:
    cmd = [
        sys.executable,
        "train.py",
        f"data.input_dir={voice_dir}",
        f"paths.root_dir={shared_root}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "model=tiny_demo",  # a loaded base: the checkpoint loader hands it over in eval mode
        "trainer.max_steps=2",
        "trainer.max_epochs=1",
        "trainer.limit_val_batches=1",
        "trainer.log_every_n_steps=50",  # more than the batches per epoch: no warning now
        f"+callbacks.unrelated._target_={__name__}.UnrelatedWarnings",
        *FAST,
    ]
    run = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, run.stderr[-3000:]

    messages = _info_messages(out)
    assert not [m for m in messages if m.startswith("lightning: ")], out[-3000:]
    repeated = {m: n for m, n in collections.Counter(messages).items() if n > 1}
    assert repeated == {}
    logged = "\n".join(messages)
    assert "Seed set to 1234" in logged and "rvc-lora: mode=lora" in logged
    assert "run finished" in logged

    for text in NOT_SHOWN:
        assert text not in out
    assert f"{UNRELATED} (UserWarning)" in run.stderr
    assert f"{UNRELATED} (PossibleUserWarning)" in run.stderr
