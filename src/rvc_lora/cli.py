"""Console entry points: ``rvc-lora <command>`` and ``rvc-lora-train``/``-infer``/``-eval``/
``-prepare``.

The same Hydra apps as ``train.py`` / ``infer.py`` / ``eval.py`` at the repository root, usable
from any directory once the package is installed (editable, so ``configs/`` is found).
"""

from __future__ import annotations

import sys

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


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="eval")
@user_errors
def evaluate(cfg: DictConfig) -> None:
    from rvc_lora.evaluation.run import run

    run(cfg)


_HYDRA_COMMANDS = {
    "train": "train a LoRA adapter (Hydra overrides follow, e.g. data.input_dir=DIR)",
    "infer": "convert audio or export to RVC's format (Hydra overrides follow)",
    "eval": "score a trained voice on held-out utterances into eval.json (Hydra overrides follow)",
    "prepare": "preprocess a folder and fill the feature cache (Hydra overrides follow)",
}


def main(argv: list[str] | None = None) -> None:
    """``rvc-lora download|train|infer|eval|prepare ...``.

    ``train``/``infer``/``eval``/``prepare`` hand the rest of the command line to the Hydra app
    as overrides (``rvc-lora train --help`` is Hydra's help); ``download`` is
    :mod:`rvc_lora.download`.
    """
    import argparse

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in _HYDRA_COMMANDS:
        # Hydra parses sys.argv itself: drop the subcommand, keep the overrides.
        sys.argv = [sys.argv[0], *argv[1:]]
        if argv[0] == "prepare":
            from rvc_lora.data.prepare import main as prepare_main

            prepare_main()
        else:
            {"train": train, "infer": infer, "eval": evaluate}[argv[0]]()
        return

    from rvc_lora import download

    parser = argparse.ArgumentParser(prog="rvc-lora", description="LoRA fine-tuning for RVC.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    download.add_arguments(
        commands.add_parser(
            "download",
            help="fetch the weights (HuBERT, RMVPE, FCPE, pretrained G/D) into models/",
            description=download.DESCRIPTION,
        )
    )
    for name, text in _HYDRA_COMMANDS.items():
        commands.add_parser(name, help=text, add_help=False)
    args = parser.parse_args(argv)
    sys.exit(download.run(args))
