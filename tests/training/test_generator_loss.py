"""How the generator loss is composed: adv + fm + 45 · mel + 1 · kl (RVC_FACTS.md §4), by hand on
fixed tensors, and the module's training step composing it that way."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from rvc_lora.training import module as module_file
from rvc_lora.training.losses import GeneratorLosses, generator_total, generator_total_streaming
from rvc_lora.training.module import VoiceConversionModule
from tests.training.test_module import loader, make_module, trainer

TRAIN_YAML = Path(__file__).resolve().parents[2] / "configs" / "train.yaml"


def fixed_inputs() -> dict[str, object]:
    """Tensors whose terms are known: adv 1.25, fm 1.0, mel 0.1, kl 3.0."""
    b, c, t = 2, 2, 3
    m_p = torch.linspace(-1.0, 1.0, b * c * t).reshape(b, c, t)
    return {
        # adv: (1 - 0.5)² + (1 - 0)² = 1.25
        "fake": [torch.full((2, 3), 0.5), torch.zeros(2, 4)],
        # fm: 2 · (|0 - 0.5| + |1 - 1|) = 1.0
        "fmap_real": [[torch.zeros(2, 4), torch.ones(3)]],
        "fmap_fake": [[torch.full((2, 4), 0.5), torch.ones(3)]],
        # mel: mean |0 - 0.1| = 0.1
        "y_mel": torch.zeros(b, 4, t),
        "y_hat_mel": torch.full((b, 4, t), 0.1),
        # kl per element with logs_p = logs_q = 0 and z_p - m_p = 2: -0.5 + 0.5 · 4 = 1.5;
        # summed over c = 2 channels per unmasked frame: 3.0
        "z_p": m_p + 2.0,
        "logs_q": torch.zeros(b, c, t),
        "m_p": m_p,
        "logs_p": torch.zeros(b, c, t),
        "z_mask": torch.ones(b, 1, t),
    }


def test_generator_total_by_hand_term_by_term() -> None:
    out = generator_total(**fixed_inputs(), c_mel=45.0, c_kl=1.0)
    assert isinstance(out, GeneratorLosses)
    assert out.gen.item() == pytest.approx(1.25, abs=1e-6)
    assert out.fm.item() == pytest.approx(1.0, abs=1e-6)
    assert out.mel.item() == pytest.approx(0.1, abs=1e-6)
    assert out.kl.item() == pytest.approx(3.0, abs=1e-6)
    assert out.total.item() == pytest.approx(1.25 + 1.0 + 45 * 0.1 + 1 * 3.0, abs=1e-5)


def test_generator_total_weights_only_their_own_term() -> None:
    # distinct weights: swapping c_mel and c_kl, or weighting adv/fm, changes the total
    out = generator_total(**fixed_inputs(), c_mel=2.0, c_kl=7.0)
    assert out.total.item() == pytest.approx(1.25 + 1.0 + 2.0 * 0.1 + 7.0 * 3.0, abs=1e-5)
    assert out.mel.item() == pytest.approx(0.1, abs=1e-6)  # terms are reported unweighted
    assert out.kl.item() == pytest.approx(3.0, abs=1e-6)


def test_generator_total_masks_padded_frames_in_kl() -> None:
    x = fixed_inputs()
    x["z_mask"] = torch.tensor([[[1.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]]])
    x["z_p"] = x["z_p"].clone()
    x["z_p"][0, :, 2] = 1e3  # garbage in padded frames
    x["z_p"][1, :, 1:] = -1e3
    out = generator_total(**x, c_mel=45.0, c_kl=1.0)
    assert out.kl.item() == pytest.approx(3.0, abs=1e-5)


def test_module_defaults_are_rvcs_weights() -> None:
    params = inspect.signature(VoiceConversionModule).parameters
    assert params["c_mel"].default == 45.0 and params["c_kl"].default == 1.0
    cfg = OmegaConf.load(TRAIN_YAML)
    assert cfg.train.c_mel == 45.0 and cfg.train.c_kl == 1.0
    module = OmegaConf.to_container(cfg.module)  # the module node takes train.*, unresolved
    assert module["c_mel"] == "${train.c_mel}" and module["c_kl"] == "${train.c_kl}"


@pytest.mark.slow  # one fitted step of the tiny model: ~10 s on a loaded 2-core machine
@pytest.mark.filterwarnings(
    "ignore:.*does not have many workers.*",
    "ignore:.*number of training batches.*",
    "ignore:.*isinstance\\(treespec, LeafSpec\\).*:FutureWarning",
)
def test_training_step_logs_the_hand_sum(monkeypatch) -> None:
    calls: list[dict[str, float]] = []

    def spy(*args, c_mel: float, c_kl: float, **kw) -> GeneratorLosses:
        calls.append({"c_mel": c_mel, "c_kl": c_kl})
        return generator_total_streaming(*args, c_mel=c_mel, c_kl=c_kl, **kw)

    # The module's default path: D member by member (generator_total's values, bit for bit).
    monkeypatch.setattr(module_file, "generator_total_streaming", spy)
    module = make_module(val_metric_items=0, log_audio=False)
    tr = trainer(max_steps=1)
    tr.fit(module, loader(1))
    assert calls == [{"c_mel": 45.0, "c_kl": 1.0}]
    m = {k: float(v) for k, v in tr.callback_metrics.items()}
    hand = m["train/loss_gen"] + m["train/loss_fm"] + 45 * m["train/loss_mel"] + m["train/loss_kl"]
    assert m["train/loss_g"] == pytest.approx(hand, rel=1e-5)
    assert m["train/loss_mel"] > 0.0 and m["train/loss_gen"] > 0.0  # all terms present
