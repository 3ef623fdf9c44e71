"""Convert audio into a trained voice, or export a voice to RVC WebUI's format.

    python infer.py ckpt=outputs/train/.../adapter.safetensors source=in.wav output=out.wav pitch=0
    python infer.py ckpt=... source=folder/ output=converted/          # every file, recursively
    python infer.py mode=export ckpt=.../adapter.safetensors output=voice.pth
"""

import hydra
from omegaconf import DictConfig

from rvc_lora.utils.cli import user_errors


@hydra.main(version_base="1.3", config_path="configs", config_name="infer")
@user_errors
def main(cfg: DictConfig) -> None:
    from rvc_lora.inference.run import run

    run(cfg)


if __name__ == "__main__":
    main()
