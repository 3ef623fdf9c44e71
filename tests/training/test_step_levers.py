"""Issue 17's training-step levers change no number: the fast module's losses and gradients equal
the reference code's (``reference=True``) bit for bit, for each lever alone and all together;
gradient clipping off leaves gradients untouched. Tiny model and D, one fixed synthetic batch."""

from __future__ import annotations

import copy
import functools
import inspect

import pytest
import torch
from omegaconf import OmegaConf

from rvc_lora.lora import LoraConfig
from rvc_lora.models import build_discriminator, build_synthesizer
from rvc_lora.models.nn import fold_weight_norm, has_weight_norm
from rvc_lora.training.checkpointing import is_checkpointed
from rvc_lora.training.module import VoiceConversionModule
from rvc_lora.training.step_check import (
    compare_results,
    compare_steps,
    max_rel_diff,
    step_gradients,
)
from rvc_lora.utils.determinism import seed_step
from tests.training.test_generator_loss import TRAIN_YAML
from tests.training.test_module import make_batch

SEED = 7
VARIANTS = {  # (LoRA adapters, d_policy): the three set-ups of the benchmark
    "lora": (True, "frozen"),
    "full_frozen_d": (False, "frozen"),
    "full_trained_d": (False, "trained"),
}


def build(variant: str, **kw) -> VoiceConversionModule:
    """A module of ``variant`` whose weights depend only on the seeds (same for every call)."""
    lora, d_policy = VARIANTS[variant]
    torch.manual_seed(0)
    gen, disc = build_synthesizer("tiny", f0=True), build_discriminator("tiny")
    cfg = LoraConfig(preset="decoder", rank=4, alpha=8) if lora else None
    module = VoiceConversionModule(
        gen, disc, lora=cfg, d_policy=d_policy, val_metric_items=0, log_audio=False, **kw
    )
    # lora_B starts at zero, which zeroes lora_A's gradient: move every trainable tensor off
    # its init so that all gradients carry information.
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.trainable_generator_parameters().values():
            p.add_(0.05 * torch.randn_like(p))
    return module


@functools.cache
def batch() -> dict[str, torch.Tensor]:
    # One item: the decoder's cost grows with the batch, and the levers do not mix items.
    return make_batch(0, batch=1)


@functools.cache
def result(variant: str, lever: str) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """One step's losses and gradients, computed once per test session."""
    if lever == "reference":
        module = build(variant, reference=True)
    elif lever == "fast":
        module = build(variant)
    elif lever == "fold_only":  # the reference code with nothing but the D fold
        module = build(variant, reference=True)
        assert fold_weight_norm(module.discriminator)
    elif lever == "checkpoint":
        module = build(variant, checkpoint_activations=True)
    else:
        raise ValueError(lever)
    return step_gradients(module, batch(), SEED)


def assert_bit_exact(ref, fast) -> None:
    report = compare_results(ref, fast)
    assert report["worst"] == 0.0, report["worst_name"]
    for name, grad in ref[1].items():  # and literally the same bits, not only 0 relative
        assert torch.equal(grad, fast[1][name]), name
    assert ref[0] == fast[0]


@pytest.mark.parametrize(
    "variant",
    [
        "lora",
        pytest.param("full_frozen_d", marks=pytest.mark.slow),
        pytest.param("full_trained_d", marks=pytest.mark.slow),
    ],
)
def test_fast_step_equals_the_reference_bit_for_bit(variant: str) -> None:
    # Fold, streaming D, lean activations and cached LoRA base weights are re-arrangements of
    # the same floating-point operations in the same order: equal, not merely close.
    ref, fast = result(variant, "reference"), result(variant, "fast")
    lora, d_policy = VARIANTS[variant]
    assert set(ref[0]) == {"g", "gen", "fm", "mel", "kl"} | (
        {"d"} if d_policy == "trained" else set()
    )
    if d_policy == "trained":
        assert any(k.startswith("discriminator.") for k in ref[1])
    # Every trainable tensor gets a gradient the step reaches (not a vacuous comparison).
    reached = [k for k, g in ref[1].items() if g.abs().sum() > 0]
    assert len(reached) > 0.9 * len(ref[1])
    assert_bit_exact(ref, fast)


