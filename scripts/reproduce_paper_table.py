"""Reproduce the paper table: sweep (Hydra multiruns), evaluate each job, build the report.

    python scripts/reproduce_paper_table.py [--seeds 0,1] [--profile tiny|full] [--dry-run]
    make reproduce-paper-table [SEEDS=0,1] [PROFILE=full]

1. ``train.py -m experiment=paper_table`` over ``lora.rank=4,8,16,32`` for ``lora=decoder`` and
   for ``lora=all`` (one multirun each), and ``lora=full``, for every seed, ``--jobs`` (2) at a
   time with one torch thread each, into ``<out>/runs/{lora,full}/<preset>_r<rank>_seed<s>``
   (names fixed by the config, so a rerun replaces its own jobs and keeps jobs of other seeds).
2. ``python eval.py run_dir=<job>`` for every job dir, when ``eval.py`` exists at the repo root
   (otherwise skipped with a note: the table then shows – for MCD, F0, SECS, PESQ).
3. ``python -m rvc_lora.report <out>/runs --out <out>``.

Profiles: ``tiny`` (default) is the tiny model on the demo corpus on CPU, minutes per job;
``full`` is ``model=v2_40k`` with RVC's real weights (``features=default``, pretrained G/D from
``models/pretrained_v2/``, as ``rvc-lora download`` lays them out) and ``trainer=gpu``.
``SEEDS`` / ``PROFILE`` environment variables give the defaults of ``--seeds`` / ``--profile``.
Every command is printed before it runs.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RANKS = "4,8,16,32"
PRESETS = "decoder,all"
PROFILES: dict[str, list[str]] = {
    "tiny": [],
    "full": [
        "model=v2_40k",
        "features=default",
        "model.pretrained_g=models/pretrained_v2/f0G40k.pth",
        "model.pretrained_d=models/pretrained_v2/f0D40k.pth",
        "trainer=gpu",
    ],
}
# Files a profile needs before anything runs.
NEEDS: dict[str, list[str]] = {
    "full": [
        "models/pretrained_v2/f0G40k.pth",
        "models/pretrained_v2/f0D40k.pth",
        "models/hubert_base.pt",
        "models/rmvpe.pt",
    ]
}


def sweep_commands(seeds: str, profile: str, runs: Path, python: str) -> list[list[str]]:
    """Hydra multiruns: one per LoRA preset over the ranks, and the full fine-tuning baseline.

    Split by preset so that ``--jobs`` workers can run them side by side."""
    common = [python, "train.py", "-m", "experiment=paper_table", *PROFILES[profile]]
    lora = [
        [
            *common,
            f"lora={preset}",
            f"lora.rank={RANKS}",
            f"seed={seeds}",
            f"hydra.sweep.dir={runs / 'lora'}",
            "hydra.sweep.subdir=${lora.preset}_r${lora.rank}_seed${seed}",
        ]
        for preset in PRESETS.split(",")
    ]
    full = [
        *common,
        "lora=full",
        f"seed={seeds}",
        f"hydra.sweep.dir={runs / 'full'}",
        "hydra.sweep.subdir=full_seed${seed}",
    ]
    return [full, *lora]  # the longest first, so the workers finish together


def eval_commands(jobs: list[Path], python: str) -> list[list[str]]:
    """``eval.py run_dir=<job>`` per job, or nothing when there is no ``eval.py``."""
    if not (ROOT / "eval.py").is_file():
        return []
    return [[python, "eval.py", f"run_dir={job}"] for job in jobs]


def report_command(runs: Path, out: Path, python: str) -> list[str]:
    return [python, "-m", "rvc_lora.report", str(runs), "--out", str(out)]


def _run(cmd: list[str], dry_run: bool) -> None:
    print("+ " + shlex.join(cmd), flush=True)
    if not dry_run:
        subprocess.run(cmd, cwd=ROOT, check=True)


def _run_all(cmds: list[list[str]], jobs: int, dry_run: bool) -> None:
    """Run ``cmds`` with at most ``jobs`` at a time, one torch thread each when several run
    (two 2-thread processes on 2 cores stall each other far more than they gain)."""
    if jobs <= 1 or dry_run:
        for cmd in cmds:
            _run(cmd, dry_run)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pending, running = list(cmds), []
    while pending or running:
        while pending and len(running) < jobs:
            cmd = pending.pop(0)
            print("+ " + shlex.join(cmd), flush=True)
            running.append((cmd, subprocess.Popen(cmd, cwd=ROOT, env=env)))
        cmd, proc = running.pop(0)
        if proc.wait() != 0:
            for _, other in running:
                other.terminate()
            raise SystemExit(f"failed ({proc.returncode}): {shlex.join(cmd)}")


def _check_seeds(seeds: str) -> str:
    parts = [s.strip() for s in seeds.split(",")]
    if not parts or not all(p.lstrip("-").isdigit() for p in parts):
        raise SystemExit(f"seeds: expected comma-separated integers like 0,1, got {seeds!r}")
    return ",".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default=os.environ.get("SEEDS") or "0", help="e.g. 0 or 0,1")
    ap.add_argument(
        "--profile", default=os.environ.get("PROFILE") or "tiny", choices=sorted(PROFILES)
    )
    ap.add_argument("--out", type=Path, default=Path("outputs/paper_table"))
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ.get("JOBS") or min(os.cpu_count() or 1, 2)),
        help="jobs side by side (default: 2 on a multi-core CPU; 1 for GPU timings)",
    )
    args = ap.parse_args(argv)
    seeds = _check_seeds(args.seeds)
    out = args.out if args.out.is_absolute() else ROOT / args.out
    runs, py = out / "runs", sys.executable

    missing = [p for p in NEEDS.get(args.profile, []) if not (ROOT / p).is_file()]
    if missing and not args.dry_run:
        raise SystemExit(
            f"profile {args.profile}: missing {', '.join(missing)}; fetch RVC's weights with "
            "`rvc-lora download` (model=v2_40k features=default)"
        )
    print(f"paper table: profile={args.profile} seeds={seeds} out={out}", flush=True)
    jobs = 1 if args.profile == "full" else max(args.jobs, 1)  # one GPU: one job at a time
    _run_all(sweep_commands(seeds, args.profile, runs, py), jobs, args.dry_run)

    if (ROOT / "eval.py").is_file():
        if args.dry_run:
            print(f"+ {shlex.quote(py)} eval.py run_dir=<job>  # for every job dir under {runs}")
        else:
            from rvc_lora.report import find_job_dirs

            _run_all(eval_commands(find_job_dirs([runs]), py), jobs, dry_run=False)
    else:
        print("note: no eval.py at the repo root; skipping evaluation (MCD, F0, SECS, PESQ: –)")

    _run(report_command(runs, out, py), args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
