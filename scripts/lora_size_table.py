"""Markdown table: trainable parameters and adapter file size per LoRA preset and rank.

Built on the full-size generator (default ``v2_40k``, f0). "% of G" is relative to the
generator without ``enc_q`` (what RVC's inference model keeps). Sizes are of fp16
``.safetensors`` adapters actually written to a temporary folder (metadata included).

    python scripts/lora_size_table.py [--model v2_40k] [--ranks 4 8 16 32] [--out results/lora_sizes]

With ``--out`` the table goes to ``table.md`` in that folder, beside ``run.json`` (the command,
date and machine); ``make readme-tables`` renders the README's adapter-size block from them.
"""

from __future__ import annotations

import argparse
import sys
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
    ap.add_argument("--out", type=Path, help="write table.md and run.json into this folder")
    args = ap.parse_args()
    lines = table(args.model, args.ranks, args.presets)
    print("\n".join(lines))
    if args.out:
        from rvc_lora.report.provenance import stamp, write_json
        from rvc_lora.utils.atomic import atomic_write_text

        atomic_write_text(args.out / "table.md", "\n".join(lines) + "\n")
        write_json(args.out / "run.json", stamp([sys.executable, *sys.argv]))


def table(model_name: str, ranks: list[int], presets: list[str]) -> list[str]:
    """Markdown lines of the table (header line included)."""

    model = build_synthesizer(model_name, True)
    n_gen = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("enc_q."))
    lines = [
        f"`{model_name}`: {n_gen:,} generator parameters without enc_q.",
        "",
        "| preset | rank | modules | LoRA params | extras (emb_g) | trainable | % of G "
        "| adapter KB (fp16) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            for rank in ranks:
                names = inject_lora(model, LoraConfig(preset=preset, rank=rank, alpha=2.0 * rank))
                params = trainable_parameters(model)
                extras = set(injection(model).extras)
                n_extra = sum(p.numel() for k, p in params.items() if k in extras)
                n_all = sum(p.numel() for p in params.values())
                path = save_adapter(model, Path(tmp) / f"{preset}_r{rank}.safetensors")
                kb = path.stat().st_size / 1024
                lines.append(
                    f"| {preset} | {rank} | {len(names)} | {n_all - n_extra:,} "
                    f"| {n_extra:,} | {n_all:,} | {100 * n_all / n_gen:.2f} | {kb:,.0f} |"
                )
                unload_lora(model, merge=False)
    return lines


if __name__ == "__main__":
    main()
