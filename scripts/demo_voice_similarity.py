"""How far apart the demo voices are for the speaker model (resemblyzer SECS).

Each cell is the mean cosine similarity over 4 sentence pairs (s01-s02, s03-s04, s05-s06,
s07-s08: the row voice says the first, the column voice the second), so the diagonal compares
one voice with itself on different sentences. ``slt`` comes from ``data/demo/target``, the other
voices from ``data/demo/base``. Writes ``results/demo_voices.json`` (with the command, date and
machine); ``make readme-tables`` renders it into the README.

    python scripts/demo_voice_similarity.py [--out results/demo_voices.json]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
TARGET = "slt"
PAIRS = [("s01", "s02"), ("s03", "s04"), ("s05", "s06"), ("s07", "s08")]


def voice_files() -> dict[str, Path]:
    """Voice name -> its folder: the target first, then the base voices by name."""
    voices = {TARGET: DEMO / "target" / TARGET}
    voices.update({d.name: d for d in sorted((DEMO / "base").iterdir()) if d.is_dir()})
    return voices


def matrix(embed: dict[tuple[str, str], np.ndarray], names: list[str]) -> list[list[float | None]]:
    """Upper-triangular SECS matrix (``None`` below the diagonal) from unit embeddings."""
    out: list[list[float | None]] = []
    for i, a in enumerate(names):
        row: list[float | None] = [None] * len(names)
        for j in range(i, len(names)):
            b = names[j]
            row[j] = float(np.mean([embed[a, x] @ embed[b, y] for x, y in PAIRS]))
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "demo_voices.json")
    args = ap.parse_args(argv)
    from rvc_lora.audio import load_audio
    from rvc_lora.metrics import speaker_embedding
    from rvc_lora.report.provenance import stamp, write_json

    start = time.perf_counter()
    folders = voice_files()
    names = list(folders)
    sentences = sorted({s for pair in PAIRS for s in pair})
    embed = {
        (v, s): speaker_embedding(load_audio(folders[v] / f"{s}.flac", 16_000)[0], 16_000)
        for v in names
        for s in sentences
    }
    given = sys.argv[1:] if argv is None else list(argv)
    record = {
        **stamp([sys.executable, "scripts/demo_voice_similarity.py", *given],
                time.perf_counter() - start),
        "pairs": [list(p) for p in PAIRS],
        "voices": names,
        "secs": matrix(embed, names),
    }  # fmt: skip
    write_json(args.out, record)
    print(f"{args.out}: {len(names)} voices")
    return 0


if __name__ == "__main__":
    sys.exit(main())
