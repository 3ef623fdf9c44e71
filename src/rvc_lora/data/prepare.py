"""Preprocess a folder and fill the feature cache, without training.

    python -m rvc_lora.data.prepare data.input_dir=DIR [model=v2_40k features=default]

Same config groups as training, so the cache it fills is the one training reads.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from rvc_lora.features.hubert_tiny import ensure_tiny_encoder
from rvc_lora.utils.cli import CONFIG_DIR, user_errors


@user_errors
def prepare(cfg: DictConfig) -> None:
    ensure_tiny_encoder(cfg.features)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.prepare_data()
    report = datamodule.report
    print(f"prepared {report.summary()}; cache: {datamodule.cache_dir}")
    for _source, reason in report.skipped:
        print(f"  skipped: {reason}")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="prepare")
def main(cfg: DictConfig) -> None:
    prepare(cfg)


if __name__ == "__main__":
    main()
