"""CPU step time of the full-size RVC synthesizer (v2_40k, batch 4, 12800-sample segments).

Prints median seconds per step for: G forward, G forward+backward (mel + KL losses), and a full
G+D training step as RVC runs it (D step, then G step with adversarial, feature-matching, mel x45
and KL losses; AdamW on both). RVC's own code measured 8.6 s median for the full step on this
kind of machine (2 CPU cores).

    python bench/bench_synth_step.py [--preset v2_40k] [--batch 4] [--frames 370] [--steps 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from rvc_lora.models import build_discriminator, build_synthesizer
from rvc_lora.models.commons import slice_segments
from rvc_lora.spectral import linear_spectrogram, mel_spectrogram, spec_to_mel
from rvc_lora.training.losses import discriminator_loss, feature_loss, generator_loss, kl_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="v2_40k")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=370, help="item length (RVC's 3.7 s chunks)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    g_model = build_synthesizer(args.preset, True).train()
    d_model = build_discriminator(g_model.version).train()
    c = g_model.config
    b, t = args.batch, args.frames
    phone = torch.randn(b, t, c.feature_dim)
    lengths = torch.full((b,), t)
    pitch = torch.randint(1, 256, (b, t))
    pitchf = torch.rand(b, t) * 200 + 100
    wav = torch.randn(b, 1, t * c.hop_length) * 0.1
    spec = linear_spectrogram(wav, c.n_fft, c.hop_length)
    sid = torch.zeros(b, dtype=torch.long)
    opt_g = torch.optim.AdamW(g_model.parameters(), 1e-4, betas=(0.8, 0.99), eps=1e-9)
    opt_d = torch.optim.AdamW(d_model.parameters(), 1e-4, betas=(0.8, 0.99), eps=1e-9)
    seg = c.segment_size

    def g_losses():
        y_hat, ids, _, y_mask, (z, z_p, m_p, logs_p, m_q, logs_q) = g_model(
            phone, lengths, pitch, pitchf, spec, lengths, sid
        )
        y_mel = slice_segments(spec_to_mel(spec, c.sr, c.n_fft, c.n_mels), ids, seg)
        y_hat_mel = mel_spectrogram(y_hat, c.sr, c.n_fft, c.hop_length, c.n_mels)
        y = slice_segments(wav, ids * c.hop_length, seg * c.hop_length)
        return (
            y,
            y_hat,
            F.l1_loss(y_mel, y_hat_mel) * 45 + kl_loss(z_p, logs_q, m_p, logs_p, y_mask),
        )

    def forward_only():
        with torch.no_grad():
            g_model(phone, lengths, pitch, pitchf, spec, lengths, sid)

    def forward_backward():
        g_model.zero_grad(set_to_none=True)
        g_losses()[2].backward()

    def full_step():
        y, y_hat, recon = g_losses()
        y_d_r, y_d_g, _, _ = d_model(y, y_hat.detach())
        opt_d.zero_grad(set_to_none=True)
        discriminator_loss(y_d_r, y_d_g).backward()
        opt_d.step()
        _, y_d_g, fmap_r, fmap_g = d_model(y, y_hat)
        loss = generator_loss(y_d_g) + feature_loss(fmap_r, fmap_g) + recon
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()

    print(
        f"preset {args.preset}, batch {b}, item {t} frames, segment {seg * c.hop_length} "
        f"samples, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    for name, fn in (
        ("G forward", forward_only),
        ("G forward+backward", forward_backward),
        ("G+D training step", full_step),
    ):
        fn()  # warm-up: allocator and kernel selection
        times = []
        for _ in range(args.steps):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        print(
            f"{name:<20} median {statistics.median(times):7.3f} s  "
            f"(min {min(times):.3f}, max {max(times):.3f}, n={len(times)})"
        )


if __name__ == "__main__":
    main()
