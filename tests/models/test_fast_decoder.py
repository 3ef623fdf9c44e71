"""The fast decoder (channels-last, fused oneDNN ops, cached weights, crop) against the module."""

from __future__ import annotations

import copy

import pytest
import torch

from rvc_lora.lora import LoraConfig, inject_lora, lora_layers, unload_lora
from rvc_lora.models import build_synthesizer
from rvc_lora.models import fast_decoder as fd
from rvc_lora.models.fast_decoder import can_decode_fast, decode_fast, decoder_receptive_field

TOL = dict(rtol=0, atol=1e-5)


def inputs(model, t: int = 40, batch: int = 2, seed: int = 0):
    """Latent ``[B, C, T]``, F0 ``[B, T]`` (some unvoiced frames) and speaker vector g."""
    gen = torch.Generator().manual_seed(seed)
    c = model.config
    z = torch.randn(batch, c.inter_channels, t, generator=gen)
    f0 = torch.rand(batch, t, generator=gen) * 200 + 100
    f0[:, ::7] = 0.0
    g = torch.randn(batch, c.gin_channels, 1, generator=gen)
    return z, (f0 if model.f0 else None), g


def both(dec, z, f0, g, n_res=None):
    """(module output, fast output), each after seeding the excitation noise alike."""
    with torch.no_grad():
        torch.manual_seed(7)
        ref = dec(z, f0, g=g, n_res=n_res)
    return ref, fast(dec, z, f0, g, n_res=n_res)


def fast(dec, z, f0, g, **kw):
    torch.manual_seed(7)
    return decode_fast(dec, z, f0, g=g, **kw)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_synthesizer("tiny").eval()


@pytest.fixture(params=[True, False], ids=["fused", "plain-conv2d"])
def fused(request, monkeypatch):
    """Run with PyTorch's fused oneDNN ops (where present) and with the fallback (CUDA's path)."""
    if not request.param:
        monkeypatch.setattr(fd, "_fused_available", lambda: False)
    return request.param


@pytest.mark.parametrize("f0", [True, False], ids=["nsf", "nono"])
@pytest.mark.parametrize("n_res", [None, 33])
def test_tiny_matches_module(f0, n_res, fused):
    torch.manual_seed(0)
    model = build_synthesizer("tiny", f0=f0).eval()
    assert can_decode_fast(model.dec)
    z, pitch, g = inputs(model)
    ref, out = both(model.dec, z, pitch, g, n_res=n_res)
    assert out.shape == ref.shape == (2, 1, (n_res or 40) * model.config.hop_length)
    assert out.is_contiguous()
    torch.testing.assert_close(out, ref, **TOL)
    ref, no_cond = both(model.dec, z, pitch, None, n_res=n_res)  # no speaker conditioning
    torch.testing.assert_close(no_cond, ref, **TOL)
    assert not torch.allclose(no_cond, out)


@pytest.mark.parametrize("f0", [True, False], ids=["nsf", "nono"])
def test_v2_40k_matches_module(f0):
    torch.manual_seed(0)
    model = build_synthesizer("v2_40k", f0=f0).eval()
    z, pitch, g = inputs(model, t=24, batch=1)
    ref, out = both(model.dec, z, pitch, g)
    torch.testing.assert_close(out, ref, **TOL)


def test_crop_is_the_middle_of_the_full_decode(tiny, fused):
    dec, upp = tiny.dec, tiny.dec.upp
    z, f0, g = inputs(tiny, t=60)
    margin = decoder_receptive_field(dec)
    full = fast(dec, z, f0, g)
    assert 5 < margin < 30
    # (30, 5): the decode starts mid-latent, its end is clamped to T; (3, 40): the reverse
    for head, tail in ((30, 5), (0, 0), (3, 40)):
        cropped = fast(dec, z, f0, g, crop=(head, tail))
        torch.testing.assert_close(cropped, full[..., head * upp : (60 - tail) * upp], **TOL)
    empty = fast(dec, z, f0, g, crop=(30, 30))
    assert empty.shape == (2, 1, 0)
    with pytest.raises(ValueError, match="n_res"):
        decode_fast(dec, z, f0, g, n_res=50, crop=(1, 1))


def test_receptive_field_is_the_exact_dependence_span():
    """d(kept output)/dz in float64 is nonzero on exactly ``margin`` frames beyond each side:
    the margin is an upper bound (crop equality) and no larger than the geometry needs."""
    torch.manual_seed(0)
    model = build_synthesizer("tiny").double().eval()
    dec, upp = model.dec, model.dec.upp
    t, head, tail = 50, 22, 20
    z = torch.randn(1, model.config.inter_channels, t, dtype=torch.double, requires_grad=True)
    f0 = torch.rand(1, t, dtype=torch.double) * 200 + 100
    dec(z, f0)[..., head * upp : (t - tail) * upp].sum().backward()
    frames = (z.grad.abs().sum(1)[0] != 0).nonzero().flatten()
    margin = decoder_receptive_field(dec)
    assert margin == 12  # tiny: 3 + ceil((60 + 19 - 5) / 10) + ... worked out in the walk
    assert (head - int(frames.min()), int(frames.max()) - (t - tail - 1)) == (margin, margin)


