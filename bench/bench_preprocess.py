"""Preprocessing time of one minute of speech: slicing, F0 and HuBERT, ours against stock RVC's.

Issue 17 asks for the preparation of one minute of audio (slices, F0, content features) in at
most half the time of RVC's own training scripts on the same 2 CPU cores. The minute is the demo
voice's first recordings (``data/demo/target/slt``, 60 s in 20 files), prepared for a 40 kHz v2
model with F0 by pm and by harvest. Every run is a fresh process on an empty cache, so each
figure includes starting Python, imports and loading the encoder.

- ours: ``FeatureCacheBuilder`` with one process and with a pool (``--workers``, default 2);
  the bench checks that both wrote the same entries, bit for bit.
- stock RVC (release 2.2.231006, a checkout named by ``--rvc-root`` or ``RVC_ROOT``; none of its
  code is part of this repository): ``preprocess.py`` (2 processes), ``extract_f0_print.py``
  (2 processes) and ``extract_feature_print.py`` (one process, torch's default threads), run as
  its WebUI runs them. Its ``load_audio`` decodes with PyAV (``pip install av``; the bench lets
  PyAV 12+ take RVC's ``"rb"`` open mode). fairseq is replaced by a stand-in module whose ``load_model_ensemble_and_task`` returns our HuBERT behind
  fairseq's interface, so both sides run the same network with the same weights.

The HuBERT is of the real size (HuBERT-Base, 94M parameters) with random weights: the compute is
that of ``hubert_base.pt``. ``--record`` stores stock RVC's figures in
``results/bench/rvc_preprocess_reference.json``; without ``--rvc-root`` the recorded figures are
printed beside ours.

    python bench/bench_preprocess.py [--f0 pm,harvest] [--workers 2] [--rvc-root DIR [--record]]
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "results" / "bench" / "rvc_preprocess_reference.json"
DEMO = ROOT / "data" / "demo" / "target" / "slt"
RVC_RELEASE = "2.2.231006"
SECONDS = 60.0
SAMPLE_RATE = 40000  # the model rate of the slices (RVC's 40k models)
N_P = 2  # RVC's process count for slicing and F0 (the WebUI's default is every core)
GOAL = 0.5


# -- the audio and the encoder -----------------------------------------------------------------
def minute_of_speech(dest: Path) -> tuple[list[Path], float]:
    """Copy demo recordings into the flat folder ``dest`` until they add up to a minute."""
    import soundfile as sf

    dest.mkdir(parents=True)
    files, total = [], 0.0
    for src in sorted(DEMO.glob("*.flac")):
        files.append(Path(shutil.copy(src, dest / src.name)))
        total += sf.info(src).duration
        if total >= SECONDS:
            break
    return files, total


def make_encoder(dest: Path) -> int:
    """A HuBERT-Base-size content encoder with random weights, saved as an HF folder."""
    import torch
    from transformers import HubertConfig

    from rvc_lora.features.hubert import ContentEncoder

    torch.manual_seed(0)
    encoder = ContentEncoder(HubertConfig(classifier_proj_size=256))
    encoder.save_hf_dir(dest)
    return sum(p.numel() for p in encoder.parameters())


# -- children: each timed run is a fresh process -------------------------------------------------
def child_ours(input_dir: str, cache: str, encoder: str, f0: str, workers: int) -> None:
    from rvc_lora.audio import find_audio_files
    from rvc_lora.data.features_cache import FeatureCacheBuilder, FeatureSettings
    from rvc_lora.data.preprocess import PrepSettings

    features = FeatureSettings(version="v2", encoder_path=encoder, f0_method=f0)
    builder = FeatureCacheBuilder(
        cache, PrepSettings(sr=SAMPLE_RATE), features, num_workers=workers, progress=False
    )
    report = builder.build(input_dir, find_audio_files(input_dir))
    print(json.dumps({"slices": len(report.items), "skipped": len(report.skipped)}))


class _FairseqHubert:
    """What RVC's ``extract_feature_print.py`` uses of a fairseq HuBERT, on our encoder."""

    def __init__(self, encoder: Any) -> None:
        self.encoder = encoder
        self.final_proj = encoder.final_proj

    def to(self, device: Any) -> _FairseqHubert:
        self.encoder.to(device)
        return self

    def half(self) -> _FairseqHubert:
        self.encoder.half()
        return self

    def eval(self) -> _FairseqHubert:
        return self

    def extract_features(
        self, source: Any, padding_mask: Any = None, output_layer: int | None = None
    ) -> tuple[Any, Any]:
        layer = output_layer or self.encoder.num_layers
        return self.encoder.layer_output(source, layer), padding_mask


