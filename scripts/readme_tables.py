"""Rewrite README.md's generated blocks from the committed files under ``results/``.

    python scripts/readme_tables.py            # make readme-tables
    python scripts/readme_tables.py --check    # exit 1 when README.md is out of date

The blocks and the commands that write their results files are listed in
``rvc_lora.report.readme``; rerun a command, then this script, to update its figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--results", type=Path, default=ROOT / "results")
    ap.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = ap.parse_args(argv)

    from rvc_lora.report.readme import ReadmeError, update_readme

    try:
        stale = update_readme(args.readme, args.results, check=args.check)
    except (ReadmeError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check and stale:
        print(f"{args.readme}: out of date: {', '.join(stale)}; run `make readme-tables`")
        return 1
    verb = "rewrote" if stale else "up to date:"
    print(f"{args.readme}: {verb} {', '.join(stale) or 'every generated block'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
