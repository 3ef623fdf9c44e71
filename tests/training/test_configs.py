"""The real configs compose, every group instantiates, and every experiment runs one batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.utils import instantiate

from rvc_lora.lora import LoraConfig
from rvc_lora.models.presets import PRESETS
from rvc_lora.training.run import instantiate_group, train
from rvc_lora.utils.cli import CONFIG_DIR
from tests.training.conftest import compose_train

CONFIGS = Path(CONFIG_DIR)


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


@pytest.mark.parametrize("name", _options("model"))
def test_model_configs_agree_with_presets(name: str) -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={name}"]).model  # a model file may extend another
    preset = PRESETS[cfg["preset"]]
    assert (cfg["sample_rate"], cfg["hop_length"], cfg["n_fft"], cfg["n_mels"], cfg["version"]) == (
        preset.sr,
        preset.hop_length,
        preset.n_fft,
        preset.n_mels,
        preset.version,
    )


@pytest.mark.parametrize("lora", _options("lora"))
def test_lora_options_instantiate(tmp_path, shared_root, voice_dir, lora: str) -> None:
    cfg = compose_train(shared_root, tmp_path, voice_dir, [f"lora={lora}"])
    made = instantiate(cfg.lora)
    if lora == "full":  # the RVC-style baseline trains D too
        assert made is None and cfg.discriminator.policy == "trained"
    else:
        assert isinstance(made, LoraConfig) and made.rank == 8
        assert cfg.discriminator.policy == "frozen"
        assert made.preset == ("decoder" if lora == "default" else lora)


@pytest.mark.parametrize("logger", _options("logger"))
def test_logger_options_instantiate(tmp_path, shared_root, voice_dir, logger: str) -> None:
    cfg = compose_train(shared_root, tmp_path, voice_dir, [f"logger={logger}"])
    loggers = instantiate_group(cfg.get("logger"))
    expected = {"none": 0, "many": 2}.get(logger, 1)
    assert len(loggers) == expected


def test_wandb_is_offline_without_a_key(tmp_path, shared_root, voice_dir, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    cfg = compose_train(shared_root, tmp_path, voice_dir, ["logger=wandb"])
    assert cfg.logger.wandb.offline is True
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert cfg.logger.wandb.offline is False


@pytest.mark.parametrize("trainer", _options("trainer"))
def test_trainer_options_compose(tmp_path, shared_root, voice_dir, trainer: str) -> None:
    cfg = compose_train(shared_root, tmp_path, voice_dir, [f"trainer={trainer}"])
    assert cfg.trainer._target_ == "lightning.Trainer"
    if trainer == "cpu":  # the GPU ones need a GPU to instantiate
        instantiate(cfg.trainer, logger=False)


def test_module_data_callbacks_and_discriminators_instantiate(
    tmp_path, shared_root, voice_dir
) -> None:
    for policy in _options("discriminator"):
        cfg = compose_train(shared_root, tmp_path, voice_dir, [f"discriminator={policy}"])
        module = instantiate(cfg.module)
        assert module.d_policy == policy and len(module.lora_targets) > 0
    assert type(instantiate(cfg.data)).__name__ == "VoiceDataModule"
    # the test overrides drop the progress bar (callbacks.progress_bar=null)
    names = sorted(type(c).__name__ for c in instantiate_group(cfg.callbacks))
    assert names == ["AdapterExport", "EarlyStop", "ModelCheckpoint", "ResumeCheckpoint"]


def test_default_callbacks_group_builds_exactly(tmp_path) -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint
    from omegaconf import OmegaConf

    from rvc_lora.training.callbacks import AdapterExport, ResumeCheckpoint, StepProgressBar
    from rvc_lora.training.early_stop import EarlyStop

    group = OmegaConf.load(CONFIGS / "callbacks" / "default.yaml")
    cfg = OmegaConf.create(
        {
            "paths": {"output_dir": str(tmp_path)},
            "optimized_metric": "val/mcd",
            "callbacks": group,
        }
    )
    made = dict(zip(cfg.callbacks.keys(), instantiate_group(cfg.callbacks)))
    assert {k: type(v) for k, v in made.items()} == {
        "model_checkpoint": ModelCheckpoint,
        "last_checkpoint": ResumeCheckpoint,
        "early_stop": EarlyStop,
        "adapter_export": AdapterExport,
        "progress_bar": StepProgressBar,
    }
    # before adapter_export (it restores the weights that file takes); off unless asked for
    assert list(made).index("early_stop") < list(made).index("adapter_export")
    stop = made["early_stop"]
    assert (stop.monitor, stop.patience, stop.restore_best) == ("val/mcd", None, False)
    best, last = made["model_checkpoint"], made["last_checkpoint"]
    assert (best.monitor, best.mode, best.save_top_k, best.save_last) == (
        "val/mcd",
        "min",
        1,
        False,
    )
    assert Path(best.dirpath) == tmp_path / "checkpoints"
    assert (last.every, last.filename) == (100, "last.ckpt")
    assert Path(last.dirpath) == tmp_path / "checkpoints"


@pytest.mark.slow
@pytest.mark.parametrize("experiment", _options("experiment"))
def test_every_experiment_runs_fast_dev_run(
    tmp_path, shared_root, voice_dir, experiment: str
) -> None:
    cfg = compose_train(
        shared_root,
        tmp_path,
        voice_dir,
        [
            f"experiment={experiment}",
            f"data.input_dir={voice_dir}",
            "trainer.fast_dev_run=true",
            "data.batch_size=2",
            "logger=csv",
        ],
    )
    train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["global_step"] == 1
    artifact = Path(metrics["artifact"])
    assert artifact.is_file()
    assert artifact.name == (
        "generator.pth" if experiment == "pretrain_tiny" else "adapter.safetensors"
    )
    if experiment != "pretrain_tiny":
        from rvc_lora.lora import LoraConfig, inject_lora, load_adapter
        from rvc_lora.models import load_rvc_checkpoint

        assert Path(metrics["index"]).name.startswith("added_IVF")  # retrieval index beside it
        # The adapter's base: the pretrained file the experiment names, else the random init
        # the run kept beside it.
        named = cfg.model.pretrained_g
        base_file = Path(named) if named else tmp_path / "base.pth"
        assert base_file.is_file() and (tmp_path / "base.pth").exists() == (named is None)
        base = load_rvc_checkpoint(base_file).model
        inject_lora(base, LoraConfig(preset="decoder"))
        load_adapter(base, artifact)  # checks the base identity


@pytest.mark.parametrize("debug", _options("debug"))
def test_debug_options_compose(tmp_path, shared_root, voice_dir, debug: str) -> None:
    cfg = compose_train(shared_root, tmp_path, voice_dir, [f"debug={debug}"])
    assert cfg.task_name == "debug"