def child_rvc(script: str, encoder: str, *argv: str) -> None:
    """Run one of RVC's scripts as ``python SCRIPT ARGV...``, with two stand-ins.

    ``fairseq`` returns our encoder (see the module docstring). PyAV 12 and later accept only
    ``"r"``/``"w"`` as modes, and RVC's ``load_audio`` opens with ``"rb"``/``"wb"`` (PyAV 11 and
    before ignored the ``b``), so ``av.open`` gets the mode without it; nothing else changes.
    """
    import av

    def load_model_ensemble_and_task(paths: list[str], suffix: str = "") -> tuple:
        # imported here: the slicing and F0 scripts should not pay for transformers
        from rvc_lora.features.hubert import load_content_encoder

        cfg = types.SimpleNamespace(task=types.SimpleNamespace(normalize=False))  # hubert_base.pt
        return [_FairseqHubert(load_content_encoder(encoder))], cfg, None

    fairseq = types.ModuleType("fairseq")
    fairseq.checkpoint_utils = types.SimpleNamespace(
        load_model_ensemble_and_task=load_model_ensemble_and_task
    )
    sys.modules["fairseq"] = fairseq
    av_open = av.open
    av.open = lambda file, mode=None, *a, **k: av_open(file, mode and mode.rstrip("b"), *a, **k)
    sys.argv = [script, *argv]
    runpy.run_path(script, run_name="__main__")


# -- timed runs ------------------------------------------------------------------------------
def _timed(cmd: list[str], cwd: Path, log: Path) -> float:
    start = time.perf_counter()
    with open(log, "ab") as out:
        done = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    took = time.perf_counter() - start
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"failed (exit {done.returncode}): {' '.join(cmd)}\n{tail}")
    return took


def run_ours(work: Path, inputs: Path, encoder: Path, f0: str, workers: int) -> float:
    cache = work / f"ours-{f0}-{workers}"
    cmd = [sys.executable, __file__, "--child-ours", str(inputs), str(cache), str(encoder), f0]
    return _timed([*cmd, str(workers)], ROOT, work / "ours.log")


def run_rvc(work: Path, rvc_root: Path, inputs: Path, encoder: Path, f0: str) -> dict[str, float]:
    """Stock RVC's three training scripts on ``inputs``, as its WebUI runs them (seconds each)."""
    home = work / f"rvc-{f0}"
    (home / "assets" / "hubert").mkdir(parents=True)
    (home / "assets" / "hubert" / "hubert_base.pt").write_bytes(b"")  # it checks the file exists
    (home / "infer").symlink_to(rvc_root / "infer")  # its scripts import from the working dir
    exp = home / "logs" / "bench"
    exp.mkdir(parents=True)
    train = rvc_root / "infer" / "modules" / "train"
    child = [sys.executable, __file__, "--child-rvc"]
    steps = {
        "slice": [str(train / "preprocess.py"), str(inputs), str(SAMPLE_RATE), str(N_P)]
        + [str(exp), "False", "3.7"],  # noparallel=False; per=3.7 s (fp32, as on a CPU)
        "f0": [str(train / "extract" / "extract_f0_print.py"), str(exp), str(N_P), f0],
        # device n_part i_part exp_dir version: one process, as the WebUI on a CPU
        "hubert": [str(train / "extract_feature_print.py"), "cpu", "1", "0", str(exp), "v2"],
    }
    log = work / f"rvc-{f0}.log"
    steps = {k: [*child, v[0], str(encoder), *v[1:]] for k, v in steps.items()}
    times = {name: _timed(cmd, home, log) for name, cmd in steps.items()}
    made = {d: len(list((exp / d).glob("*.npy"))) for d in ("2b-f0nsf", "3_feature768")}
    slices = len(list((exp / "0_gt_wavs").glob("*.wav")))
    if not slices or set(made.values()) != {slices}:
        raise SystemExit(f"stock RVC made {slices} slices but {made}; see {log}")
    return {**times, "slices": slices}


def same_entries(a: Path, b: Path) -> int:
    """Number of cache entries, after checking that both caches hold the same arrays."""
    import numpy as np

    from rvc_lora.data.cache import read_entry

    names = sorted(p.relative_to(a) for p in a.rglob("*.npz"))
    if names != sorted(p.relative_to(b) for p in b.rglob("*.npz")):
        raise SystemExit(f"{a} and {b} hold different entries")
    for name in names:
        x, y = read_entry(a / name), read_entry(b / name)
        if x is None or y is None or x.keys() != y.keys():
            raise SystemExit(f"{name}: unreadable or different arrays")
        if not all(np.array_equal(x[k], y[k]) for k in x):
            raise SystemExit(f"{name}: the pool wrote other values than one process")
    return len(names)


