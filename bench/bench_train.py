"""LoRA vs full fine-tuning: training step time, peak memory and a gradient check (issue 17).

Runs each variant through the real LightningModule and Trainer in its own child process, so that
peak memory (max RSS; CUDA allocator peak on GPU) is not shared between them:
- ``lora``: rank-8 adapter on the decoder, discriminator frozen (the project's default);
- ``full_g``: whole generator trained, discriminator frozen (LoRA's own effect: same code, same
  settings, only the trainable set differs);
- ``full``: whole generator and discriminator trained, as RVC fine-tunes.
Prints the three, the ratios LoRA/full (goals: step <= 0.40x, peak memory <= 0.55x) and
LoRA/full_g (goals: step <= 0.60x, peak memory <= 0.80x), then a gradient check: per variant, the
pre-issue code (``reference=True``) and the fast code built from the same weights take one step's
losses and gradients on the same batch; the script exits 1 if a maximum relative difference
exceeds 1e-6. The check runs on shorter items (``--check-frames``) to stay affordable.

    python bench/bench_train.py [--preset v2_40k] [--batch 4] [--frames 370] [--steps 3]
        [--threads N] [--reference] [--checkpoint-activations] [--check-frames 64]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
from collections.abc import Mapping, Sequence
from queue import Empty
from typing import Any

import torch

VARIANTS = {  # name -> (label, LoRA adapters?, d_policy)
    "lora": ("LoRA r8 decoder, D frozen", True, "frozen"),
    "full_g": ("full G, D frozen", False, "frozen"),
    "full": ("full G + D trained", False, "trained"),
}
# (numerator, denominator, step goal, peak memory goal): the acceptance ratios.
GOALS = (("lora", "full", 0.40, 0.55), ("lora", "full_g", 0.60, 0.80))
CHECK_TOL = 1e-6  # fp32 relative tolerance of the issue for losses and gradients


def build_module(
    variant: str,
    preset: str,
    *,
    reference: bool,
    checkpoint_activations: bool = False,
    seed: int = 0,
):
    """A ``VoiceConversionModule`` for ``variant`` on random weights drawn from ``seed``: two
    calls with the same seed give modules with equal tensors (generator, discriminator and the
    adapters' ``A`` init), whatever the code path."""
    from rvc_lora.models import build_discriminator, build_synthesizer
    from rvc_lora.training.build import make_lora_config
    from rvc_lora.training.module import VoiceConversionModule

    _, adapters, d_policy = VARIANTS[variant]
    torch.manual_seed(seed)
    gen = build_synthesizer(preset, True)
    disc = build_discriminator("tiny" if preset == "tiny" else gen.version)
    lora = make_lora_config("lora", preset="decoder", rank=8, alpha=16) if adapters else None
    torch.manual_seed(seed + 1)  # the adapters' A init
    return VoiceConversionModule(
        gen,
        disc,
        lora=lora,
        d_policy=d_policy,
        log_audio=False,
        reference=reference,
        checkpoint_activations=checkpoint_activations,
    )


def make_batch(config: Any, batch: int, frames: int) -> dict[str, torch.Tensor]:
    """A synthetic training batch of ``batch`` items of ``frames`` frames (draws from torch's
    global RNG): ``phone [B, T, D]``, ``pitch``/``pitchf [B, T]``, ``spec [B, F, T]``,
    ``wav [B, 1, T*hop]``, lengths, speaker ids."""
    from rvc_lora.spectral import linear_spectrogram

    b, t, c = batch, frames, config
    wav = torch.randn(b, 1, t * c.hop_length) * 0.1
    return {
        "phone": torch.randn(b, t, c.feature_dim),
        "pitch": torch.randint(1, 256, (b, t)),
        "pitchf": torch.rand(b, t) * 200 + 100,
        "spec": linear_spectrogram(wav, c.n_fft, c.hop_length),
        "wav": wav,
        "lengths": torch.full((b,), t),
        "wav_lengths": torch.full((b,), t * c.hop_length),
        "sid": torch.zeros(b, dtype=torch.long),
    }


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _time(variant: str, args: argparse.Namespace, queue: Any) -> None:
    """Child process: a few steps of ``variant`` through the Trainer; puts its figures."""
    import lightning as L
    from torch.utils.data import DataLoader

    from rvc_lora.training.callbacks import StepTimer

    torch.set_num_threads(args.threads)
    module = build_module(
        variant,
        args.preset,
        reference=args.reference,
        checkpoint_activations=args.checkpoint_activations,
    )
    c = module.generator.config
    batches = [make_batch(c, args.batch, args.frames) for _ in range(args.steps + 1)]
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
    else:  # kB on Linux
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put(
        {
            "step_s": timer.median,
            "peak_mb": peak,
            "before_mb": before,
            "trainable": module.count_parameters()["trainable"],
            "device": accelerator,
        }
    )


def _check(variants: Sequence[str], args: argparse.Namespace, queue: Any) -> None:
    """Child process: per variant, max relative differences of one step's losses and gradients
    between the reference and the fast code, built from the same weights, on the same batch."""
    from rvc_lora.training.step_check import compare_steps

    torch.set_num_threads(args.threads)
    out = {}
    for variant in variants:
        ref = build_module(variant, args.preset, reference=True)
        fast = build_module(
            variant,
            args.preset,
            reference=False,
            checkpoint_activations=args.checkpoint_activations,
        )
        torch.manual_seed(1)
        batch = make_batch(ref.generator.config, args.check_batch, args.check_frames)
        diffs = compare_steps(ref, fast, batch, seed=0)
        out[variant] = {
            "losses": max(diffs["losses"].values()),
            "grads": max(diffs["grads"].values()),
            "worst": diffs["worst_name"] if diffs["worst"] > 0 else "-",
        }
        del ref, fast  # two models at a time, not six
    queue.put(out)


def _in_child(target: Any, what: Any, args: argparse.Namespace) -> dict[str, Any]:
    """``target(what, args, queue)`` in a spawned process (its own peak memory); its result."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(what, args, queue))
    proc.start()
    try:
        while True:
            try:
                return queue.get(timeout=1.0)
            except Empty:  # a child that died (exception, out of memory) never answers
                if not proc.is_alive():
                    raise SystemExit(
                        f"{target.__name__}({what}) child failed (exit {proc.exitcode})"
                    ) from None
    finally:
        proc.join()


def ratio_lines(results: Mapping[str, Mapping[str, float]]) -> list[str]:
    """One line per goal of :data:`GOALS`: the step and peak-memory ratios and their goals."""
    lines = []
    for num, den, step_goal, mem_goal in GOALS:
        a, b = results[num], results[den]
        step, mem = a["step_s"] / b["step_s"], a["peak_mb"] / b["peak_mb"]
        lines.append(
            f"ratio LoRA / {VARIANTS[den][0]}: step {step:.2f}x (goal <= {step_goal:.2f}), "
            f"peak memory {mem:.2f}x (goal <= {mem_goal:.2f})"
        )
    return lines


def over_tolerance(diffs: Mapping[str, Mapping[str, Any]], tol: float = CHECK_TOL) -> list[str]:
    """``variant/losses`` or ``variant/grads`` for every maximum above ``tol`` (NaN counts as
    above)."""
    return [
        f"{variant}/{key}"
        for variant, by_key in diffs.items()
        for key in ("losses", "grads")
        if not by_key[key] <= tol
    ]


def check_lines(diffs: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The gradient check's table: per variant, the max relative difference over the losses
    and over every trainable tensor's gradient, and the tensor or loss where it is largest."""
    lines = [f"{'variant':<28} {'losses':>8} {'grads':>8}  largest at"]
    for variant, d in diffs.items():
        lines.append(
            f"{VARIANTS[variant][0]:<28} {d['losses']:8.1e} {d['grads']:8.1e}  {d['worst']}"
        )
    return lines


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="v2_40k")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--frames", type=int, default=370, help="item length (RVC's 3.7 s chunks)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps after one warm-up step")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--reference", action="store_true", help="time the pre-issue code")
    ap.add_argument("--checkpoint-activations", action="store_true")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--check-frames", type=int, default=64, help="item length of the check")
    ap.add_argument("--check-batch", type=int, default=2, help="items in the check's batch")
    ap.add_argument("--no-check", action="store_true", help="skip the gradient check")
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = {v: _in_child(_time, v, args) for v in args.variants}
    code = "pre-issue code (reference)" if args.reference else "this code"
    if args.checkpoint_activations:
        code += ", activation checkpointing"
    device = next(iter(results.values()))["device"]
    print(
        f"{args.preset}, batch {args.batch}, {args.frames}-frame items, {args.threads} threads, "
        f"{device}, median of {args.steps} steps after 1 warm-up, {code}"
    )
    print(f"{'variant':<28} {'step s':>8} {'peak MB':>9} {'start MB':>9} {'trainable':>12}")
    for variant, r in results.items():
        print(
            f"{VARIANTS[variant][0]:<28} {r['step_s']:8.3f} {r['peak_mb']:9.0f} "
            f"{r['before_mb']:9.0f} {r['trainable']:12,}"
        )
    if all(v in results for goal in GOALS for v in goal[:2]):
        print("\n".join(ratio_lines(results)))
    if args.no_check:
        return 0
    diffs = _in_child(_check, list(args.variants), args)
    print(
        f"gradient check on cpu, reference vs this code, same weights and batch "
        f"({args.check_batch} items of {args.check_frames} frames), max relative difference "
        f"(limit {CHECK_TOL:.0e}):"
    )
    print("\n".join(check_lines(diffs)))
    bad = over_tolerance(diffs)
    if bad:
        print(f"FAILED: {', '.join(bad)} over {CHECK_TOL:.0e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
