"""`make demo`: the whole job on the shipped demo corpus, on CPU, in a few minutes.

1. Train a rank-8 LoRA adapter for the held-out demo voice (``data/demo/target``) on the tiny
   base pretrained on the other demo voices (``data/pretrained/``), via ``train.py``.
2. Convert a held-out sentence spoken by another demo voice into it (``infer.py``, pitch=auto).
3. Score the result against the target's own utterance of that sentence: MCD (DTW), F0 RMSE,
   speaker similarity (SECS) to the target voice and to the source voice.
4. Draw source / converted / target mel spectrograms; export the voice for RVC WebUI.

When RVC's real weights are in ``models/`` (``rvc-lora download``), the same steps run on
``model=v2_40k`` with ``hubert_base.pt``, ``rmvpe.pt`` and ``pretrained_v2/f0G40k.pth``.
Outputs go to ``outputs/demo/``; their paths are printed at the end.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
MODELS = ROOT / "models"
TARGET, SOURCE, SENTENCE = "slt", "rms", "s33"  # s33 is held out from the target's training
REAL_WEIGHTS = {
    "features.encoder_path": MODELS / "hubert_base.pt",
    "features.rmvpe_path": MODELS / "rmvpe.pt",
    "model.pretrained_g": MODELS / "pretrained_v2" / "f0G40k.pth",
    "model.pretrained_d": MODELS / "pretrained_v2" / "f0D40k.pth",
}


def training_overrides(steps: int | None) -> list[str]:
    """The demo experiment, moved onto RVC's real v2 40k weights when they are all present."""
    overrides = ["experiment=demo"]
    if all(p.is_file() for p in REAL_WEIGHTS.values()):
        print("real RVC weights found in models/: using model=v2_40k", flush=True)
        overrides += ["model=v2_40k", "features=default", "features.f0_method=auto"]
        overrides += [f"{key}={path}" for key, path in REAL_WEIGHTS.items()]
        import torch

        if torch.cuda.is_available():
            overrides.append("trainer=gpu")
    if steps is not None:
        overrides.append(f"trainer.max_steps={steps}")
    return overrides


def run(args: list[str]) -> None:
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True)


def mel_figure(path: Path, signals: dict[str, tuple[np.ndarray, int]]) -> None:
    """Mel spectrograms of the named signals, one row each, on the same dB scale."""
    import librosa
    from matplotlib.figure import Figure

    from rvc_lora.utils.atomic import atomic_path

    fig = Figure(figsize=(10, 2.4 * len(signals)), layout="constrained")
    axes = fig.subplots(len(signals), 1, squeeze=False)[:, 0]
    for ax, (name, (wav, sr)) in zip(axes, signals.items()):
        mel = librosa.feature.melspectrogram(
            y=wav, sr=sr, n_fft=1024, hop_length=sr // 100, n_mels=80
        )
        db = librosa.power_to_db(mel, ref=1.0, top_db=None)
        image = ax.imshow(db, origin="lower", aspect="auto", vmin=-80, vmax=20, cmap="magma")
        ax.set_title(name, loc="left")
        ax.set_ylabel("mel bin")
    axes[-1].set_xlabel("frame (10 ms)")
    fig.colorbar(image, ax=list(axes), label="dB")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def score(converted: Path, source: Path, target: Path, references: list[Path]) -> dict[str, float]:
    """MCD, F0 and speaker similarity of the conversion, plus the source's own similarity."""
    from rvc_lora.audio import load_audio
    from rvc_lora.metrics import reference_embedding, score_pair, speaker_embedding

    sr = 16_000
    conv, src, tgt = (load_audio(p, sr)[0] for p in (converted, source, target))
    ref = reference_embedding([load_audio(p, sr)[0] for p in references], sr)
    scores = score_pair(conv, tgt, sr, source=src, target_embedding=ref)
    # Before conversion: how close is the source speaker to the target already?
    scores["secs_source_to_target"] = float(np.dot(speaker_embedding(src, sr), ref))
    return {k: float(v) for k, v in scores.items()}


