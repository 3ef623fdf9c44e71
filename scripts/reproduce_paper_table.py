"""Reproduce the paper table: sweep (Hydra multiruns), evaluate each job, build the report.

    python scripts/reproduce_paper_table.py [--seeds 0,1] [--profile tiny|full] [--dry-run]
    make reproduce-paper-table [SEEDS=0,1] [PROFILE=full]
    make lr-grid [LRS=2e-4,5e-4,1e-3,2e-3,4e-3,8e-3] [SEEDS=0]   # --lrs: the learning-rate grid

1. ``train.py -m experiment=paper_table +variant=full,decoder_r4,...,all_r32`` (``configs/variant/``:
   full fine-tuning, and LoRA ranks 4/8/16/32 on the ``decoder`` and ``all`` presets) for every
   seed, ``--jobs`` (2) at a time through Hydra's joblib launcher with one torch thread each, into
   ``<out>/runs/<variant>_seed<s>`` (names fixed by the config, so a rerun replaces its own jobs
   and keeps jobs of other seeds).
2. ``python eval.py run_dir=<job>`` for every job dir not yet scored, ``--jobs`` at a time with
   one thread each as well (the RTF in each ``eval.json`` is then a one-thread figure), when
   ``eval.py`` exists at the repo root (otherwise skipped with a note: the table then shows –
   for MCD, F0, SECS, PESQ).
3. ``python -m rvc_lora.report <out>/runs --out <out>``.
4. ``table.csv`` and ``table.md`` are copied into ``--results`` (default ``results/paper_table``,
   or ``results/lr_grid`` with ``--lrs``, when ``--out`` is the default) beside ``run.json``: the
   command, date, machine and wall time. The README's tables are rendered from there
   (``make readme-tables``), so commit them with the README.

``--lrs`` runs the grid that chose the table's learning rates instead (``experiment/paper_table``
and ``variant/full``): full fine-tuning and the rank-8 ``decoder`` and ``all`` adapters at each
rate, into ``outputs/lr_grid/`` (the report tells the rates apart: ``lora r8 all lr=0.004``).

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
import time
from concurrent.futures import ThreadPoolExecutor
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


LR_GRID_VARIANTS = ["full", "decoder_r8", "all_r8"]


def variants() -> list[str]:
    """``configs/variant/`` options: full fine-tuning first, then LoRA by preset and rank."""
    return ["full"] + [f"{p}_r{r}" for p in PRESETS.split(",") for r in RANKS.split(",")]


def sweep_command(
    seeds: str, profile: str, runs: Path, python: str, jobs: int, lrs: str | None = None
) -> list[str]:
    """One Hydra multirun over every variant and seed. With ``jobs`` > 1, Hydra's joblib
    launcher runs that many jobs side by side, so every variant is timed under the same load.
    With ``lrs``, the learning-rate grid instead: full and the rank-8 variants at each rate."""
    names, subdir = variants(), "${hydra:runtime.choices.variant}_seed${seed}"
    extra = []
    if lrs:
        names, subdir = (
            LR_GRID_VARIANTS,
            "${hydra:runtime.choices.variant}_lr${train.lr}_seed${seed}",
        )
        extra = [f"train.lr={lrs}"]
    cmd = [
        python, "train.py", "-m", "experiment=paper_table", *PROFILES[profile],
        f"+variant={','.join(names)}", *extra, f"seed={seeds}", f"hydra.sweep.dir={runs}",
        f"hydra.sweep.subdir={subdir}",
    ]  # fmt: skip
    if jobs > 1:
        cmd += ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"]
    return cmd


def eval_commands(jobs: list[Path], python: str) -> list[list[str]]:
    """``eval.py run_dir=<job>`` per job not yet scored (an ``eval.json`` newer than its
    ``metrics.json``: jobs of other seeds kept from an earlier run), or nothing when there is no
    ``eval.py``."""
    if not (ROOT / "eval.py").is_file():
        return []
    return [[python, "eval.py", f"run_dir={job}"] for job in jobs if not _scored(job)]


def _scored(job: Path) -> bool:
    scores, trained = job / "eval.json", job / "metrics.json"
    return (
        scores.is_file() and trained.is_file() and scores.stat().st_mtime >= trained.stat().st_mtime
    )


def report_command(runs: Path, out: Path, python: str) -> list[str]:
    return [python, "-m", "rvc_lora.report", str(runs), "--out", str(out)]


RESULT_FILES = ("table.csv", "table.md")


def copy_results(out: Path, results: Path, argv: list[str], wall_s: float) -> list[Path]:
    """The report's small text files into ``results`` with ``run.json`` (who made them)."""
    from rvc_lora.report.provenance import stamp, write_json
    from rvc_lora.utils.atomic import atomic_write_text

    written = [
        atomic_write_text(results / name, (out / name).read_text(encoding="utf-8"))
        for name in RESULT_FILES
    ]
    written.append(write_json(results / "run.json", stamp(argv, wall_s)))
    return written


