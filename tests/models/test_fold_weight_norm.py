"""fold_weight_norm: a frozen discriminator computes its weights once, with identical outputs."""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from rvc_lora.models import build_discriminator
from rvc_lora.models.discriminator import MultiPeriodDiscriminator
from rvc_lora.models.nn import fold_weight_norm, has_weight_norm
from tests.models.test_activations import saved_bytes


def _frozen_d() -> MultiPeriodDiscriminator:
    return build_discriminator("tiny").requires_grad_(False)


def _score(d: nn.Module, real: torch.Tensor, fake: torch.Tensor):
    """D's G-step pass: returns (saved bytes, flat outputs, grad w.r.t. the fake)."""
    leaf = fake.clone().requires_grad_()
    nbytes, (d_r, d_g, fm_r, fm_g) = saved_bytes(lambda: d(real, leaf), d)
    outs = [*d_r, *d_g, *(t for fm in (*fm_r, *fm_g) for t in fm)]
    loss = sum(((1 - t) ** 2).mean() for t in d_g) + sum(t.abs().mean() for fm in fm_g for t in fm)
    loss.backward()
    return nbytes, outs, leaf.grad


def test_folded_discriminator_is_bit_identical_and_keeps_no_weight_copies() -> None:
    d = _frozen_d()
    wn_names = [n for n, m in d.named_modules() if has_weight_norm(m)]
    folded = copy.deepcopy(d)
    names = fold_weight_norm(folded)
    assert names == wn_names and len(names) == 43  # 7 convs in S, 6 in each of 6 periods
    assert not any(has_weight_norm(m) for m in folded.modules())
    assert not any(p.requires_grad for p in folded.parameters())
    keys = folded.state_dict().keys()
    assert "discriminators.0.convs.0.weight" in keys
    assert not any(k.endswith(("weight_g", "weight_v")) for k in keys)

    real, fake = torch.randn(2, 1, 2400), torch.randn(2, 1, 2400)
    ref_bytes, ref_outs, ref_grad = _score(d, real, fake)
    nbytes, outs, grad = _score(folded, real, fake)
    assert len(outs) == len(ref_outs)
    assert all(torch.equal(a, b) for a, b in zip(outs, ref_outs))
    assert torch.equal(grad, ref_grad)
    # Unfolded, each conv of the fake pass keeps a fresh weight copy; folded, it keeps the
    # module's own weight. The real pass records nothing (no input or weight needs grad).
    weights = sum(dict(folded.named_parameters())[f"{n}.weight"].nbytes for n in names)
    assert ref_bytes - nbytes == weights


def test_fold_is_idempotent_and_leaves_deep_copy_siblings_working() -> None:
    d = _frozen_d()
    folded = copy.deepcopy(d)
    fold_weight_norm(folded)
    x = torch.randn(1, 1, 1200)
    before = folded(x, x)[0]
    assert fold_weight_norm(folded) == []
    assert all(torch.equal(a, b) for a, b in zip(folded(x, x)[0], before))
    # The copy shares the parametrized class with `d`; folding must not strip `d`'s weights.
    assert "discriminators.0.convs.0.weight_g" in d.state_dict()
    assert all(torch.equal(a, b) for a, b in zip(d(x, x)[0], before))


def test_legacy_weight_norm_folds_too() -> None:
    torch.manual_seed(0)
    ref = nn.Conv1d(3, 5, 3, padding=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy API is deprecated, still in RVC's code
        ref = nn.utils.weight_norm(ref)
        legacy = nn.utils.weight_norm(nn.Conv1d(3, 5, 3, padding=1))
    legacy.load_state_dict(ref.state_dict())
    assert fold_weight_norm(legacy) == [""]
    assert set(legacy.state_dict()) == {"weight", "bias"} and not legacy._forward_pre_hooks
    assert not legacy.weight.requires_grad
    x = torch.randn(2, 3, 40)
    assert torch.equal(legacy(x), ref(x))
    assert fold_weight_norm(legacy) == []


def test_parametrizations_other_than_weight_norm_are_left_alone() -> None:
    conv = nn.utils.parametrizations.spectral_norm(nn.Conv1d(2, 2, 3))
    assert fold_weight_norm(conv) == []
    assert nn.utils.parametrize.is_parametrized(conv, "weight")
