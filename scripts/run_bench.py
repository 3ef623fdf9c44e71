"""`make bench`: run the benchmark scripts and keep what each printed for the README.

    python scripts/run_bench.py                 # every bench/bench_*.py
    python scripts/run_bench.py bench_f0 ...    # some of them

Each script's output is printed and stored in ``results/bench/<script>.json`` with the command,
date, machine and wall time; ``make readme-tables`` renders the README's Benchmarks block from
those files. Run it on an otherwise idle machine: the figures are timings.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="bench script names (default: all)")
    ap.add_argument("--results", type=Path, default=ROOT / "results" / "bench")
    args = ap.parse_args(argv)

    from rvc_lora.report.provenance import stamp, write_json

    scripts = sorted((ROOT / "bench").glob("bench_*.py"))
    if args.names:
        wanted = {n.removesuffix(".py") for n in args.names}
        unknown = wanted - {s.stem for s in scripts}
        if unknown:
            known = ", ".join(s.stem for s in scripts)
            raise SystemExit(
                f"unknown bench script(s) {', '.join(sorted(unknown))}; one of {known}"
            )
        scripts = [s for s in scripts if s.stem in wanted]
    for script in scripts:
        cmd = [sys.executable, f"bench/{script.name}"]
        print(f"== {script.relative_to(ROOT)}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        print(done.stdout, end="", flush=True)
        if done.returncode != 0:
            raise SystemExit(f"failed (exit {done.returncode}): {script.relative_to(ROOT)}")
        record = {**stamp(cmd, time.perf_counter() - start), "output": done.stdout}
        write_json(args.results / f"{script.stem}.json", record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