def test_fold_alone_keeps_the_step_bit_exact() -> None:
    assert_bit_exact(result("lora", "reference"), result("lora", "fold_only"))


def test_checkpointing_on_vs_off_is_bit_exact() -> None:
    assert_bit_exact(result("lora", "fast"), result("lora", "checkpoint"))


@pytest.mark.slow
def test_checkpointing_with_a_trained_d_is_bit_exact() -> None:
    # D's checkpointed convs then carry weight norm and parameter gradients through recompute.
    assert_bit_exact(result("full_trained_d", "fast"), result("full_trained_d", "checkpoint"))


def test_compare_steps_sees_a_changed_weight() -> None:
    # The tool itself: a module one lora_B element away from the other is reported, by name.
    ref, other = build("lora"), build("lora")
    name, p = next(
        (k, p) for k, p in other.trainable_generator_parameters().items() if "lora_B" in k
    )
    with torch.no_grad():
        p.view(-1)[0] += 0.5
    report = compare_steps(ref, other, batch(), SEED)
    assert report["worst"] > 1e-4
    assert report["losses"]["g"] > 0 and report["grads"][f"generator.{name}"] > 0
    assert max_rel_diff(torch.ones(3), torch.ones(3)) == 0.0
    assert max_rel_diff(torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0])) == 0.25
    assert max_rel_diff(1.0, 0.0) == float("inf")


# ---- what the levers touch ------------------------------------------------------------------


def test_frozen_d_is_folded_and_still_counted_as_rvcs() -> None:
    ref, fast = build("lora", reference=True), build("lora")
    normed = [n for n, m in build_discriminator("tiny").named_modules() if has_weight_norm(m)]
    assert ref.folded_d == [] and fast.folded_d == normed and len(normed) == 7 + 6 * 6
    assert not any(k.endswith("weight_g") for k in fast.discriminator.state_dict())
    assert not any(p.requires_grad for p in fast.discriminator.parameters())
    # total_d counts RVC's tensors (weight_g + weight_v), as the run info always did.
    assert fast.count_parameters() == ref.count_parameters()
    assert ref.count_parameters()["total_d"] == sum(
        v.numel() for v in build_discriminator("tiny").state_dict().values()
    )
    # A frozen D is never saved: the checkpoint's tensors are the same either way.
    assert fast.trainable_state().keys() == ref.trainable_state().keys()
    trained = build("full_trained_d")
    assert trained.folded_d == []
    assert any(k.endswith("weight_g") for k in trained.trainable_state())


def test_checkpointed_blocks_are_recomputed_and_keep_their_names() -> None:
    plain, ckpt = build("lora"), build("lora", checkpoint_activations=True)
    dec = ckpt.generator.dec
    k = dec.num_kernels
    expected = [f"dec.resblocks.{i}" for i in range(len(dec.resblocks) - 2 * k, len(dec.resblocks))]
    assert ckpt.checkpointed[: len(expected)] == expected
    # A frozen (folded) D's convs would keep the same inputs under a checkpoint: left alone.
    assert ckpt.checkpointed == expected
    trained = build("full_trained_d", checkpoint_activations=True)
    members = len(trained.discriminator.discriminators)
    assert len(trained.checkpointed) == len(expected) + 2 * members
    assert is_checkpointed(trained.discriminator.discriminators[0].convs[1])
    assert not is_checkpointed(dec.resblocks[0]) and is_checkpointed(dec.resblocks[-1])
    assert plain.state_dict().keys() == ckpt.state_dict().keys()
    assert ckpt.hparams["checkpoint_activations"] is True
    # A LoRA-wrapped conv inside a checkpointed block runs twice: forward, then in backward.
    calls = []
    conv = dec.resblocks[-1].convs1[0]
    assert hasattr(conv, "lora_A")
    conv.register_forward_hook(lambda *a: calls.append(torch.is_grad_enabled()))
    seed_step(SEED, 0)
    ckpt.step_losses(batch()).g.total.backward()
    assert len(calls) == 2
    # A deep copy checkpoints its own blocks (the patched forward is bound to the copy).
    twin = copy.deepcopy(ckpt)
    assert twin.generator.dec.resblocks[-1].forward.__self__ is twin.generator.dec.resblocks[-1]