def test_perturbing_outside_the_margin_leaves_kept_samples(tiny):
    dec, upp = tiny.dec, tiny.dec.upp
    t, head, tail = 60, 25, 20
    z, f0, g = inputs(tiny, t=t, batch=1)
    margin = decoder_receptive_field(dec)
    kept = slice(head * upp, (t - tail) * upp)
    base = fast(dec, z, f0, g)
    for frame, changes in ((head - margin - 1, False), (t - tail + margin, False),
                           (head - 1, True), (t - tail, True)):  # fmt: skip
        moved = z.clone()
        moved[..., frame] += 1.0
        out = fast(dec, moved, f0, g)
        assert torch.equal(out[..., kept], base[..., kept]) != changes, frame


def lora_tiny():
    torch.manual_seed(0)
    model = build_synthesizer("tiny").eval()
    inject_lora(model, LoraConfig(preset="decoder", rank=4))
    model.eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in lora_layers(model).values():  # B starts at zero: make the adapter count
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.05)
    return model


def test_lora_states_and_cache_invalidation(fused):
    model = lora_tiny()
    dec = model.dec
    z, f0, g = inputs(model)
    layers = list(lora_layers(model).values())

    def check() -> torch.Tensor:
        ref, out = both(dec, z, f0, g)
        torch.testing.assert_close(out, ref, **TOL)
        return out

    adapted = check()
    assert torch.equal(check(), adapted)  # second call: cached weights, same bits
    for layer in layers:
        layer.disable()
    base = check()
    assert not torch.allclose(base, adapted, atol=1e-4)
    for layer in layers:
        layer.enable()
    torch.testing.assert_close(check(), adapted, **TOL)
    for layer in layers:
        layer.merge()
    torch.testing.assert_close(check(), adapted, **TOL)  # merged into g, v: same voice
    for layer in layers:
        layer.unmerge()
    torch.testing.assert_close(check(), adapted, **TOL)
    with torch.no_grad():  # an adapter switch writes A/B in place (VoiceBank.use)
        layers[0].lora_B.mul_(3.0)
    switched = check()
    assert not torch.allclose(switched, adapted, atol=1e-4)
    unload_lora(model, merge=False)  # back to the plain modules
    torch.testing.assert_close(check(), base, **TOL)


def test_load_state_dict_and_to_invalidate_the_cache(fused):
    torch.manual_seed(0)
    model = build_synthesizer("tiny").eval()
    z, f0, g = inputs(model)
    before = both(model.dec, z, f0, g)[1]  # fills the cache
    torch.manual_seed(5)
    model.load_state_dict(build_synthesizer("tiny").state_dict())  # RVC keys, copied in place
    ref, out = both(model.dec, z, f0, g)
    torch.testing.assert_close(out, ref, **TOL)
    assert not torch.allclose(out, before, atol=1e-4)
    model.double()  # new parameter tensors (the fused ops are fp32-only: conv2d path)
    ref, out = both(model.dec, z.double(), f0.double(), g.double())
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)
    # .to() swaps `.data` under the same parameter objects, versions unchanged: a round trip
    # through half precision gives float weights again, now rounded, maybe at the old address
    model.half().float()
    ref, out = both(model.dec, z, f0, g)
    torch.testing.assert_close(out, ref, **TOL)


def test_dropout_in_training_mode_falls_back_to_module(tiny):
    model = copy.deepcopy(tiny)
    inject_lora(model, LoraConfig(preset="decoder", rank=2, dropout=0.1))
    assert not can_decode_fast(model.dec)  # wrappers start in training mode
    model.eval()
    assert can_decode_fast(model.dec)


@pytest.mark.parametrize("f0", [True, False], ids=["nsf", "nono"])
def test_infer_fast_and_crop_match_the_module_path(f0):
    torch.manual_seed(0)
    model = build_synthesizer("tiny", f0=f0).eval()
    gen = torch.Generator().manual_seed(3)
    t = 48
    phone = torch.randn(1, t, model.config.feature_dim, generator=gen)
    pitchf = torch.rand(1, t, generator=gen) * 200 + 100
    pitch = torch.randint(1, 255, (1, t), generator=gen)
    lengths = torch.tensor([t])
    args = (phone, lengths, pitch, pitchf) if f0 else (phone, lengths)
    hop = model.config.hop_length

    def run(**kw):
        torch.manual_seed(11)
        return model.infer(*args, **kw)[0]

    ref = run(fast=False)
    torch.testing.assert_close(run(), ref, **TOL)
    cropped = run(crop=(10, 12))
    torch.testing.assert_close(cropped, ref[..., 10 * hop : (t - 12) * hop], **TOL)
    torch.testing.assert_close(run(crop=(10, 12), fast=False), cropped, **TOL)
    with pytest.raises(ValueError, match="crop"):
        run(crop=(1, 1), return_length2=40)
    with pytest.raises(ValueError, match="crop"):
        run(crop=(-1, 0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_infer_under_autocast_takes_the_module_path(dtype):
    # Validation of an AMP run calls infer under autocast; the fused ops take a single dtype
    # (they raised "Input type (HalfTensor) and weight type (FloatTensor)" there).
    torch.manual_seed(0)
    model = build_synthesizer("tiny").eval()
    gen = torch.Generator().manual_seed(5)
    t = 24
    phone = torch.randn(1, t, model.config.feature_dim, generator=gen)
    pitchf = torch.rand(1, t, generator=gen) * 200 + 100
    pitch = torch.randint(1, 255, (1, t), generator=gen)
    args = (phone, torch.tensor([t]), pitch, pitchf)
    outs = []
    for fast_path in (True, False):
        torch.manual_seed(11)
        with torch.autocast("cpu", dtype=dtype):
            outs.append(model.infer(*args, fast=fast_path)[0])
    assert outs[0].shape == (1, 1, t * model.config.hop_length)
    assert torch.equal(outs[0], outs[1])