def _run(cmd: list[str], dry_run: bool, env: dict[str, str] | None = None) -> None:
    print("+ " + shlex.join(cmd), flush=True)
    if not dry_run:
        subprocess.run(cmd, cwd=ROOT, check=True, env=env)


def run_side_by_side(cmds: list[list[str]], jobs: int, env: dict[str, str] | None) -> None:
    """Run ``cmds`` ``jobs`` at a time; each one's output is printed whole when it ends, and the
    first failure stops the rest with its command and the end of its output."""
    if jobs <= 1:
        for cmd in cmds:
            _run(cmd, dry_run=False, env=env)
        return

    def one(cmd: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)

    with ThreadPoolExecutor(jobs) as pool:
        for cmd, done in zip(cmds, pool.map(one, cmds)):
            print("+ " + shlex.join(cmd) + "\n" + done.stdout, end="", flush=True)
            if done.returncode != 0:
                pool.shutdown(cancel_futures=True)
                sys.stderr.write(done.stderr[-3000:])
                raise SystemExit(f"failed (exit {done.returncode}): {shlex.join(cmd)}")


def _check_seeds(seeds: str) -> str:
    parts = [s.strip() for s in seeds.split(",")]
    if not parts or not all(p.lstrip("-").isdigit() for p in parts):
        raise SystemExit(f"seeds: expected comma-separated integers like 0,1, got {seeds!r}")
    return ",".join(parts)


def _check_lrs(lrs: str) -> str:
    parts = [s.strip() for s in lrs.split(",")]
    try:
        ok = all(float(p) > 0 for p in parts)
    except ValueError:
        ok = False
    if not ok:
        raise SystemExit(
            f"lrs: expected comma-separated positive numbers like 5e-4,1e-3, got {lrs!r}"
        )
    return ",".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default=os.environ.get("SEEDS") or "0", help="e.g. 0 or 0,1")
    ap.add_argument(
        "--profile", default=os.environ.get("PROFILE") or "tiny", choices=sorted(PROFILES)
    )
    ap.add_argument(
        "--lrs",
        default=os.environ.get("LRS") or None,
        help="learning-rate grid instead of the table, e.g. 5e-4,1e-3 (default out: outputs/lr_grid)",
    )
    ap.add_argument("--out", type=Path, default=None, help="default: outputs/paper_table")
    ap.add_argument(
        "--results",
        type=Path,
        default=None,
        help="copy table.csv/table.md here with run.json (default: results/paper_table or "
        "results/lr_grid when --out is the default, else nowhere)",
    )
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ.get("JOBS") or min(os.cpu_count() or 1, 2)),
        help="jobs side by side (default: 2 on a multi-core CPU; 1 for GPU timings)",
    )
    args = ap.parse_args(argv)
    start = time.perf_counter()
    seeds = _check_seeds(args.seeds)
    lrs = _check_lrs(args.lrs) if args.lrs else None
    out = args.out or Path("outputs/lr_grid" if lrs else "outputs/paper_table")
    out = out if out.is_absolute() else ROOT / out
    runs, py = out / "runs", sys.executable
    results = args.results
    if results is None and args.out is None:
        results = ROOT / "results" / ("lr_grid" if lrs else "paper_table")
    elif results is not None and not results.is_absolute():
        results = ROOT / results

    missing = [p for p in NEEDS.get(args.profile, []) if not (ROOT / p).is_file()]
    if missing and not args.dry_run:
        raise SystemExit(
            f"profile {args.profile}: missing {', '.join(missing)}; fetch RVC's weights with "
            "`rvc-lora download` (model=v2_40k features=default)"
        )
    print(f"paper table: profile={args.profile} seeds={seeds} out={out}", flush=True)
    jobs = 1 if args.profile == "full" else max(args.jobs, 1)  # one GPU: one job at a time
    # Two 2-thread jobs on 2 cores stall each other far more than they gain: one thread each.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} if jobs > 1 else None
    _run(sweep_command(seeds, args.profile, runs, py, jobs, lrs), args.dry_run, env)

    if (ROOT / "eval.py").is_file():
        if args.dry_run:
            print(f"+ {shlex.quote(py)} eval.py run_dir=<job>  # for every job dir under {runs}")
        else:
            from rvc_lora.report import find_job_dirs

            run_side_by_side(eval_commands(find_job_dirs([runs]), py), jobs, env)
    else:
        print("note: no eval.py at the repo root; skipping evaluation (MCD, F0, SECS, PESQ: –)")

    _run(report_command(runs, out, py), args.dry_run)
    if results is not None and not args.dry_run:
        given = sys.argv[1:] if argv is None else list(argv)
        command = [py, "scripts/reproduce_paper_table.py", *given]
        copied = copy_results(out, results, command, time.perf_counter() - start)
        print(f"results for the README: {', '.join(str(p) for p in copied)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
