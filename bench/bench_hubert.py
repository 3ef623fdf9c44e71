"""Content-feature extraction throughput on CPU: full-size HuBERT-Base, random weights.

Prints seconds of compute per minute of 16 kHz audio for RVC's v1 (final_proj of layer 9) and
v2 (layer 12) features. Random weights cost the same compute as ContentVec's real ones.

    python bench/bench_hubert.py [--seconds 10] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    from transformers import HubertConfig

    from rvc_lora.features.hubert import ContentEncoder

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    encoder = ContentEncoder(HubertConfig(classifier_proj_size=256))  # HuBERT-Base shapes
    n_params = sum(p.numel() for p in encoder.parameters())
    wav = torch.randn(1, int(16000 * args.seconds)) * 0.1
    print(
        f"HuBERT-Base {n_params / 1e6:.1f}M params, {args.seconds:g} s of audio, "
        f"{torch.get_num_threads()} threads"
    )
    for version in ("v1", "v2"):
        encoder.extract(wav[:, :16000], version)  # warm-up
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            encoder.extract(wav, version)
            times.append(time.perf_counter() - start)
        per_minute = statistics.median(times) * 60 / args.seconds
        print(
            f"{version}: {per_minute:6.2f} s of compute per minute of audio "
            f"(median of {args.repeats})"
        )


if __name__ == "__main__":
    main()
