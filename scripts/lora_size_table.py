"""Markdown table: trainable parameters and adapter file size per LoRA preset and rank.

Built on the full-size generator (default ``v2_40k``, f0). "% of G" is relative to the
generator without ``enc_q`` (what RVC's inference model keeps). Sizes are of fp16
``.safetensors`` adapters actually written to a temporary folder (metadata included).

    python scripts/lora_size_table.py [--model v2_40k] [--ranks 4 8 16 32]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from rvc_lora.lora import LoraConfig, inject_lora, save_adapter, trainable_parameters, unload_lora
from rvc_lora.lora.inject import injection
from rvc_lora.models import build_synthesizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="v2_40k")
    ap.add_argument("--ranks", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--presets", nargs="+", default=["decoder", "decoder_flow", "all"])
    args = ap.parse_args()

    model = build_synthesizer(args.model, True)
    n_gen = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("enc_q."))
    print(f"{args.model}: {n_gen:,} generator parameters without enc_q\n")
    print("| preset | rank | modules | LoRA params | extras (emb_g) | trainable | % of G "
          "| adapter KB (fp16) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets:
            for rank in args.ranks:
                names = inject_lora(model, LoraConfig(preset=preset, rank=rank, alpha=2.0 * rank))
                params = trainable_parameters(model)
                extras = set(injection(model).extras)
                n_extra = sum(p.numel() for k, p in params.items() if k in extras)
                n_all = sum(p.numel() for p in params.values())
                path = save_adapter(model, Path(tmp) / f"{preset}_r{rank}.safetensors")
                kb = path.stat().st_size / 1024
                print(f"| {preset} | {rank} | {len(names)} | {n_all - n_extra:,} | {n_extra:,} "
                      f"| {n_all:,} | {100 * n_all / n_gen:.2f} | {kb:,.0f} |")
                unload_lora(model, merge=False)


if __name__ == "__main__":
    main()
