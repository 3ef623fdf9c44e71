"""Throughput of many voices on one base: a mixed-voice batch vs one request at a time.

``--requests`` requests of ``--seconds`` each (content features of that much audio at 100
frames/s, random), over as many rank-``--rank`` ``decoder`` adapters (random, plus a trained
speaker row each) on one full-size base (``--preset``, random weights). Synthesis only: the
content encoder and F0 are per request either way. Throughput = seconds of audio synthesized per
wall second, median of ``--repeats``, interleaved:

- ``one by one``: ``bank.use(voice)`` then ``infer`` per request, as a server swapping adapters
  would (the pipeline's fast decoder);
- ``one by one, module decoder``: the same with ``infer(fast=False)``, the decoder code the mixed
  batch runs;
- ``mixed batch``: one ``bank.infer_mixed`` over all requests, each row with its own adapter.

Issue 21's goal: mixed >= 2x one by one on a GPU, and not slower on a CPU. The last line names
what ``convert_batch(strategy="auto")`` runs on ``--device`` and its throughput here: mixed
batches on CUDA, one by one (voice by voice) elsewhere.

    python bench/bench_mixed.py [--preset v2_40k] [--requests 8] [--seconds 2] [--threads 2]
                                [--repeats 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rvc_lora.inference.mixed import resolve_strategy
from rvc_lora.inference.voices import VoiceBank
from rvc_lora.lora import LoraConfig, inject_lora, lora_layers, save_adapter
from rvc_lora.models import build_synthesizer
from rvc_lora.models.synthesizer import InferNoise, draw_infer_noise


def _base(preset: str, device: str):
    torch.manual_seed(0)
    model = build_synthesizer(preset).eval()
    model.remove_posterior()
    return model.to(device)


def _adapters(preset: str, n: int, rank: int, folder: Path) -> list[Path]:
    paths = []
    for i in range(n):
        model = _base(preset, "cpu")
        inject_lora(model, LoraConfig(preset="decoder", rank=rank, alpha=2 * rank))
        g = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for layer in lora_layers(model).values():
                layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g) * 1e-3)
            model.emb_g.weight.add_(0.1 * torch.randn(model.emb_g.weight.shape, generator=g))
        paths.append(save_adapter(model, folder / f"voice{i}.safetensors"))
    return paths


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="v2_40k")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev, n = args.device, args.requests
    frames = round(args.seconds * 100)
    bank = VoiceBank(_base(args.preset, dev))
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(_adapters(args.preset, n, args.rank, Path(tmp))):
            bank.add(f"voice{i}", path)
    names = bank.voices
    c = bank.model.config
    g = torch.Generator().manual_seed(1)
    phone = torch.randn(n, frames, c.feature_dim, generator=g).to(dev)
    lengths = torch.full((n,), frames, device=dev)
    pitch = torch.randint(1, 256, (n, frames), generator=g).to(dev)
    pitchf = (torch.rand(n, frames, generator=g) * 200 + 100).to(dev)
    sid = torch.zeros(n, dtype=torch.long, device=dev)
    drawn = draw_infer_noise(bank.model, n, frames, generator=g)
    noise = InferNoise(drawn.prior.to(dev), drawn.source.to(dev))

    def one_by_one(fast: bool):
        def run():
            for i, name in enumerate(names):
                row = InferNoise(noise.prior[i : i + 1], noise.source[i : i + 1])
                bank.use(name).infer(phone[i : i + 1], lengths[i : i + 1], pitch[i : i + 1],
                                     pitchf[i : i + 1], sid[i : i + 1], noise=row, fast=fast)  # fmt: skip
            _sync(dev)

        return run

    def mixed():
        bank.infer_mixed(phone, lengths, pitch, pitchf, sid, names, noise=noise)
        _sync(dev)

    runs = {
        "one by one": one_by_one(True),
        "one by one, module decoder": one_by_one(False),
        "mixed batch": mixed,
    }
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for fn in runs.values():
            fn()  # warm-up
        for _ in range(args.repeats):
            for name, fn in runs.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    audio_s = n * args.seconds
    where = f"{args.threads} CPU threads" if dev == "cpu" else torch.cuda.get_device_name()
    print(
        f"{args.preset}, {n} requests x {args.seconds:g} s over {n} rank-{args.rank} voices, "
        f"{where}, median of {args.repeats}"
    )
    rate = {k: audio_s / statistics.median(v) for k, v in times.items()}
    for name, value in rate.items():
        print(f"{name:<28} {value:6.2f} s of audio per s")
    print(f"mixed / one by one: {rate['mixed batch'] / rate['one by one']:.2f}x the throughput")
    auto = resolve_strategy("auto", dev)
    chosen = rate["mixed batch" if auto == "rows" else "one by one"]
    print(f"convert_batch auto on {dev}: {auto}, {chosen:.2f} s of audio per s "
          f"({chosen / rate['one by one']:.2f}x one by one)")  # fmt: skip


if __name__ == "__main__":
    main()
