"""LoRA vs full fine-tuning: training step time and peak memory, v2_40k, batch 4, CPU.

Runs each variant through the real LightningModule and Trainer in its own child process, so that
peak memory (max RSS; CUDA allocator peak on GPU) is not shared between them:
- LoRA: rank-8 adapter on the decoder, discriminator frozen (the project's default);
- full: whole generator and discriminator trained, as RVC fine-tunes.
Prints both and the LoRA/full ratios (goals: step <= 0.40x, peak memory <= 0.55x).

    python bench/bench_train.py [--preset v2_40k] [--batch 4] [--frames 370] [--steps 3]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource

import torch


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _run(mode: str, args: argparse.Namespace, queue) -> None:
    import lightning as L
    from torch.utils.data import DataLoader

    from rvc_lora.models import build_discriminator, build_synthesizer
    from rvc_lora.spectral import linear_spectrogram
    from rvc_lora.training.build import make_lora_config
    from rvc_lora.training.callbacks import StepTimer
    from rvc_lora.training.module import VoiceConversionModule

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    gen = build_synthesizer(args.preset, True)
    lora = make_lora_config("lora", preset="decoder", rank=8, alpha=16) if mode == "lora" else None
    disc = build_discriminator("tiny" if args.preset == "tiny" else gen.version)
    module = VoiceConversionModule(
        gen, disc, lora=lora, d_policy="frozen" if mode == "lora" else "trained", log_audio=False
    )
    c, b, t = gen.config, args.batch, args.frames
    batches = []
    for _ in range(args.steps + 1):
        wav = torch.randn(b, 1, t * c.hop_length) * 0.1
        batches.append(
            {
                "phone": torch.randn(b, t, c.feature_dim),
                "pitch": torch.randint(1, 256, (b, t)),
                "pitchf": torch.rand(b, t) * 200 + 100,
                "spec": linear_spectrogram(wav, c.n_fft, c.hop_length),
                "wav": wav,
                "lengths": torch.full((b,), t),
                "wav_lengths": torch.full((b,), t * c.hop_length),
                "sid": torch.zeros(b, dtype=torch.long),
            }
        )
    timer = StepTimer(warmup=1)
    accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    trainer = L.Trainer(
        accelerator=accelerator,
        devices=1,
        max_steps=args.steps + 1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        enable_model_summary=False,
        callbacks=[timer],
    )
    before = _rss_mb()
    trainer.fit(module, DataLoader(batches, batch_size=None))
    if accelerator == "gpu":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counts = module.count_parameters()
    queue.put(
        {
            "mode": mode,
            "step_s": timer.median,
            "peak_mb": peak,
            "before_mb": before,
            "trainable": counts["trainable"],
            "device": accelerator,
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="v2_40k")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=370, help="item length (RVC's 3.7 s chunks)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    results = {}
    for mode in ("lora", "full"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_run, args=(mode, args, queue))
        proc.start()
        results[mode] = queue.get()
        proc.join()
    print(
        f"{args.preset}, batch {args.batch}, {args.frames}-frame items, {args.threads} threads, "
        f"{results['lora']['device']}, median of {args.steps} steps after 1 warm-up"
    )
    print(f"{'variant':<32} {'step s':>8} {'peak MB':>9} {'trainable':>12}")
    names = {"lora": "LoRA r8 decoder, D frozen", "full": "full fine-tune, D trained"}
    for mode, r in results.items():
        print(f"{names[mode]:<32} {r['step_s']:8.3f} {r['peak_mb']:9.0f} {r['trainable']:12,}")
    lo, fu = results["lora"], results["full"]
    print(
        f"ratio LoRA/full: step {lo['step_s'] / fu['step_s']:.2f}x (goal <= 0.40), "
        f"peak memory {lo['peak_mb'] / fu['peak_mb']:.2f}x (goal <= 0.55)"
    )


if __name__ == "__main__":
    main()
