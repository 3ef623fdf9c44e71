"""Streaming conversion: compute time per block and algorithmic latency, per block size.

Feeds ``--seconds`` of voice-like 16 kHz audio (``bench_infer.voice_like``) to a
:class:`rvc_lora.inference.stream.StreamConverter` block by block, as a real-time host would,
for block sizes 0.1 / 0.25 / 0.5 s (2 s of context, 50 ms crossfade, 10 ms SOLA search, no
lookahead: RVC realtime's defaults), F0 ``pm``, CPU, ``--threads`` threads. Models:

- ``tiny``: the shipped tiny base (``data/pretrained/tiny``) and tiny HuBERT;
- ``v2_40k``: a full-size synthesizer and HuBERT-Base, random weights (``bench/rvc_stock.py``).

Per block: the median and 95th percentile of the compute time, the real-time factor (compute /
block length; real time is met when it is below 1) and the algorithmic latency (block +
crossfade + search + lookahead). The first two blocks are left out (warm-up).

    python bench/bench_stream.py [--models tiny,v2_40k] [--seconds 6] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from rvc_lora.inference.stream import StreamConverter

ROOT = Path(__file__).resolve().parents[1]
BLOCKS = (0.1, 0.25, 0.5)


def networks(name: str):
    if name == "tiny":
        from rvc_lora.features.hubert import load_content_encoder
        from rvc_lora.models import load_rvc_checkpoint

        base = ROOT / "data" / "pretrained" / "tiny" / "f0G16k.pth"
        model = load_rvc_checkpoint(base, keep_posterior=False).model.eval()
        return model, load_content_encoder(ROOT / "data" / "pretrained" / "hubert_tiny.pt")
    from rvc_stock import build_networks

    model, encoder = build_networks(name)
    model.remove_posterior()
    return model, encoder


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="tiny,v2_40k")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--blocks", default=",".join(str(b) for b in BLOCKS))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from bench_infer import voice_like

    audio = voice_like(args.seconds)
    print(
        f"{args.seconds:g} s of audio pushed block by block, 2 s context, 50 ms crossfade, "
        f"10 ms search, pm F0, {args.threads} CPU threads"
    )
    print(
        f"{'model':<8} {'block':>6} {'latency':>8} {'median':>9} {'p95':>9} {'RTF':>6}  real time"
    )
    for name in args.models.split(","):
        model, encoder = networks(name)
        for block_s in (float(b) for b in args.blocks.split(",")):
            conv = StreamConverter(model, encoder, block_s=block_s, extra_s=2.0, crossfade_s=0.05)
            b = conv.block_samples
            times = []
            for i in range(0, len(audio) - b + 1, b):
                t = time.perf_counter()
                conv.push(audio[i : i + b])
                times.append(time.perf_counter() - t)
            times = times[2:] or times
            median, p95 = statistics.median(times), float(np.percentile(times, 95))
            rtf = statistics.fmean(times) / block_s
            print(
                f"{name:<8} {1000 * block_s:5.0f}ms {1000 * conv.sizes.latency_s:6.0f}ms "
                f"{1000 * median:7.1f}ms {1000 * p95:7.1f}ms {rtf:6.2f}  "
                f"{'yes' if p95 < block_s else 'no'}"
            )


if __name__ == "__main__":
    main()
