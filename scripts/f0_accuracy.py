"""F0 accuracy of RVC's pitch methods (pm, harvest, dio, fcpe; rmvpe if its weights are there).

    python scripts/f0_accuracy.py [--files 'data/demo/voices/*/eval/*.flac'] [--workers 2]

Every method runs through :func:`rvc_lora.features.f0.compute_f0` with RVC's inference settings
(16 kHz, 10 ms frames, f0 50..1100 Hz, harvest's 3-tap median filter) and is scored against two
references, each biased one way (:mod:`rvc_lora.evaluation.f0_accuracy` has the metrics):

- ``harvest_1ms``: the demo audio itself; the reference is WORLD harvest at a 1 ms frame period
  + stonemask, read at RVC's frame times (frame i at i * 10 ms: every 10th value). A finer run
  of one of the methods, so it favours harvest (and dio, which shares WORLD's stonemask).
- ``world_resynth``: the F0 is known by construction. Each file is analysed with harvest (5 ms)
  + stonemask + cheaptrick + d4c and resynthesised by ``pyworld.synthesize`` from that track
  (peak 0.5), so the track is the new audio's pitch (frame i = every 2nd value). No method is
  favoured, except that WORLD made the audio.

Scores are at RVC's frame indexing (what the synthesizer is given). The methods centre their
frames differently (harvest, dio: i * 10 ms; fcpe: i * 10 ms + 5 ms; pm: a per-file offset from
Praat's centred frames and RVC's central padding), so the RMSE is also given with the reference
read at each method's own frame centres. Files are pooled by frames, per voice and over all.

Writes ``table.md``, ``metrics.json`` and ``run.json`` into ``--results`` (default
``results/f0_accuracy``).
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SR, HOP = 16000, 160
FRAME_S = HOP / SR
F0_MIN, F0_MAX = 50.0, 1100.0
REFERENCES = ("harvest_1ms", "world_resynth")
METHODS = ("pm", "harvest", "dio", "fcpe", "rmvpe")
# All 240 demo files take about 20 CPU minutes (harvest alone runs at ~1 s per s of audio):
# the default is the 24 eval files and a fixed 24 of the training ones.
DEFAULT_FILES = (
    "data/demo/voices/*/eval/*.flac",
    "data/demo/voices/*/train/s0[1-8].flac",
)
FCPE_PATH = ROOT / "models" / "fcpe_c_v001.pt"
RMVPE_PATH = ROOT / "models" / "rmvpe.pt"

_MODELS: dict[str, Any] = {}  # per worker process: the loaded networks


def _pyworld() -> Any:
    import warnings

    with warnings.catch_warnings():  # pyworld 0.3.x imports pkg_resources (deprecated)
        warnings.simplefilter("ignore", UserWarning)
        import pyworld
    return pyworld


def harvest_1ms(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """The audio unchanged and its harvest (1 ms) + stonemask track.

    Returns:
        ``(audio [N], track [K] Hz, track period in seconds)``.
    """
    pw = _pyworld()
    x = np.asarray(x, dtype=np.float64)
    f0, t = pw.harvest(x, SR, f0_floor=F0_MIN, f0_ceil=F0_MAX, frame_period=1.0)
    return x, pw.stonemask(x, f0, t, SR), 0.001


def world_resynth(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """New audio whose pitch is known: WORLD analysis (5 ms) and synthesis from that F0.

    Returns:
        ``(resynthesised audio [M] peak 0.5, its F0 track [K] Hz, 0.005)``.
    """
    pw = _pyworld()
    x = np.asarray(x, dtype=np.float64)
    f0, t = pw.harvest(x, SR, f0_floor=F0_MIN, f0_ceil=F0_MAX, frame_period=5.0)
    f0 = pw.stonemask(x, f0, t, SR)
    sp = pw.cheaptrick(x, f0, t, SR)
    ap = pw.d4c(x, f0, t, SR)
    y = pw.synthesize(f0, sp, ap, SR, frame_period=5.0)
    return 0.5 * y / np.max(np.abs(y)), f0, 0.005


BUILDERS = {"harvest_1ms": harvest_1ms, "world_resynth": world_resynth}


def frame_times(method: str, n_samples: int, p_len: int) -> np.ndarray:
    """Centre (seconds, sample n at n / SR) of each of a method's ``p_len`` frames in RVC.

    harvest, dio and rmvpe put frame i at i * 10 ms. FCPE's frame i is a 1024-sample window
    starting 432 samples before i * 160. Praat (pm) centres its frames in the sound
    (window 3 / f0_min) and RVC pads the track centrally to ``p_len``.
    """
    i = np.arange(p_len, dtype=np.float64)
    if method == "fcpe":
        return (i * HOP - 432 + 511.5) / SR
    if method == "pm":
        dur = n_samples / SR
        n = math.floor((dur - 3 / F0_MIN) / FRAME_S) + 1
        t1 = 0.5 * dur - 0.5 * (n - 1) * FRAME_S - 0.5 / SR  # Praat's sample n is at (n+.5)/SR
        left = (p_len - n + 1) // 2
        return t1 + (i - left) * FRAME_S
    return i * FRAME_S


def init_worker() -> None:
    """A worker process: one torch thread (the workers run side by side, one core each)."""
    import torch

    torch.set_num_threads(1)


def _models() -> dict[str, Any]:
    if not _MODELS:
        from rvc_lora.features.fcpe import load_fcpe
        from rvc_lora.features.rmvpe import load_rmvpe

        _MODELS["fcpe"] = load_fcpe(FCPE_PATH)
        _MODELS["rmvpe"] = load_rmvpe(RMVPE_PATH) if RMVPE_PATH.is_file() else None
    return _MODELS


def methods_available() -> list[str]:
    """Every method, less rmvpe when ``models/rmvpe.pt`` is absent."""
    return [m for m in METHODS if m != "rmvpe" or RMVPE_PATH.is_file()]


def file_tracks(x: np.ndarray, methods: list[str]) -> dict[str, dict[str, Any]]:
    """Both references and every method's track for one 16 kHz signal.

    Returns:
        ``{ref: {"samples": audio length, "track": reference track, "period": its frame period
        (s), "rvc": the reference at RVC's frames [p_len], "est": {method: [p_len] Hz},
        "secs": {method: CPU s}}}``.
    """
    from rvc_lora.evaluation.f0_accuracy import sample_track
    from rvc_lora.features.f0 import compute_f0

    models = _models()
    out: dict[str, dict[str, Any]] = {}
    for ref_name, build in BUILDERS.items():
        audio, track, period = build(x)
        p_len = len(audio) // HOP
        est, secs = {}, {}
        for method in methods:
            start = time.process_time()  # CPU time: fair on a shared machine
            est[method] = compute_f0(
                audio,
                method,
                p_len=p_len,
                f0_min=F0_MIN,
                f0_max=F0_MAX,
                filter_radius=3,
                fcpe=models["fcpe"],
                rmvpe=models["rmvpe"],
            )
            secs[method] = time.process_time() - start
        out[ref_name] = {
            "samples": len(audio),
            "track": track,
            "period": period,
            "rvc": sample_track(track, period, np.arange(p_len) * FRAME_S),
            "est": est,
            "secs": secs,
        }
    return out


def score_file(path: str, methods: list[str]) -> dict[str, Any]:
    """Every method on one file against both references.

    Returns:
        ``{"seconds": audio s, "<ref>": {"<method>": {"rvc": counts, "own": counts,
        "secs": CPU s}}}``; counts are :class:`F0Counts` (scored at RVC's frames, and with
        the reference read at the method's own frame centres).
    """
    from rvc_lora.audio import load_audio
    from rvc_lora.evaluation.f0_accuracy import f0_counts, sample_track

    x, _ = load_audio(path, SR)
    out: dict[str, Any] = {"seconds": len(x) / SR}
    for ref_name, t in file_tracks(x, methods).items():
        out[ref_name] = {}
        for method, est in t["est"].items():
            times = frame_times(method, t["samples"], len(est))
            out[ref_name][method] = {
                "rvc": f0_counts(t["rvc"], est),
                "own": f0_counts(sample_track(t["track"], t["period"], times), est),
                "secs": t["secs"][method],
            }
    return out


def voice_of(path: str) -> str:
    """``data/demo/voices/<voice>/<split>/<name>.flac`` -> ``<voice>``."""
    return Path(path).parts[-3]


def file_key(path: str) -> str:
    """``<voice>/<split>/<name>``: a file's name in metrics.json."""
    p = Path(path)
    return f"{p.parts[-3]}/{p.parts[-2]}/{p.stem}"


def pooled(scores: dict[str, dict], methods: list[str]) -> dict[str, Any]:
    """Frame-pooled summaries of some files: ``{ref: {method: {...}}}`` and their audio seconds."""
    from rvc_lora.evaluation.f0_accuracy import pool

    seconds = sum(s["seconds"] for s in scores.values())
    out: dict[str, Any] = {"files": len(scores), "audio_s": round(seconds, 3)}
    for ref in REFERENCES:
        out[ref] = {}
        for m in methods:
            rows = [s[ref][m] for s in scores.values()]
            secs = sum(r["secs"] for r in rows)
            out[ref][m] = {
                **pool([r["rvc"] for r in rows]).summary(),
                "own_centres": pool([r["own"] for r in rows]).summary(),
                "compute_s": round(secs, 3),
                "s_per_min_audio": round(60 * secs / seconds, 3) if seconds else None,
            }
    return out


def _fmt(v: float | None, digits: int) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def table(metrics: dict[str, Any]) -> str:
    """The markdown block: one row per method per reference, pooled over every file."""
    allv = metrics["all"]
    missing = "" if "rmvpe" in metrics["methods"] else " rmvpe is left out: no models/rmvpe.pt."
    lines = [
        f"{allv['files']} demo files ({allv['audio_s'] / 60:.1f} min of audio, "
        f"{len(metrics['voices'])} voices), frames pooled. Methods as RVC calls them at "
        f"inference (16 kHz, 10 ms frames, 50..1100 Hz, harvest median-filtered).{missing} "
        "**harvest_1ms**: the demo audio against WORLD harvest at 1 ms + stonemask, read at "
        "10 ms: a finer run of harvest itself, so it favours harvest (and dio, also WORLD). "
        "**world_resynth**: the audio resynthesised by WORLD from a harvest (5 ms) track, "
        "which is then its exact pitch: it favours no method, but WORLD made the audio.",
        "",
        "GPE: % of frames voiced in both more than 20 % off. RMSE: cents over the frames voiced "
        "in both that are not gross errors. VDE: % of frames whose voicing differs. FFE: % of "
        "frames with either error. Scored at RVC's frame indexing (what the synthesizer gets); "
        "*own centres* reads the reference at each method's analysis-window centres instead "
        "(fcpe: i·10 ms + 5 ms; pm: Praat's frames after RVC's central padding, 0–10 ms late; "
        "harvest, dio: i·10 ms). It barely moves any RMSE and raises fcpe's (its output fits "
        "i·10 ms, not its window centre), so the 20–55 cent RMSEs are not a frame-placement "
        "artefact. s/min: CPU seconds per minute of audio, one thread, on the machine below.",
        "",
        "| reference | method | GPE % | RMSE cents | RMSE, own centres | VDE % | FFE % "
        "| voiced frames (ref / both) | s/min |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for ref in REFERENCES:
        for m in metrics["methods"]:
            r = allv[ref][m]
            lines.append(
                f"| {ref} | {m} | {_fmt(r['gpe'], 2)} | {_fmt(r['rmse_cents'], 1)} "
                f"| {_fmt(r['own_centres']['rmse_cents'], 1)} | {_fmt(r['vde'], 2)} "
                f"| {_fmt(r['ffe'], 2)} | {r['ref_voiced']} / {r['both_voiced']} "
                f"| {_fmt(r['s_per_min_audio'], 2)} |"
            )
    return "\n".join(lines) + "\n"


def per_voice_text(metrics: dict[str, Any]) -> str:
    """Per-voice GPE / RMSE / VDE / FFE, for the terminal."""
    lines = ["voice            reference      method    GPE%   RMSE   VDE%   FFE%"]
    for voice, v in metrics["voices"].items():
        for ref in REFERENCES:
            for m in metrics["methods"]:
                r = v[ref][m]
                lines.append(
                    f"{voice:16} {ref:14} {m:8} {_fmt(r['gpe'], 2):>6} "
                    f"{_fmt(r['rmse_cents'], 1):>6} {_fmt(r['vde'], 2):>6} {_fmt(r['ffe'], 2):>6}"
                )
    return "\n".join(lines)


def run(files: list[str], workers: int) -> dict[str, Any]:
    """Score ``files`` (in ``workers`` processes) and gather metrics.json's content."""
    methods = methods_available()
    with ProcessPoolExecutor(workers, initializer=init_worker) as pool_:
        results = list(pool_.map(score_file, files, [methods] * len(files)))
    scores = {file_key(f): r for f, r in zip(files, results, strict=True)}
    voices = sorted({voice_of(f) for f in files})
    metrics: dict[str, Any] = {
        "methods": methods,
        "references": list(REFERENCES),
        "settings": {"sr": SR, "hop": HOP, "f0_min": F0_MIN, "f0_max": F0_MAX, "filter_radius": 3},
        "all": pooled(scores, methods),
        "voices": {
            v: pooled({k: s for k, s in scores.items() if k.startswith(f"{v}/")}, methods)
            for v in voices
        },
        # per eval file, counts at RVC's frames: what tests/evaluation re-derives
        "eval_files": {
            k: {ref: {m: s[ref][m]["rvc"].summary() for m in methods} for ref in REFERENCES}
            for k, s in scores.items()
            if "/eval/" in k
        },
    }
    return metrics


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--files",
        action="append",
        help="glob of audio files (repeatable); default: the demo voices' eval files and "
        "train/s01..s08",
    )
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--results", type=Path, default=ROOT / "results" / "f0_accuracy")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    patterns = args.files or [str(ROOT / g) for g in DEFAULT_FILES]
    files = sorted({f for g in patterns for f in glob.glob(g)})
    if not files:
        print(f"no audio files match {' '.join(patterns)}", file=sys.stderr)
        return 2
    if not FCPE_PATH.is_file():
        print(f"{FCPE_PATH.name} is missing: run `rvc-lora download fcpe`", file=sys.stderr)
        return 2
    metrics = run(files, args.workers)
    text = table(metrics)
    print(per_voice_text(metrics))
    print(text)

    from rvc_lora.report.provenance import stamp, write_json
    from rvc_lora.utils.atomic import atomic_write_text

    given = sys.argv[1:] if argv is None else list(argv)
    atomic_write_text(args.results / "table.md", text)
    atomic_write_text(args.results / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    record = stamp(["python", "scripts/f0_accuracy.py", *given], time.perf_counter() - start)
    write_json(args.results / "run.json", record)
    print(f"wrote {args.results / 'table.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
