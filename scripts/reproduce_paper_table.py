"""Reproduce the paper table: prepare, sweep (Hydra multiruns), report.

    python scripts/reproduce_paper_table.py [--profile tiny|quick|full] [--seeds 0,1,2] [--dry-run]
                                            [--launcher joblib|local|slurm]
    make reproduce-paper-table [PROFILE=quick] [SEEDS=0,1,2] [LAUNCHER=slurm]
    make lr-grid [LRS=2e-4,5e-4,1e-3,2e-3,4e-3,8e-3] [SEEDS=0]   # --lrs: the learning-rate grid

A profile is a list of blocks; each block is one ``train.py -m experiment=paper_table``
multirun over the cross product of its target voices (``configs/voice/``), training-audio
budgets (``data.max_seconds``: 15, 30, 60 s or ``all``), variants (``configs/variant/``) and the
seeds, into ``<out>/runs/<voice>/<size>/<variant>_seed<s>`` (fixed names: a rerun replaces its
own jobs and keeps the others).

1. Prepare: every voice's training and held-out folders go through ``rvc_lora.data.prepare``
   once, in one process, before any job starts, so no job pays for (or is timed with) HuBERT/F0
   extraction; the jobs then read the shared cache (atomic entries, per-entry locks).
2. Sweep: each block through Hydra's joblib launcher, ``--jobs`` (2) jobs side by side with one
   torch thread each, so every variant is timed under the same load. Each job validates on its
   voice's held-out sentences, stops early on held-out MCD and keeps its best adapter. With
   ``--launcher slurm`` (``LAUNCHER``) every cell is a SLURM job instead (``hydra/launcher=slurm``;
   its settings through ``--set hydra.launcher.partition=...``), ``local`` the same through
   submitit's local executor; the jobs land in the same folders.
3. With ``--eval`` (the ``full`` profile always): ``eval.py run_dir=<job>`` for every job not yet
   scored (conversion from a parallel source speaker, PESQ); under a cluster launcher, one
   ``eval.py -m`` multirun over those jobs through it.
4. ``python -m rvc_lora.report <out>/runs --out <out>``.
5. ``table.csv``, ``table.md``, ``curves.csv`` and the plots are copied into ``--results``
   (default ``results/paper_table``, or ``results/lr_grid`` with ``--lrs``, when ``--out`` is the
   default) beside ``run.json``: command, date, machine, wall time and the plan. The README's
   blocks are rendered from there (``make readme-tables``).

Profiles (``PROFILE`` / ``SEEDS`` environment variables give the defaults):

- ``tiny`` (default): the tiny model on the three held-out demo voices, CPU, seeds 0,1,2.
- ``quick``: fewer cells and seed 0 only, a first look in minutes.
- ``full``: ``model=v2_40k`` with RVC's real weights on a GPU, one job at a time.

``--lrs`` runs the grid that chose the table's learning rates instead: full fine-tuning and the
rank-8 ``decoder`` and ``all`` adapters at each rate, on ``slt`` with all its audio, into
``outputs/lr_grid/``. Every command is printed before it runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
VOICES = ("slt", "espeak_us_f4", "espeak_rp_klatt")
SIZES = ("15", "30", "60", "all")
LR_GRID_VARIANTS = ("full", "decoder_r8", "all_r8")


@dataclass(frozen=True)
class Block:
    """One multirun: the cross product of its voices, audio budgets and variants (x seeds)."""

    voices: tuple[str, ...]
    sizes: tuple[str, ...]
    variants: tuple[str, ...]

    @property
    def cells(self) -> int:
        return len(self.voices) * len(self.sizes) * len(self.variants)


@dataclass(frozen=True)
class Profile:
    blocks: tuple[Block, ...]
    seeds: str
    overrides: tuple[str, ...] = ()
    prepare: tuple[str, ...] = ("model=tiny_demo", "features=demo")
    needs: tuple[str, ...] = ()
    one_job: bool = False  # one GPU: one job at a time
    evaluate: bool = False
    note: str = field(default="", compare=False)


PROFILES: dict[str, Profile] = {
    "tiny": Profile(
        blocks=(
            # The data-size axis: full fine-tuning as RVC does it (D trained) against the
            # earlier attempt's LoRA setting, at every budget.
            Block(VOICES, SIZES, ("full", "decoder_r8")),
            # With all the audio: what freezing D gives on its own, and the other preset.
            Block(VOICES, ("all",), ("full_frozen_d", "all_r8")),
        ),
        seeds="0,1,2",
        note="the tiny model on the three held-out demo voices, CPU",
    ),
    "quick": Profile(
        blocks=(
            Block(VOICES, ("30", "all"), ("full", "decoder_r8")),
            Block(VOICES, ("all",), ("full_frozen_d",)),
        ),
        seeds="0",
        note="a first look: fewer cells, one seed",
    ),
    "full": Profile(
        blocks=(
            Block(VOICES, SIZES, ("full", "full_frozen_d", "decoder_r8", "all_r8")),
            Block(VOICES, ("all",), ("decoder_r4", "decoder_r16", "decoder_r32")),
        ),
        seeds="0,1",
        overrides=(
            "model=v2_40k",
            "features=default",
            "model.pretrained_g=models/pretrained_v2/f0G40k.pth",
            "model.pretrained_d=models/pretrained_v2/f0D40k.pth",
            "trainer=gpu",
        ),
        prepare=("model=v2_40k", "features=default"),
        needs=(
            "models/pretrained_v2/f0G40k.pth",
            "models/pretrained_v2/f0D40k.pth",
            "models/hubert_base.pt",
            "models/rmvpe.pt",
        ),
        one_job=True,
        evaluate=True,
        note="v2_40k with RVC's real weights, GPU",
    ),
}


def restrict(
    profile: Profile,
    voices: list[str] | None = None,
    sizes: list[str] | None = None,
    variants: list[str] | None = None,
) -> Profile:
    """The profile with each block cut down to the given voices, sizes and variants (None keeps
    a block's own); blocks left empty are dropped."""

    def keep(own: tuple[str, ...], chosen: list[str] | None) -> tuple[str, ...]:
        return own if chosen is None else tuple(x for x in own if x in chosen)

    blocks = tuple(
        Block(keep(b.voices, voices), keep(b.sizes, sizes), keep(b.variants, variants))
        for b in profile.blocks
    )
    blocks = tuple(b for b in blocks if b.cells)
    if not blocks:
        raise SystemExit("no cell of the profile is left after --voices/--sizes/--variants")
    return dataclasses.replace(profile, blocks=blocks)


def voice_folders(voice: str) -> list[Path]:
    """The training and held-out folders ``configs/voice/<voice>.yaml`` names."""
    path = ROOT / "configs" / "voice" / f"{voice}.yaml"
    if not path.is_file():
        raise SystemExit(f"voice {voice!r}: no {path.relative_to(ROOT)}; add it or drop the voice")
    data = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("data") or {}
    return [
        Path(str(data[key]).replace("${paths.root_dir}", str(ROOT)))
        for key in ("input_dir", "heldout_dir")
        if data.get(key)
    ]


def prepare_command(
    profile: Profile, voices: list[str], out: Path, python: str, common: list[str]
) -> list[str]:
    """One multirun of ``rvc_lora.data.prepare`` over every folder (one process, imports once)."""
    folders = [str(f) for v in voices for f in voice_folders(v)]
    return [
        python, "-m", "rvc_lora.data.prepare", "-m", *profile.prepare, *common,
        f"data.input_dir={','.join(folders)}", "data.progress=false",
        f"hydra.sweep.dir={out / 'prepare'}",
    ]  # fmt: skip


def sweep_command(
    block: Block,
    seeds: str,
    profile: Profile,
    runs: Path,
    python: str,
    jobs: int,
    extra: list[str] = (),  # type: ignore[assignment]
    launcher: str = "joblib",
) -> list[str]:
    """One Hydra multirun over a block; with ``jobs`` > 1 the joblib launcher runs that many
    jobs side by side, so every variant is timed under the same load; a cluster ``launcher``
    (``local``, ``slurm``) submits every job. ``extra``: overrides for every job (``--set``)."""
    cmd = [
        python, "train.py", "-m", "experiment=paper_table", *profile.overrides, *extra,
        f"voice={','.join(block.voices)}", f"data.max_seconds={','.join(block.sizes)}",
        f"+variant={','.join(block.variants)}", f"seed={seeds}", f"hydra.sweep.dir={runs}",
        "hydra.sweep.subdir=${voice}/${data.max_seconds}/${hydra:runtime.choices.variant}_seed${seed}",
    ]  # fmt: skip
    return cmd + _launcher(jobs, launcher)


def lr_grid_command(
    seeds: str, lrs: str, runs: Path, python: str, jobs: int, launcher: str = "joblib"
) -> list[str]:
    """The learning-rate grid: full and the rank-8 variants at each rate, slt, all its audio."""
    cmd = [
        python, "train.py", "-m", "experiment=paper_table", "voice=slt",
        f"+variant={','.join(LR_GRID_VARIANTS)}", f"train.lr={lrs}", f"seed={seeds}",
        f"hydra.sweep.dir={runs}",
        "hydra.sweep.subdir=${hydra:runtime.choices.variant}_lr${train.lr}_seed${seed}",
    ]  # fmt: skip
    return cmd + _launcher(jobs, launcher)


LAUNCHERS = ("joblib", "local", "slurm")  # joblib: this machine, --jobs at a time


def _launcher(jobs: int, launcher: str = "joblib") -> list[str]:
    if launcher != "joblib":
        return [f"hydra/launcher={launcher}"]
    return ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []


def eval_commands(jobs: list[Path], python: str) -> list[list[str]]:
    """``eval.py run_dir=<job>`` per job not yet scored (an ``eval.json`` newer than its
    ``metrics.json``: jobs of other seeds kept from an earlier run)."""
    return [[python, "eval.py", f"run_dir={job}"] for job in jobs if not _scored(job)]


def eval_sweep_command(
    jobs: list[Path], python: str, launcher: str, out: Path, extra: list[str] = ()
) -> list[str] | None:
    """The jobs :func:`eval_commands` would score, as one ``eval.py -m`` multirun through a
    cluster ``launcher`` (each writes ``eval.json`` into its run dir); None when all are scored.
    ``extra``: the ``--set`` overrides that name ``hydra.launcher.*`` (the partition...)."""
    todo = [str(job) for job in jobs if not _scored(job)]
    if not todo:
        return None
    # Quoted: a path is one list element whatever it holds (commas, '=').
    dirs = ",".join("'" + d.replace("'", "\\'") + "'" for d in todo)
    launcher_keys = [x for x in extra if x.startswith("hydra.launcher.")]
    return [
        python, "eval.py", "-m", f"hydra/launcher={launcher}", *launcher_keys,
        f"run_dir={dirs}", f"hydra.sweep.dir={out / 'eval'}",
    ]  # fmt: skip


def _scored(job: Path) -> bool:
    scores, trained = job / "eval.json", job / "metrics.json"
    return (
        scores.is_file() and trained.is_file() and scores.stat().st_mtime >= trained.stat().st_mtime
    )


def report_command(runs: Path, out: Path, python: str) -> list[str]:
    return [python, "-m", "rvc_lora.report", str(runs), "--out", str(out)]


RESULT_FILES = ("table.csv", "table.md", "curves.csv")
RESULT_PLOTS = ("quality_vs_data_size.png", "quality_vs_wall.png", "overtraining.png")


def copy_results(
    out: Path, results: Path, argv: list[str], wall_s: float, plan: dict | None = None
) -> list[Path]:
    """The report's text files and plots into ``results`` with ``run.json`` (who made them)."""
    from rvc_lora.report.provenance import stamp, write_json
    from rvc_lora.utils.atomic import atomic_write_bytes, atomic_write_text

    written = [
        atomic_write_text(results / name, (out / name).read_text(encoding="utf-8"))
        for name in RESULT_FILES
        if (out / name).is_file()
    ]
    written += [
        atomic_write_bytes(results / name, (out / name).read_bytes())
        for name in RESULT_PLOTS
        if (out / name).is_file()
    ]
    record = stamp(argv, wall_s)
    if plan is not None:
        record["plan"] = plan
    written.append(write_json(results / "run.json", record))
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


def _check_list(text: str, what: str, example: str, ok) -> str:
    parts = [s.strip() for s in text.split(",")]
    try:
        good = bool(parts) and all(p and ok(p) for p in parts)
    except ValueError:
        good = False
    if not good:
        raise SystemExit(f"{what}: expected comma-separated {example}, got {text!r}")
    return ",".join(parts)


def _check_seeds(seeds: str) -> str:
    return _check_list(seeds, "seeds", "integers like 0,1", lambda p: p.lstrip("-").isdigit())


def _check_lrs(lrs: str) -> str:
    return _check_list(lrs, "lrs", "positive numbers like 5e-4,1e-3", lambda p: float(p) > 0)


def plan_summary(profile: Profile, name: str, seeds: str) -> dict:
    """What the run covers, for ``run.json`` and the first line printed."""
    n_seeds = len(seeds.split(","))
    return {
        "profile": name,
        "seeds": seeds,
        "blocks": [asdict(b) for b in profile.blocks],
        "jobs": sum(b.cells for b in profile.blocks) * n_seeds,
    }


def _parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", default=os.environ.get("SEEDS") or None, help="e.g. 0 or 0,1,2")
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
        help="copy the report's files here with run.json (default: results/paper_table or "
        "results/lr_grid when --out is the default, else nowhere)",
    )
    for name, what in (("voices", "target voices"), ("sizes", "audio budgets"), ("variants", "")):
        ap.add_argument(
            f"--{name}",
            default=None,
            help=f"comma-separated {what or 'variants'}: only the profile's cells with these",
        )
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a Hydra override for every training job (repeatable), e.g. trainer.max_steps=40",
    )
    ap.add_argument(
        "--cache-dir", type=Path, default=None, help="feature cache (default: the config's)"
    )
    ap.add_argument("--eval", action="store_true", help="also score conversions with eval.py")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    ap.add_argument(
        "--launcher",
        default=os.environ.get("LAUNCHER") or "joblib",
        choices=LAUNCHERS,
        help="joblib: --jobs at a time on this machine; slurm: one SLURM job per cell "
        "(--set hydra.launcher.partition=...); local: submitit on this machine",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=int(os.environ.get("JOBS") or min(os.cpu_count() or 1, 2)),
        help="jobs side by side (default: 2 on a multi-core CPU; the full profile runs 1)",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    start = time.perf_counter()
    profile = restrict(
        PROFILES[args.profile],
        *(
            getattr(args, k).split(",") if getattr(args, k) else None
            for k in ("voices", "sizes", "variants")
        ),
    )
    seeds = _check_seeds(args.seeds or ("0" if args.lrs else profile.seeds))
    lrs = _check_lrs(args.lrs) if args.lrs else None
    out = args.out or Path("outputs/lr_grid" if lrs else "outputs/paper_table")
    out = out if out.is_absolute() else ROOT / out
    runs, py = out / "runs", sys.executable
    results = args.results
    if results is None and args.out is None:
        results = ROOT / "results" / ("lr_grid" if lrs else "paper_table")
    elif results is not None and not results.is_absolute():
        results = ROOT / results

    missing = [p for p in profile.needs if not (ROOT / p).is_file()]
    if missing and not args.dry_run:
        raise SystemExit(
            f"profile {args.profile}: missing {', '.join(missing)}; fetch RVC's weights with "
            "`rvc-lora download` (model=v2_40k features=default)"
        )
    plan = plan_summary(profile, args.profile, seeds)
    print(
        f"paper table: profile={args.profile} seeds={seeds} jobs={plan['jobs']} out={out}",
        flush=True,
    )
    launcher = args.launcher
    jobs = 1 if profile.one_job else max(args.jobs, 1)
    # Two 2-thread jobs on 2 cores stall each other far more than they gain: one thread each.
    # (submitit's local executor starts every cell at once; SLURM jobs have their own CPUs.)
    shared = (launcher == "joblib" and jobs > 1) or launcher == "local"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} if shared else None

    common = [f"paths.cache_dir={args.cache_dir.resolve()}"] if args.cache_dir else []
    voices = ["slt"] if lrs else list(dict.fromkeys(v for b in profile.blocks for v in b.voices))
    _run(prepare_command(profile, voices, out, py, common), args.dry_run)
    extra = common + list(args.set)
    if lrs:
        _run(lr_grid_command(seeds, lrs, runs, py, jobs, launcher) + extra, args.dry_run, env)
    else:
        for block in profile.blocks:
            cmd = sweep_command(block, seeds, profile, runs, py, jobs, extra, launcher)
            _run(cmd, args.dry_run, env)

    if args.eval or profile.evaluate:
        if args.dry_run:
            keys = " ".join(x for x in args.set if x.startswith("hydra.launcher."))
            how = "eval.py run_dir=<job>" if launcher == "joblib" else (
                f"eval.py -m hydra/launcher={launcher} {keys} run_dir=<jobs>")  # fmt: skip
            print(f"+ {shlex.quote(py)} {how}  # for every job dir under {runs}")
        else:
            from rvc_lora.report import find_job_dirs

            done = find_job_dirs([runs])
            if launcher == "joblib":
                run_side_by_side(eval_commands(done, py), jobs, env)
            elif (cmd := eval_sweep_command(done, py, launcher, out, list(args.set))) is not None:
                _run(cmd, False, env)

    _run(report_command(runs, out, py), args.dry_run)
    if results is not None and not args.dry_run:
        given = sys.argv[1:] if argv is None else list(argv)
        command = [py, "scripts/reproduce_paper_table.py", *given]
        wall = time.perf_counter() - start
        copied = copy_results(out, results, command, wall, None if lrs else plan)
        print(f"results for the README: {', '.join(str(p) for p in copied)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
