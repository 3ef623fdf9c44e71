"""CPU cost of F0 extraction: seconds of compute per minute of 16 kHz audio.

Runs pm, harvest, dio and the full-size RMVPE and FCPE networks on a synthetic voiced glide
(default 10 s) and scales the median time to one minute. Both networks use randomly initialised
weights (fixed seed): the compute is the same as with RVC's rmvpe.pt and torchfcpe's
fcpe_c_v001.pt (same shapes, same operations), only their F0 values are meaningless, and the
figure does not depend on a download.
Run it on an otherwise idle machine: RMVPE's BiGRU takes ~2000 tiny sequential steps, and with
other processes on the same cores its time grew up to 30x (0.43 s -> 14 s for 10 s of audio).

    python bench/bench_f0.py [--seconds 10] [--threads 2] [--repeats 3] [--methods pm,harvest,rmvpe,fcpe]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from rvc_lora.features.f0 import compute_f0
from rvc_lora.features.fcpe import FCPE, FCPEConfig, FCPENet
from rvc_lora.features.rmvpe import E2E, RMVPE

SR = 16000


def _glide(seconds: float) -> np.ndarray:
    n = int(SR * seconds)
    f = 120.0 * 2 ** (2 * np.arange(n) / n)  # two octaves up
    rng = np.random.default_rng(0)
    return (0.5 * np.sin(2 * np.pi * np.cumsum(f) / SR) + 0.01 * rng.standard_normal(n)).astype(
        np.float32
    )


def _params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--methods", default="pm,harvest,dio,rmvpe,fcpe")
    args = ap.parse_args(argv)
    methods = args.methods.split(",")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x = _glide(args.seconds)
    rmvpe = fcpe = None
    if "rmvpe" in methods:
        net = E2E()
        print(f"RMVPE (random weights): {_params(net):,} parameters")
        rmvpe = RMVPE(net)
        rmvpe.infer_from_audio(x[:SR])  # warm-up: mel basis, allocator
    if "fcpe" in methods:
        torch.manual_seed(0)  # the same weights whichever methods run before
        fcpe_net = FCPENet(FCPEConfig())
        print(f"FCPE (random weights): {_params(fcpe_net):,} parameters")
        fcpe = FCPE(fcpe_net)
        fcpe.infer(x[:SR])  # warm-up
    print(f"{args.seconds:g} s of audio, {args.threads} CPU threads, median of {args.repeats}")
    for method in methods:
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            f0 = compute_f0(x, method, rmvpe=rmvpe, fcpe=fcpe)
            times.append(time.perf_counter() - start)
        sec = statistics.median(times)
        print(
            f"{method:8s} {sec:7.3f} s  ->  {sec * 60 / args.seconds:7.2f} s per minute of audio"
            f"  (voiced {np.mean(f0 > 0):.0%})"
        )


if __name__ == "__main__":
    main()
