"""A tiny voice trained by ``python train.py`` on demo files, and 2-file evaluation sets."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rvc_lora.utils.cli import CONFIG_DIR
from tests.training.conftest import FAST

REPO = Path(CONFIG_DIR).parent
DEMO = REPO / "data" / "demo"


def copy_demo(dest: Path, folder: str, names: list[str]) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(DEMO / folder / f"{name}.flac", dest / f"{name}.flac")
    return dest


@pytest.fixture(scope="session")
def eval_root(tmp_path_factory) -> Path:
    """paths.root_dir of the tiny run: its tiny content encoder and feature cache live here."""
    return tmp_path_factory.mktemp("eval_root")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, eval_root) -> Path:
    """A run dir as ``python train.py`` leaves it, from 3 of the target's training sentences."""
    voice = copy_demo(tmp_path_factory.mktemp("slt"), "target/slt", ["s01", "s02", "s03"])
    run_dir = tmp_path_factory.mktemp("tiny_run")
    cmd = [
        sys.executable,
        "train.py",
        f"data.input_dir={voice}",
        f"paths.root_dir={eval_root}",
        f"hydra.run.dir={run_dir}",
        "trainer.max_steps=6",
        "trainer.max_epochs=-1",
        *FAST,
    ]
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def eval_sets(tmp_path_factory) -> dict[str, Path]:
    """Two held-out target sentences, the same two from another speaker, two references."""
    root = tmp_path_factory.mktemp("eval_sets")
    return {
        "eval_dir": copy_demo(root / "eval", "eval/slt", ["s33", "s34"]),
        "source_dir": copy_demo(root / "source", "base/rms", ["s33", "s34"]),
        "reference_dir": copy_demo(root / "reference", "target/slt", ["s05", "s06"]),
    }


def compose_app(name: str, **options: object) -> DictConfig:
    """The real ``configs/<name>.yaml`` with overrides, the Hydra config set (as a CLI run)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name=name,
            return_hydra_config=True,
            overrides=[f"{k}={v}" for k, v in options.items()],
        )
    HydraConfig().set_config(cfg)
    return cfg
