"""CPU cost of an unmerged LoRA adapter on RVC's decoder (v2_40k, batch 4, z of 32 frames).

Times ``model.dec(z, f0, g)`` forward (no grad) and forward+backward for the plain decoder (every
parameter trainable: full fine-tuning) and for the same decoder with an unmerged rank-8
``decoder`` adapter injected (base frozen, gradients for A/B/emb only), and prints the ratios.
The unmerged wrappers rebuild W + scale*B@A at every call; merging removes that cost.

    python bench/bench_lora_overhead.py [--preset v2_40k] [--rank 8] [--repeats 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from rvc_lora.lora import LoraConfig, inject_lora
from rvc_lora.models import build_synthesizer


def summary(times: list[float]) -> str:
    return (
        f"median {statistics.median(times):7.3f} s  (min {min(times):.3f}, "
        f"max {max(times):.3f}, n={len(times)})"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="v2_40k")
    ap.add_argument("--lora-preset", default="decoder")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    plain = build_synthesizer(args.preset, True).train()
    lora = copy.deepcopy(plain)
    names = inject_lora(
        lora, LoraConfig(preset=args.lora_preset, rank=args.rank, alpha=2.0 * args.rank)
    )
    c = plain.config
    z = torch.randn(args.batch, c.inter_channels, args.frames)  # [B, C, T] latent
    f0 = torch.rand(args.batch, args.frames) * 200 + 100  # [B, T] Hz
    sid = torch.zeros(args.batch, dtype=torch.long)

    def forward(model: torch.nn.Module) -> None:
        with torch.no_grad():
            model.dec(z, f0, model.emb_g(sid).unsqueeze(-1))

    def forward_backward(model: torch.nn.Module) -> None:
        model.zero_grad(set_to_none=True)
        model.dec(z, f0, model.emb_g(sid).unsqueeze(-1)).pow(2).mean().backward()

    print(
        f"preset {args.preset}, batch {args.batch}, z {args.frames} frames "
        f"({args.frames * c.hop_length} samples), {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}; LoRA: rank {args.rank} on {len(names)} "
        f"{args.lora_preset} modules, unmerged"
    )
    models = {"plain": plain, f"lora r{args.rank}": lora}
    for step, fn in (("forward", forward), ("forward+backward", forward_backward)):
        times: dict[str, list[float]] = {label: [] for label in models}
        for model in models.values():
            fn(model)  # warm-up: allocator and kernel selection
        for _ in range(args.repeats):  # interleaved, so machine load drifts hit both alike
            for label, model in models.items():
                start = time.perf_counter()
                fn(model)
                times[label].append(time.perf_counter() - start)
        for label, ts in times.items():
            print(f"{label:<10} {step:<17} {summary(ts)}")
        base, adapted = (statistics.median(ts) for ts in times.values())
        print(f"ratio lora/plain {step:<17} {adapted / base:.3f}")


if __name__ == "__main__":
    main()
