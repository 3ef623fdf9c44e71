"""Switching voices on a resident base vs loading another exported model (CPU, v2_40k).

Two rank-8 ``decoder`` adapters (random B, as after training) are held by one
:class:`~rvc_lora.inference.voices.VoiceBank`; a switch is ``bank.use(name)`` alternating between
them (in-place copy of A/B and the speaker table). The alternative is what a WebUI does to change
voice: ``load_rvc_checkpoint`` of an exported ~55 MB ``.pth`` (written once into a temp dir).

    python bench/bench_voice_switch.py [--preset v2_40k] [--rank 8] [--switches 20] [--loads 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rvc_lora.inference.voices import VoiceBank
from rvc_lora.lora import LoraConfig, inject_lora, lora_layers, save_adapter, unload_lora
from rvc_lora.models import build_synthesizer, export_rvc_model, load_rvc_checkpoint


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="v2_40k")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--switches", type=int, default=20)
    ap.add_argument("--loads", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    base = build_synthesizer(args.preset, True)
    base.remove_posterior()
    base.eval()
    cfg = LoraConfig(preset="decoder", rank=args.rank, alpha=2.0 * args.rank)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(2):
            inject_lora(base, cfg)
            with torch.no_grad():
                for layer in lora_layers(base).values():
                    layer.lora_B.normal_(0.0, 0.01)
            paths.append(save_adapter(base, Path(tmp) / f"voice{i}.safetensors"))
            unload_lora(base, merge=False)
        exported = export_rvc_model(base, Path(tmp) / "voice.pth")
        size_mb = exported.stat().st_size / 1e6

        bank = VoiceBank(base)
        for i, p in enumerate(paths):
            bank.add(f"v{i}", p)
        bank.use("v0")  # first use injects; later switches are in place
        switch = []
        for k in range(args.switches):
            t = time.perf_counter()
            bank.use(f"v{(k + 1) % 2}")
            switch.append(time.perf_counter() - t)

        load = []
        for _ in range(args.loads):
            t = time.perf_counter()
            load_rvc_checkpoint(exported, keep_posterior=False)
            load.append(time.perf_counter() - t)

    sw, ld = statistics.median(switch), statistics.median(load)
    print(
        f"preset {args.preset}, rank {args.rank}, {len(lora_layers(bank.model))} adapted "
        f"layers, {torch.get_num_threads()} threads"
    )
    print(
        f"switch (VoiceBank.use, median of {args.switches}): {sw * 1e3:8.2f} ms "
        f"(min {min(switch) * 1e3:.2f}, max {max(switch) * 1e3:.2f})"
    )
    print(f"load exported .pth ({size_mb:.1f} MB, median of {args.loads}): {ld * 1e3:8.1f} ms")
    print(
        f"ratio load/switch: {ld / sw:.0f}x  (goal: switch <= 20 ms: "
        f"{'met' if sw <= 0.020 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