# -- main --------------------------------------------------------------------------------------
def _reference() -> dict[str, Any] | None:
    try:
        return json.loads(REFERENCE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--f0", default="pm,harvest", help="F0 methods, comma-separated")
    ap.add_argument("--workers", type=int, default=2, help="our pool's size")
    ap.add_argument("--rvc-root", type=Path, default=os.environ.get("RVC_ROOT") or None)
    ap.add_argument("--record", action="store_true", help=f"write {REFERENCE.name}")
    args = ap.parse_args(argv)
    methods = args.f0.split(",")
    if args.record and args.rvc_root is None:
        raise SystemExit("--record needs --rvc-root DIR (or RVC_ROOT)")
    if args.rvc_root is not None:
        args.rvc_root = args.rvc_root.resolve()
        if not (args.rvc_root / "infer" / "modules" / "train" / "preprocess.py").is_file():
            raise SystemExit(f"{args.rvc_root}: not a checkout of RVC-WebUI {RVC_RELEASE}")
        try:
            import av  # noqa: F401  (stock RVC's load_audio decodes with PyAV)
        except ImportError:
            raise SystemExit("stock RVC's load_audio needs PyAV: pip install av") from None

    from rvc_lora.report.provenance import stamp, write_json

    with tempfile.TemporaryDirectory(prefix="bench_preprocess-") as tmp:
        work = Path(tmp)
        inputs = work / "input"
        files, seconds = minute_of_speech(inputs)
        params = make_encoder(work / "hubert_base")
        print(
            f"{seconds:.1f} s of speech in {len(files)} files ({DEMO.relative_to(ROOT)}), "
            f"slices at {SAMPLE_RATE // 1000} kHz, v2 features; HuBERT-Base size, random "
            f"weights ({params / 1e6:.1f}M parameters), the same network on both sides"
        )
        load = os.getloadavg()[0]
        print(
            "each run: a fresh process, an empty cache; one run each (noisy on a busy machine: "
            f"load average {load:.1f} at the start)"
        )
        recorded = _reference() if args.rvc_root is None else None
        rvc_all: dict[str, dict[str, float]] = {}
        for f0 in methods:
            one = run_ours(work, inputs, work / "hubert_base", f0, 1)
            pool = run_ours(work, inputs, work / "hubert_base", f0, args.workers)
            n = same_entries(work / f"ours-{f0}-1", work / f"ours-{f0}-{args.workers}")
            print(
                f"f0 {f0:8s} ours: 1 process {one:6.1f} s   {args.workers} workers {pool:6.1f} s"
                f"   ({n} entries, the same bytes)"
            )
            if args.rvc_root is not None:
                rvc = run_rvc(work, args.rvc_root, inputs, work / "hubert_base", f0)
                rvc_all[f0] = rvc
                source = "stock RVC, run now"
            elif recorded is not None and f0 in recorded.get("f0", {}):
                rvc = recorded["f0"][f0]
                source = f"stock RVC, recorded {rvc.get('date', '?')}"
            else:
                print(f"{'':11s}stock RVC: not run (--rvc-root DIR) and not recorded")
                continue
            total = rvc["slice"] + rvc["f0"] + rvc["hubert"]
            print(
                f"{'':11s}{source}: {total:6.1f} s (slicing {rvc['slice']:.1f} + F0 "
                f"{rvc['f0']:.1f} + HuBERT {rvc['hubert']:.1f}; {int(rvc['slices'])} slices)"
            )
            print(f"{'':11s}ours / RVC = {pool / total:.2f} (goal <= {GOAL})")
    if args.record:  # merged per F0 method, each with its own command, date and machine
        record = _reference() or {"rvc_release": RVC_RELEASE, "seconds": round(seconds, 1)}
        for f0, rvc in rvc_all.items():
            cmd = ["python", "bench/bench_preprocess.py", "--f0", f0, "--rvc-root", "DIR"]
            figures = {k: round(v, 2) for k, v in rvc.items()}
            figures["load_average"] = round(load, 1)  # of the whole machine, at the start
            record.setdefault("f0", {})[f0] = {**stamp([*cmd, "--record"]), **figures}
        write_json(REFERENCE, record)
        print(f"recorded in {REFERENCE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-ours":
        child_ours(*sys.argv[2:6], int(sys.argv[6]))
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-rvc":
        child_rvc(*sys.argv[2:])
    else:
        sys.exit(main())