def kept_for_backward(module: VoiceConversionModule) -> int:
    """Bytes of distinct storages one step's forward keeps for backward (plus the inputs a
    checkpointed block holds on to, which saved-tensor hooks do not see)."""
    kept: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    def note_inputs(_mod, args) -> None:
        for a in args:
            if torch.is_tensor(a) and torch.is_grad_enabled():  # not D(y) under no_grad
                kept[a.untyped_storage().data_ptr()] = a.untyped_storage().nbytes()

    hooks = [
        m.register_forward_pre_hook(note_inputs) for m in module.modules() if is_checkpointed(m)
    ]
    seed_step(SEED, 0)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        module.step_losses(batch())
    for h in hooks:
        h.remove()
    return sum(kept.values())


def test_checkpointing_keeps_less_for_backward() -> None:
    plain = kept_for_backward(build("lora"))
    ckpt = kept_for_backward(build("lora", checkpoint_activations=True))
    assert ckpt < 0.75 * plain, (ckpt, plain)  # measured: 38 % less on the tiny model


def test_reference_cannot_checkpoint() -> None:
    with pytest.raises(ValueError, match="reference=True .* cannot also checkpoint"):
        build("lora", reference=True, checkpoint_activations=True)


# ---- gradient clipping ----------------------------------------------------------------------


def with_grads(module: VoiceConversionModule, scale: float) -> list[torch.nn.Parameter]:
    params = list(module.trainable_generator_parameters().values())
    torch.manual_seed(3)
    for p in params:
        p.grad = scale * torch.randn_like(p)
    return params


def test_no_clipping_by_default_leaves_gradients_untouched_and_reports_the_norm() -> None:
    assert inspect.signature(VoiceConversionModule).parameters["grad_clip"].default is None
    assert OmegaConf.load(TRAIN_YAML).train.grad_clip is None
    module = build("lora")
    assert module.hparams["grad_clip"] is None
    params = with_grads(module, 10.0)
    before = [(p.grad.clone(), p.grad._version) for p in params]
    norm = module.clip_gradients_of(params)
    # Not even a multiplication by 1.0 (clip_grad_norm_(..., inf) writes every gradient).
    for p, (grad, version) in zip(params, before):
        assert torch.equal(p.grad, grad) and p.grad._version == version
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for c, (grad, _) in zip(copies, before):
        c.grad = grad.clone()
    assert torch.equal(norm, torch.nn.utils.clip_grad_norm_(copies, float("inf")))
    assert norm > 1.0


def test_reference_path_still_calls_clip_grad_norm() -> None:
    module = build("lora", reference=True)
    params = with_grads(module, 10.0)
    versions = [p.grad._version for p in params]
    module.clip_gradients_of(params)
    assert all(p.grad._version > v for p, v in zip(params, versions))


def test_a_clip_value_still_clips() -> None:
    module = build("lora", grad_clip=0.5)
    params = with_grads(module, 10.0)
    expected = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for e, p in zip(expected, params):
        e.grad = p.grad.clone()
    want = torch.nn.utils.clip_grad_norm_(expected, 0.5)
    norm = module.clip_gradients_of(params)
    assert torch.equal(norm, want) and norm > 0.5  # the norm before clipping is reported
    for e, p in zip(expected, params):
        assert torch.equal(p.grad, e.grad)
    after = torch.nn.utils.get_total_norm([p.grad for p in params])
    assert after == pytest.approx(0.5, rel=1e-5)


def test_config_passes_checkpoint_activations_off_by_default() -> None:
    cfg = OmegaConf.load(TRAIN_YAML)
    assert cfg.train.checkpoint_activations is False
    node = OmegaConf.to_container(cfg.module)
    assert node["checkpoint_activations"] == "${train.checkpoint_activations}"
    params = inspect.signature(VoiceConversionModule).parameters
    assert params["checkpoint_activations"].default is False
    assert params["reference"].default is False
