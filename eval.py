"""Score a trained voice on held-out utterances and write eval.json into its run dir.

python eval.py run_dir=outputs/demo/2025-01-01/12-00-00
python eval.py ckpt=outputs/.../best_adapter.safetensors output=best_eval.json
python eval.py run_dir=... eval_dir=my/held_out source_dir=null   # reconstruction only
"""

import hydra
from omegaconf import DictConfig

from rvc_lora.utils.cli import user_errors


@hydra.main(version_base="1.3", config_path="configs", config_name="eval")
@user_errors
def main(cfg: DictConfig) -> None:
    from rvc_lora.evaluation.run import run

    run(cfg)


if __name__ == "__main__":
    main()
