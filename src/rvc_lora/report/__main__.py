"""``python -m rvc_lora.report ROOT... --out outputs/paper_table``: build the paper table."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m rvc_lora.report",
        description="Collect training job dirs (run_info.json + metrics.json) below ROOTs into "
        "table.csv, table.md and plots.",
    )
    ap.add_argument("roots", nargs="+", metavar="ROOT", help="a job dir or a folder of them")
    ap.add_argument("--out", default="outputs/paper_table", help="report folder")
    args = ap.parse_args(argv)

    from rvc_lora.report import ReportError, collect, write_report  # lazy: fast --help

    try:
        rows = collect(args.roots)
        written = write_report(rows, args.out)
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{len(rows)} jobs -> {', '.join(str(p) for p in written.values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
