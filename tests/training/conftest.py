"""Composed real configs (train.yaml), shrunk for CPU tests: tiny model, tmp dirs, few steps."""

from __future__ import annotations

from pathlib import Path

import pytest
import soundfile as sf
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from rvc_lora.data.synthetic import phrases
from rvc_lora.utils.cli import CONFIG_DIR

FAST = [
    "features.f0_method=pm",
    "data.progress=false",
    "data.batch_size=2",
    "data.max_frames=120",
    "callbacks.progress_bar=null",
    "logger=csv",
]


def make_voice_folder(root: Path, files: int = 3) -> Path:
    """A few seconds of synthetic voiced speech in several files (so a val split exists)."""
    root.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        sf.write(
            root / f"take{i}.wav", phrases(16000, n=2, seconds=1.4, seed=i, f0=140 + 20 * i), 16000
        )
    return root


@pytest.fixture(scope="session")
def voice_dir(tmp_path_factory) -> Path:
    return make_voice_folder(tmp_path_factory.mktemp("voice"))


@pytest.fixture(scope="session")
def shared_root(tmp_path_factory) -> Path:
    """One paths.root_dir for the session: the tiny encoder and the feature cache are reused.

    ``data/`` points at the repository's shipped assets (demo corpus, tiny encoder and base),
    which the demo / paper-table / pretraining experiments name under ``paths.root_dir``."""
    root = tmp_path_factory.mktemp("root")
    (root / "data").symlink_to(
        Path(__file__).resolve().parents[2] / "data", target_is_directory=True
    )
    return root


def compose_train(root: Path, out: Path, voice: Path, overrides: list[str] = ()) -> DictConfig:
    """The real train.yaml with test overrides, hydra config set, paths pointing at tmp dirs."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="train",
            return_hydra_config=True,
            overrides=[*FAST, f"data.input_dir={voice}", f"paths.root_dir={root}", *overrides],
        )
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
        cfg.paths.root_dir = str(root)
    return cfg