def results_record(record: dict, run_dir: Path, wall_s: float) -> dict:
    """The README's demo figures (``results/demo.json``): the scores, the training settings
    that produced them (from the run's own files) and the command, date and machine."""
    from omegaconf import OmegaConf

    from rvc_lora.report.provenance import stamp

    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    choices = OmegaConf.load(run_dir / ".hydra" / "hydra.yaml").hydra.runtime.choices
    trained = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return {
        **stamp([sys.executable, "scripts/demo.py", *sys.argv[1:]], wall_s),
        **record,
        "model": choices.model,
        "rank": cfg.lora.rank,
        "lr": cfg.train.lr,
        "batch_size": cfg.data.batch_size,
        "steps": trained["global_step"],
        "step_time_s": trained["step_time_s"],
        "adapter_kb": trained["artifact_kb"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: config)")
    parser.add_argument("--out", type=Path, default=None, help="default: outputs/demo")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        help="write the README's demo figures here (default: results/demo.json when --out is "
        "the default, else nowhere)",
    )
    args = parser.parse_args()
    results = args.results or (ROOT / "results" / "demo.json" if args.out is None else None)
    args.out = args.out or ROOT / "outputs" / "demo"
    start = time.perf_counter()
    out: Path = args.out
    run_dir = out / "run"
    source = DEMO / "base" / SOURCE / f"{SENTENCE}.flac"
    target = DEMO / "eval" / TARGET / f"{SENTENCE}.flac"
    references = sorted((DEMO / "target" / TARGET).glob("*.flac"))

    print(f"== training a rank-8 adapter for voice '{TARGET}' ({len(references)} recordings)")
    run(["train.py", *training_overrides(args.steps), f"hydra.run.dir={run_dir}"])
    adapter = run_dir / "adapter.safetensors"

    print(f"== converting '{SOURCE}' saying {SENTENCE} into '{TARGET}'")
    converted = out / "converted.wav"
    run(
        [
            "infer.py", f"ckpt={adapter}", f"source={source}", f"output={converted}",
            "pitch=auto", f"hydra.run.dir={out / 'infer'}",
        ]
    )  # fmt: skip

    print("== scoring")
    scores = score(converted, source, target, references)
    from rvc_lora.audio import load_audio
    from rvc_lora.utils.atomic import atomic_write_text

    metrics_path = out / "metrics.json"
    record = {
        "source": str(source.relative_to(ROOT)),
        "target_utterance": str(target.relative_to(ROOT)),
        "target_reference_set": f"{len(references)} files in data/demo/target/{TARGET}",
        **scores,
    }
    atomic_write_text(metrics_path, json.dumps(record, indent=2) + "\n")
    png = out / "mels.png"
    mel_figure(
        png,
        {
            f"source ({SOURCE})": load_audio(source, 16_000),
            f"converted (into {TARGET})": load_audio(converted, 16_000),
            f"target ({TARGET}, same sentence, never trained on)": load_audio(target, 16_000),
        },
    )

    exported = out / "voice.pth"
    run(
        [
            "infer.py",
            "mode=export",
            f"ckpt={adapter}",
            f"output={exported}",
            f"hydra.run.dir={out / 'export'}",
        ]
    )

    verdict = (
        "closer to the target"
        if scores["secs_target"] > scores["secs_source"]
        else "NOT closer to the target than to the source"
    )
    wall = time.perf_counter() - start
    if results is not None:
        from rvc_lora.report.provenance import write_json

        write_json(results, results_record(record, run_dir, wall))
    print(f"\ndemo done in {wall:.0f} s")
    print(
        f"  speaker similarity of the conversion to the target voice: {scores['secs_target']:.3f}"
    )
    print(
        f"  speaker similarity of the conversion to the source voice: {scores['secs_source']:.3f}  ({verdict})"
    )
    print(f"  (the source itself vs the target voice: {scores['secs_source_to_target']:.3f})")
    print(
        f"  MCD vs the target's utterance: {scores['mcd_db']:.2f} dB, F0 RMSE: {scores['f0_rmse_cents']:.0f} cents"
    )
    print(f"  converted audio: {converted}")
    print(f"  mel comparison:  {png}")
    print(f"  metrics:         {metrics_path}")
    print(f"  adapter:         {adapter}")
    print(f"  RVC WebUI model: {exported}")
    if results is not None:
        print(f"  README figures:  {results} (then `make readme-tables`)")


if __name__ == "__main__":
    main()
