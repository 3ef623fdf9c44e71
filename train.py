"""Train a LoRA adapter (or a full fine-tune) on a folder of one voice's recordings.

    python train.py data.input_dir=DIR [model=v2_40k model.pretrained_g=...] [lora.rank=16]
    python train.py -m lora.rank=8,16,32          # sweep ranks
    python train.py -m lora=default,full          # LoRA vs full fine-tuning
"""

import hydra
from omegaconf import DictConfig

from rvc_lora.utils.cli import user_errors


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
@user_errors
def main(cfg: DictConfig) -> float | None:
    from rvc_lora.training.run import train

    return train(cfg)


if __name__ == "__main__":
    main()
