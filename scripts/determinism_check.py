"""Is a paper-table run bit-deterministic, and how far does another kernel order move it?

    python scripts/determinism_check.py [--voice slt --size 30 --variants full,decoder_r8 --seed 0]

Runs one paper-table cell per variant three times (``experiment=paper_table``, the table's own
settings): twice with one torch thread, side by side as the sweep runs them, and once with two
threads. Two threads split the convolutions' and matrix products' sums differently, as another
CPU's kernels (AVX2 against AVX-512, another oneDNN version) do: the float rounding changes, and
a GAN's training amplifies it. The sweep's own job of the same cell (``--sweep``, default
``outputs/paper_table/runs``), run in a reused joblib worker, is compared too when it exists.

Writes ``table.md`` and ``run.json`` into ``--results`` (default ``results/determinism``): for
each variant, whether the kept weights are equal (tensors, not file bytes: an adapter's
metadata names its run folder), and the differences of the held-out scores and of the logged
validation MCD, against the first one-thread run; the seed spread of the cell in ``--sweep``
puts them to scale. ``--reuse`` re-tabulates runs already there. ``make readme-tables``
renders the README's block from it.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LABELS = {"a": "1 thread", "b": "1 thread, again", "t2": "2 threads", "sweep": "the sweep's job"}


def train_command(args: argparse.Namespace, variant: str, run_dir: Path) -> list[str]:
    return [
        sys.executable, "train.py", "experiment=paper_table", f"voice={args.voice}",
        f"data.max_seconds={args.size}", f"+variant={variant}", f"seed={args.seed}",
        f"hydra.run.dir={run_dir}", "data.progress=false", "callbacks.progress_bar=null",
        *args.set,
    ]  # fmt: skip


def _train(cmd: list[str], threads: int) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    print("+ " + shlex.join(cmd), flush=True)
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"failed (exit {done.returncode}): {shlex.join(cmd)}")


def tensor_digest(path: Path) -> str:
    """sha256 over a weights file's tensors (names, dtypes, shapes, bytes), not its bytes: an
    adapter file's metadata (its run folder, say) differs between equal runs."""
    if path.suffix == ".safetensors":
        from safetensors.numpy import load_file

        arrays = load_file(str(path))
    else:
        from rvc_lora.utils.safe_load import safe_torch_load

        state = safe_torch_load(path)
        state = state.get("model", state) if isinstance(state, dict) else state
        arrays = {k: v.detach().cpu().numpy() for k, v in state.items() if hasattr(v, "detach")}
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = arrays[name]
        h.update(f"{name}:{a.dtype}:{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def run_facts(run_dir: Path) -> dict:
    """The kept weights' digest, the held-out scores and the validation curve of a run."""
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    artifact = Path(metrics["artifact"])
    if not artifact.is_absolute() or not artifact.is_file():
        artifact = run_dir / artifact.name
    curve = {}
    for path in run_dir.rglob("metrics.csv"):
        with open(path, newline="", encoding="utf-8") as f:
            for rec in csv.DictReader(f):
                if rec.get("val/mcd"):
                    curve[int(rec["step"])] = float(rec["val/mcd"])
    return {
        "digest": tensor_digest(artifact),
        "heldout": metrics.get("heldout") or {},
        "best_step": (metrics.get("early_stop") or {}).get("best_step"),
        "curve": curve,
    }


def _delta(a: dict, b: dict, key: str) -> float:
    x, y = a["heldout"].get(key), b["heldout"].get(key)
    return abs(x - y) if isinstance(x, float) and isinstance(y, float) else math.nan


def _curve_delta(a: dict, b: dict) -> float:
    """Largest |difference| of val/mcd over the validations both runs logged."""
    shared = set(a["curve"]) & set(b["curve"])
    return max((abs(a["curve"][k] - b["curve"][k]) for k in shared), default=math.nan)


def seed_spread(sweep: Path, args: argparse.Namespace, variant: str) -> float | None:
    """Sample std over seeds of the held-out MCD of this cell in the sweep (None: < 2 seeds)."""
    cell = sweep / args.voice / args.size
    values = []
    for job in sorted(cell.glob(f"{variant}_seed*")):
        path = job / "metrics.json"
        if path.is_file():
            mcd = (json.loads(path.read_text(encoding="utf-8")).get("heldout") or {}).get("mcd_db")
            if isinstance(mcd, float):
                values.append(mcd)
    return statistics.stdev(values) if len(values) >= 2 else None


def table(args: argparse.Namespace, facts: dict[str, dict[str, dict]], sweep: Path) -> str:
    lines = [
        f"Cell: voice `{args.voice}`, data {args.size}, seed {args.seed}, the paper table's "
        "settings; each run against the first one-thread run. Held-out scores of the kept "
        "adapter; val MCD: the largest difference over the validations.",
        "",
        "| variant | compared run | kept weights | Δ MCD (dB) | Δ F0 RMSE (cents) | Δ SECS "
        "| Δ val MCD (dB) | seed std of MCD (dB) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for variant, runs in facts.items():
        ref, spread = runs["a"], seed_spread(sweep, args, variant)
        for label, other in runs.items():
            if label == "a":
                continue
            same = "equal" if ref["digest"] == other["digest"] else "differ"
            lines.append(
                f"| {variant} | {LABELS[label]} | {same} | {_delta(ref, other, 'mcd_db'):.3f} "
                f"| {_delta(ref, other, 'f0_rmse_cents'):.1f} | {_delta(ref, other, 'secs'):.3f} "
                f"| {_curve_delta(ref, other):.3f} | {'–' if spread is None else f'{spread:.3f}'} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--voice", default="slt")
    ap.add_argument("--size", default="30", help="data.max_seconds of the cell (or all)")
    ap.add_argument("--variants", default="full,decoder_r8")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], help="extra Hydra override")
    ap.add_argument("--out", type=Path, default=ROOT / "outputs" / "determinism")
    ap.add_argument("--sweep", type=Path, default=ROOT / "outputs" / "paper_table" / "runs")
    ap.add_argument("--results", type=Path, default=ROOT / "results" / "determinism")
    ap.add_argument(
        "--reuse", action="store_true", help="keep runs already in --out (re-tabulate only)"
    )
    args = ap.parse_args(argv)
    start = time.perf_counter()
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    dirs = {v: {k: args.out / v / k for k in ("a", "b", "t2")} for v in variants}
    todo = {(v, k): p for v, d in dirs.items() for k, p in d.items()}
    if args.reuse:  # only the runs whose folder has no metrics.json yet
        todo = {key: p for key, p in todo.items() if not (p / "metrics.json").is_file()}
    one_thread = [(train_command(args, v, p), 1) for (v, k), p in todo.items() if k != "t2"]
    with ThreadPoolExecutor(2) as pool:  # side by side, one thread each, as the sweep runs
        list(pool.map(lambda job: _train(*job), one_thread))
    for (v, k), p in todo.items():
        if k == "t2":
            _train(train_command(args, v, p), 2)

    facts: dict[str, dict[str, dict]] = {}
    for v, d in dirs.items():
        facts[v] = {k: run_facts(path) for k, path in d.items()}
        job = args.sweep / args.voice / args.size / f"{v}_seed{args.seed}"
        if (job / "metrics.json").is_file():
            facts[v]["sweep"] = run_facts(job)
    text = table(args, facts, args.sweep)
    print(text)

    from rvc_lora.report.provenance import stamp, write_json
    from rvc_lora.utils.atomic import atomic_write_text

    given = sys.argv[1:] if argv is None else list(argv)
    atomic_write_text(args.results / "table.md", text)
    record = stamp(["python", "scripts/determinism_check.py", *given], time.perf_counter() - start)
    write_json(args.results / "run.json", record)
    print(f"wrote {args.results / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
