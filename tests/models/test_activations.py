"""The lean leaky ReLU: same values and gradients as ``F.leaky_relu``, fewer bytes kept."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rvc_lora.models import build_discriminator, build_synthesizer
from rvc_lora.models.activations import leaky_relu, reference_activations
from rvc_lora.models.modules import LRELU_SLOPE, ResBlock1, ResBlock2
from tests.conftest import synth_inputs


def saved_bytes(fn: Callable[[], object], module: nn.Module | None = None) -> tuple[int, object]:
    """Bytes of the distinct storages autograd keeps for backward while ``fn()`` runs.

    Storages of ``module``'s own parameters are left out: they live anyway, so only what the
    graph adds on top counts. Returns ``(bytes, fn's result)``; the result keeps the graph, and
    so the counted storages, alive while the sum is taken.
    """
    own = {p.untyped_storage().data_ptr() for p in module.parameters()} if module else set()
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in own:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(storages.values()), out


def _input(dtype: torch.dtype, n: int = 4096) -> torch.Tensor:
    x = torch.randn(n).to(dtype)
    x[:64] = 0.0
    x[64:128] = -0.0
    x[128:192] = -torch.rand(64).to(dtype) * 1e-30  # tiny negatives: x * slope may underflow
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("slope", [LRELU_SLOPE, 0.01])
@pytest.mark.parametrize("inplace", [False, True])
def test_values_and_grads_equal_functional(dtype: torch.dtype, slope: float, inplace: bool) -> None:
    x = _input(dtype)
    ref_leaf = x.clone().requires_grad_()
    leaf = x.clone().requires_grad_()
    ref = F.leaky_relu(ref_leaf, slope)
    # In place needs a non-leaf input, as a conv output is.
    out = leaky_relu(leaf * 1, slope, inplace=inplace)
    grad = torch.randn(x.shape).to(dtype)
    ref.backward(grad)
    out.backward(grad)
    assert torch.equal(out, ref)
    assert torch.equal(leaf.grad, ref_leaf.grad)


def test_out_of_place_keeps_the_output_not_the_input() -> None:
    x = torch.randn(2, 3, 50, requires_grad=True)
    kept: list[torch.Tensor] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        kept.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = leaky_relu(x, LRELU_SLOPE)
    assert len(kept) == 1 and kept[0].data_ptr() == out.data_ptr() != x.data_ptr()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), reference_activations():
        leaky_relu(x, LRELU_SLOPE)
    assert kept[1].data_ptr() == x.data_ptr()


def test_double_backward_matches_functional() -> None:
    x = _input(torch.float64, 256).requires_grad_()
    (g_ref,) = torch.autograd.grad(F.leaky_relu(x, 0.1).pow(2).sum(), x, create_graph=True)
    (g,) = torch.autograd.grad(leaky_relu(x, 0.1).pow(2).sum(), x, create_graph=True)
    assert torch.equal(g, g_ref)
    (gg_ref,) = torch.autograd.grad(g_ref.sum(), x)
    (gg,) = torch.autograd.grad(g.sum(), x)
    assert torch.equal(gg, gg_ref)


def test_without_recording_inplace_overwrites_and_out_of_place_does_not() -> None:
    x = _input(torch.float32)
    expected = F.leaky_relu(x, LRELU_SLOPE)
    with torch.no_grad():
        y = x.clone()
        assert leaky_relu(y, LRELU_SLOPE, inplace=True) is y and torch.equal(y, expected)
        z = x.clone()
        out = leaky_relu(z, LRELU_SLOPE)
        assert out.data_ptr() != z.data_ptr() and torch.equal(z, x) and torch.equal(out, expected)
    # Grad mode on but an input outside the graph: the plain op, no graph.
    assert leaky_relu(x, LRELU_SLOPE).grad_fn is None


def test_reference_activations_is_the_plain_out_of_place_call_and_restores() -> None:
    x = torch.randn(64, requires_grad=True) * 1
    with reference_activations():
        with reference_activations():
            pass
        # Still the reference after a nested block ends; inplace is ignored, x stays intact.
        before = x.detach().clone()
        out = leaky_relu(x, LRELU_SLOPE, inplace=True)
        assert type(out.grad_fn).__name__ == "LeakyReluBackward0"
        assert torch.equal(x.detach(), before)
    assert type(leaky_relu(x, LRELU_SLOPE).grad_fn).__name__ != "LeakyReluBackward0"
    with pytest.raises(RuntimeError, match="boom"), reference_activations():
        raise RuntimeError("boom")
    assert type(leaky_relu(x, LRELU_SLOPE).grad_fn).__name__ != "LeakyReluBackward0"


def test_autocast_matches_reference() -> None:
    conv = nn.Conv1d(4, 4, 3, padding=1)
    x = torch.randn(2, 4, 40)

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        xi = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = leaky_relu(conv(xi), 0.1)
            y = leaky_relu(conv(y), 0.1, inplace=True)
        y.float().square().sum().backward()
        return y, xi.grad

    with reference_activations():
        ref = run()
    out = run()
    assert out[0].dtype == torch.bfloat16
    assert torch.equal(out[0], ref[0]) and torch.equal(out[1], ref[1])


def _block_run(block: nn.Module, x: torch.Tensor, mask: torch.Tensor | None):
    xi = x.clone().requires_grad_()
    nbytes, y = saved_bytes(lambda: block(xi, mask), block)
    block.zero_grad()
    y.backward(torch.ones_like(y))
    grads = [p.grad.clone() for p in block.parameters()]
    return nbytes, y, xi.grad, grads


@pytest.mark.parametrize("block_cls", [ResBlock1, ResBlock2])
@pytest.mark.parametrize("masked", [False, True])
def test_resblock_grads_equal_and_fewer_bytes_kept(block_cls: type, masked: bool) -> None:
    block = block_cls(8, 3)
    x = torch.randn(2, 8, 100)
    mask = (torch.arange(100) < 80).float().expand(2, 1, 100).contiguous() if masked else None
    with reference_activations():
        ref_bytes, ref_y, ref_gx, ref_grads = _block_run(block, x, mask)
    lean_bytes, y, gx, grads = _block_run(block, x, mask)
    assert torch.equal(y, ref_y) and torch.equal(gx, ref_gx)
    assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads))
    act = x.numel() * x.element_size()
    pairs = len(block.convs1) if block_cls is ResBlock1 else len(block.convs)
    if not masked:
        # Per (conv1, conv2) pair two activation copies go (the residual branch's input and the
        # first conv's output); ResBlock2 has one activation per conv.
        per_pair = 2 if block_cls is ResBlock1 else 1
        assert ref_bytes - lean_bytes == per_pair * pairs * act
    else:
        # The mask product is what the conv saves, so nothing is shared, but nothing is added.
        assert lean_bytes <= ref_bytes


def test_generator_keeps_one_copy_per_activation() -> None:
    dec = build_synthesizer("tiny", True).dec
    c = build_synthesizer("tiny", True).config
    frames = 6
    z = torch.randn(2, c.inter_channels, frames)
    f0 = torch.rand(2, frames) * 200 + 100
    g = torch.randn(2, c.gin_channels, 1)

    def run() -> tuple[int, torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(3)  # the NSF source draws noise
        nbytes, y = saved_bytes(lambda: dec(z, f0, g), dec)
        dec.zero_grad()
        y.square().sum().backward()
        return nbytes, y, [p.grad.clone() for p in dec.parameters()]

    with reference_activations():
        ref_bytes, ref_y, ref_grads = run()
    lean_bytes, y, grads = run()
    assert torch.equal(y, ref_y)
    assert all(torch.equal(a, b) for a, b in zip(grads, ref_grads))
    # Expected saving, call site by call site, in activations of the stage's size: one at each
    # upsampling activation, two per ResBlock1 (conv1, conv2) pair, one at the final activation;
    # less (blocks - 1) per stage, because the reference's first activation of every block
    # keeps the same stage input, counted once.
    expected, t, ch = 0, frames, c.upsample_initial_channel
    pairs = sum(len(d) for d in c.resblock_dilation_sizes)
    blocks = len(c.resblock_kernel_sizes)
    for u in c.upsample_rates:
        expected += 2 * ch * t * 4  # [B=2, ch, t] fp32 before this upsampling
        ch, t = ch // 2, t * u
        expected += (2 * pairs - (blocks - 1)) * 2 * ch * t * 4
    expected += 2 * ch * t * 4
    assert ref_bytes - lean_bytes == expected


def test_synthesizer_with_discriminator_grads_bit_identical() -> None:
    from rvc_lora.training.losses import discriminator_loss, feature_loss, generator_loss

    model = build_synthesizer("tiny", True).train()
    disc = build_discriminator("tiny")
    c = model.config
    phone, lengths, pitch, pitchf, sid = synth_inputs(c, True, frames=2 * c.segment_size, batch=1)
    spec = torch.rand(1, c.spec_channels, phone.shape[1])
    wave = torch.randn(1, 1, c.segment_size * c.hop_length) * 0.3

    def step() -> list[torch.Tensor]:
        torch.manual_seed(7)  # same slice, same posterior noise, same NSF noise
        model.zero_grad()
        disc.zero_grad()
        out, _ids, *_ = model(phone, lengths, pitch, pitchf, spec, lengths, sid)
        # D's own step (trained policy) on the detached fake, then G's adversarial step.
        d_r, d_g, _, _ = disc(wave, out.detach())
        loss_d = discriminator_loss(d_r, d_g)
        loss_d.backward()
        _, d_g, fm_r, fm_g = disc(wave, out)
        loss_g = generator_loss(d_g) + feature_loss(fm_r, fm_g) + (out - wave).abs().mean()
        loss_g.backward()
        params = [*model.parameters(), *disc.parameters()]
        return [
            loss_d.detach(),
            loss_g.detach(),
            *(p.grad.clone() for p in params if p.grad is not None),
        ]

    with reference_activations():
        ref = step()
    lean = step()
    assert len(lean) == len(ref) > 2
    assert all(torch.equal(a, b) for a, b in zip(lean, ref))
