"""Print the mutation score of the last `mutmut run` (see docs/mutation.md).

Per mutated file and overall: killed (a test failed; a timeout counts as killed, the mutant hung
a test), survived, no tests, and the share that survived. Then every survivor by name; with
``--diffs`` its one-line change too. Exits 1 when the survivors reach ``--max-survived``.

Usage: python scripts/mutation_score.py [--diffs] [--max-survived 0.10]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections import Counter, defaultdict

KILLED = {"killed", "timeout", "caught by type check"}
MISSED = {"survived", "no tests", "suspicious", "segfault"}


def results() -> dict[str, str]:
    """``{mutant name: status}`` as mutmut reports them."""
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    pairs = (line.strip().rsplit(": ", 1) for line in out.splitlines() if ": " in line)
    return {name: status for name, status in pairs}


def module_of(mutant: str) -> str:
    # rvc_lora.lora.layers.xǁLoraLayerǁmerge__mutmut_3 -> rvc_lora.lora.layers
    return mutant.split(".x", 1)[0]


def diff_line(mutant: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", mutant], capture_output=True, text=True
    ).stdout
    changed = [ln for ln in out.splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")]
    return " | ".join(ln.strip() for ln in changed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--diffs", action="store_true", help="show each survivor's change")
    parser.add_argument("--max-survived", type=float, default=0.10)
    args = parser.parse_args()
    status = results()
    if not status:
        print("no mutmut results: run `make mutation` first")
        return 1
    per_module: dict[str, Counter] = defaultdict(Counter)
    for name, s in status.items():
        per_module[module_of(name)][s] += 1
    total = Counter()
    print(
        f"{'file':32} {'killed':>7} {'survived':>9} {'no tests':>9} {'total':>6} {'survived %':>11}"
    )
    for module, c in sorted(per_module.items()):
        total.update(c)
        print(_row(module, c))
    print(_row("overall", total))
    not_checked = sum(n for s, n in total.items() if s not in KILLED | MISSED)
    if not_checked:
        print(f"{not_checked} mutants not checked (interrupted run?): rerun `make mutation`")
    survivors = sorted(n for n, s in status.items() if s in MISSED)
    print(f"\n{len(survivors)} survivors (docs/mutation.md says why each is harmless):")
    for name in survivors:
        print(f"  {name} [{status[name]}]" + (f"  {diff_line(name)}" if args.diffs else ""))
    share = sum(total[s] for s in MISSED) / max(1, sum(total.values()))
    return 0 if share < args.max_survived and not not_checked else 1


def _row(name: str, c: Counter) -> str:
    killed = sum(c[s] for s in KILLED)
    n = sum(c.values())
    missed = sum(c[s] for s in MISSED)
    return (
        f"{name:32} {killed:7d} {c['survived']:9d} {c['no tests']:9d} {n:6d} "
        f"{100 * missed / max(1, n):10.1f}%"
    )


if __name__ == "__main__":
    sys.exit(main())
