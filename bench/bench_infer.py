"""CPU real-time factor of offline conversion: plain (merged) model vs an unmerged LoRA adapter.

Converts ``--seconds`` of synthetic voice-like 16 kHz audio with the full pipeline
(:class:`rvc_lora.inference.pipeline.ConversionPipeline`, RVC's fp32 chunking) using a full-size
synthesizer (``--preset``, random weights) and a full-size HuBERT-Base content encoder (random
weights), F0 method ``pm`` (Praat; no RMVPE weights needed), no retrieval index. RTF = compute
seconds / audio seconds. The same random rank-8 ``decoder`` adapter is timed unmerged (wrappers
rebuild W + s*B@A at each call) and merged into the base (``unload_lora(merge=True)``, i.e. a
plain model). Runs are interleaved so machine-load drift hits both alike.

    python bench/bench_infer.py [--preset v2_40k] [--seconds 10] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch

from rvc_lora.features.hubert import ContentEncoder
from rvc_lora.inference.pipeline import ConversionPipeline, ConvertOptions
from rvc_lora.lora import LoraConfig, inject_lora, lora_layers, unload_lora
from rvc_lora.models import build_synthesizer

SR = 16000


def voice_like(seconds: float) -> np.ndarray:
    """Gliding tone bursts between quiet gaps, plus low noise: voiced and unvoiced frames."""
    t = np.arange(int(seconds * SR)) / SR
    f = 160 + 50 * np.sin(2 * np.pi * 0.4 * t)
    on = (t % 1.5) > 0.5
    noise = 0.003 * np.random.default_rng(0).standard_normal(len(t))
    return (0.4 * np.sin(2 * np.pi * np.cumsum(f) / SR) * on + noise).astype(np.float32)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="v2_40k")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    from transformers import HubertConfig

    encoder = ContentEncoder(HubertConfig(classifier_proj_size=256))  # HuBERT-Base, random
    unmerged = build_synthesizer(args.preset, True).eval()
    names = inject_lora(unmerged, LoraConfig(preset="decoder", rank=args.rank))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in lora_layers(unmerged).values():  # B is zero after init: make it count
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.01)
    unmerged.eval()
    merged = unload_lora(copy.deepcopy(unmerged), merge=True).eval()

    audio = voice_like(args.seconds)
    pipe = ConversionPipeline(encoder)
    opts = ConvertOptions(f0_method="pm", index_rate=0.0)
    models = {"merged": merged, f"unmerged r{args.rank}": unmerged}
    print(
        f"preset {args.preset} (random weights), HuBERT-Base (random), f0 pm, "
        f"{args.seconds:g} s audio, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"LoRA rank {args.rank} on {len(names)} decoder modules"
    )
    outs = {label: pipe.convert(m, audio, opts)[0] for label, m in models.items()}  # warm-up
    a, b = outs.values()
    print(f"max |merged - unmerged| output difference: {np.abs(a - b).max():.2e}")
    times: dict[str, list[float]] = {label: [] for label in models}
    for _ in range(args.repeats):
        for label, m in models.items():
            start = time.perf_counter()
            pipe.convert(m, audio, opts)
            times[label].append(time.perf_counter() - start)
    rtf = {}
    for label, ts in times.items():
        rtf[label] = statistics.median(ts) / args.seconds
        print(f"{label:<12} RTF {rtf[label]:.3f}  (median of {len(ts)}: "
              f"{statistics.median(ts):.2f} s; min {min(ts):.2f}, max {max(ts):.2f})")  # fmt: skip
    base, adapted = rtf.values()
    print(f"unmerged / merged = {adapted / base:.3f} (goal <= 1.10)")


if __name__ == "__main__":
    main()
