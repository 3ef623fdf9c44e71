"""CPU real-time factor of offline conversion, beside the pre-change path and stock RVC.

Converts ``--seconds`` of synthetic voice-like 16 kHz audio with the full pipeline
(:class:`rvc_lora.inference.pipeline.ConversionPipeline`, RVC's fp32 chunking) using a full-size
synthesizer (``--preset``, random weights) and a full-size HuBERT-Base content encoder (random
weights), F0 method ``pm`` (Praat; no RMVPE weights needed), no retrieval index. RTF = compute
seconds / audio seconds. Timed, interleaved so machine-load drift hits all alike:

- ``base``: the plain model; ``merged``: a random rank-8 ``decoder`` adapter merged in
  (``unload_lora(merge=True)``); ``unmerged rN``: the same adapter left as wrappers. All three on
  the fast path (inference mode, fast decoder, chunk padding not decoded).
- ``base, pre-change``: the path before issue 17 (``ConversionPipeline(fast=False)``), with the
  largest output difference to the fast path (same seed).
- stock RVC 2.2.231006 on the same weights: timed live with ``--rvc-root DIR`` / ``$RVC_ROOT``
  (``bench/rvc_stock.py``), else its recorded figure (``results/bench/rvc_reference.json``).
  Issue 17's goal: our RTF at most 0.5x stock RVC's.

    python bench/bench_infer.py [--preset v2_40k] [--seconds 10] [--threads 2] [--repeats 3]
                                [--rvc-root DIR]
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from rvc_lora.inference.pipeline import ConversionPipeline, ConvertOptions
from rvc_lora.lora import LoraConfig, inject_lora, lora_layers, unload_lora

SR = 16000
GOAL_VS_RVC = 0.5  # issue 17: at most half of stock RVC's pipeline time
GOAL_UNMERGED = 1.10  # an unmerged adapter costs at most 10% over the merged model


def voice_like(seconds: float) -> np.ndarray:
    """Gliding tone bursts between quiet gaps, plus low noise: voiced and unvoiced frames."""
    t = np.arange(int(seconds * SR)) / SR
    f = 160 + 50 * np.sin(2 * np.pi * 0.4 * t)
    on = (t % 1.5) > 0.5
    noise = 0.003 * np.random.default_rng(0).standard_normal(len(t))
    return (0.4 * np.sin(2 * np.pi * np.cumsum(f) / SR) * on + noise).astype(np.float32)


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds summed over threads) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="v2_40k")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rvc-root", default=os.environ.get("RVC_ROOT"),
                    help="checkout of stock RVC 2.2.231006 to time live (default: $RVC_ROOT)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    # rvc_stock sits beside this script; it imports voice_like from here inside its main only.
    from rvc_stock import (
        RVC_RELEASE,
        StockRvc,
        build_networks,
        load_rvc,
        recorded_reference,
        time_rvc,
    )

    base, encoder = build_networks(args.preset)  # the weights rvc_stock.py times RVC on
    unmerged = copy.deepcopy(base)
    names = inject_lora(unmerged, LoraConfig(preset="decoder", rank=args.rank))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for layer in lora_layers(unmerged).values():  # B is zero after init: make it count
            layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=gen) * 0.01)
    unmerged.eval()
    merged = unload_lora(copy.deepcopy(unmerged), merge=True).eval()

    audio = voice_like(args.seconds)
    fast, old = ConversionPipeline(encoder), ConversionPipeline(encoder, fast=False)
    opts = ConvertOptions(f0_method="pm", index_rate=0.0)
    runs: dict[str, Callable[[], np.ndarray]] = {
        "base": lambda: fast.convert(base, audio, opts)[0],
        "merged": lambda: fast.convert(merged, audio, opts)[0],
        f"unmerged r{args.rank}": lambda: fast.convert(unmerged, audio, opts)[0],
        "base, pre-change": lambda: old.convert(base, audio, opts)[0],
    }
    stock = None
    if args.rvc_root:
        stock = StockRvc.build(load_rvc(args.rvc_root), base, encoder)
        runs[f"stock RVC {RVC_RELEASE}"] = lambda: time_rvc(audio, stock, opts)[1]
    print(
        f"preset {args.preset} (random weights), HuBERT-Base (random), f0 pm, "
        f"{args.seconds:g} s audio, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"LoRA rank {args.rank} on {len(names)} decoder modules"
    )
    outs = {label: run() for label, run in runs.items()}  # warm-up (and outputs, seed 0)
    print(f"max |fast - pre-change| output difference (base): "
          f"{np.abs(outs['base'] - outs['base, pre-change']).max():.2e}")  # fmt: skip
    unm = outs[f"unmerged r{args.rank}"]
    print(f"max |merged - unmerged| output difference: {np.abs(outs['merged'] - unm).max():.2e}")
    times: dict[str, list[tuple[float, float]]] = {label: [] for label in runs}
    for _ in range(args.repeats):
        for label, run in runs.items():
            times[label].append(timed(run))
    rtf = {}
    for label, ts in times.items():
        wall = [t[0] for t in ts]
        rtf[label] = statistics.median(wall) / args.seconds
        cpu = statistics.median(t[1] for t in ts)
        print(f"{label:<22} RTF {rtf[label]:.3f}  (median of {len(ts)}: {statistics.median(wall):.2f} s; "
              f"min {min(wall):.2f}, max {max(wall):.2f}; CPU {cpu:.2f} s)")  # fmt: skip
    print(f"fast / pre-change (base) = {rtf['base'] / rtf['base, pre-change']:.3f}")
    print(f"unmerged / merged = {rtf[f'unmerged r{args.rank}'] / rtf['merged']:.3f} "
          f"(goal <= {GOAL_UNMERGED:.2f})")  # fmt: skip
    if stock is not None:
        rvc_rtf, source = rtf[f"stock RVC {RVC_RELEASE}"], "live, same run"
    else:
        ref = recorded_reference()
        if ref is None:
            print("stock RVC: not measured; give --rvc-root DIR (or run bench/rvc_stock.py)")
            return
        rvc_rtf = float(ref["rtf"])
        source = (f"recorded {ref['date']} by `{ref['command']}`, {ref['seconds']:g} s audio, "
                  f"{ref['threads']} threads, preset {ref['preset']}")  # fmt: skip
        print(f"stock RVC {ref['rvc_release']} RTF {rvc_rtf:.3f} ({source})")
        same = (ref["preset"], ref["seconds"], ref["threads"]) == (
            args.preset, args.seconds, torch.get_num_threads())  # fmt: skip
        if not same:
            print("note: the recorded figure used other settings than this run")
    kind = "live" if stock is not None else "recorded"
    print(f"ours / stock RVC (base) = {rtf['base'] / rvc_rtf:.3f} "
          f"(goal <= {GOAL_VS_RVC}; stock RVC figure {kind})")  # fmt: skip


if __name__ == "__main__":
    main()
