"""Copy a finished ``experiment=pretrain_tiny`` run into ``data/pretrained/tiny/`` (the shipped base).

Writes ``f0G16k.pth`` / ``f0D16k.pth`` in RVC's pretrained layout (``{"model": state}``, fp32,
generator with ``enc_q`` so it can be fine-tuned), and ``pretrain_config.yaml`` +
``pretrain_metrics.json`` recording how they were made.

Usage: python scripts/ship_tiny_base.py RUN_DIR [--out data/pretrained/tiny]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=ROOT / "data" / "pretrained" / "tiny")
    args = parser.parse_args()
    run: Path = args.run_dir
    needed = [run / "generator.pth", run / "discriminator.pth", run / ".hydra" / "config.yaml"]
    missing = [str(p) for p in needed if not p.is_file()]
    if missing:
        sys.exit(f"error: {run} is not a finished pretrain_tiny run (missing {', '.join(missing)})")

    from rvc_lora.models.checkpoint import load_rvc_checkpoint
    from rvc_lora.utils.atomic import atomic_path, atomic_write_text

    loaded = load_rvc_checkpoint(run / "generator.pth", keep_posterior=True)
    if loaded.preset != "tiny":
        sys.exit(f"error: {run / 'generator.pth'} is preset {loaded.preset}, not tiny")
    args.out.mkdir(parents=True, exist_ok=True)
    for name, dest in (("generator.pth", "f0G16k.pth"), ("discriminator.pth", "f0D16k.pth")):
        with atomic_path(args.out / dest) as tmp:
            shutil.copyfile(run / name, tmp)
    with atomic_path(args.out / "pretrain_config.yaml") as tmp:
        shutil.copyfile(run / ".hydra" / "config.yaml", tmp)
    metrics = json.loads((run / "metrics.json").read_text())
    keep = {k: v for k, v in metrics.items() if not isinstance(v, str)}  # no machine paths
    atomic_write_text(args.out / "pretrain_metrics.json", json.dumps(keep, indent=2) + "\n")
    print(f"shipped {run} -> {args.out}")


if __name__ == "__main__":
    main()
