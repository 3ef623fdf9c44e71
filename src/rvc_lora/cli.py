"""Console entry points (``rvc-lora-train``, ``rvc-lora-infer``, ``rvc-lora-prepare``).

The same Hydra apps as ``train.py`` / ``infer.py`` at the repository root, usable from any
directory once the package is installed (editable, so ``configs/`` is found).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from rvc_lora.utils.cli import CONFIG_DIR, user_errors


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
@user_errors
def train(cfg: DictConfig) -> float | None:
    from rvc_lora.training.run import train as run_training

    return run_training(cfg)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="infer")
@user_errors
def infer(cfg: DictConfig) -> None:
    from rvc_lora.inference.run import run

    run(cfg)
