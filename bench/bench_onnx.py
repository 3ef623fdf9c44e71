"""Synthesis real-time factor: onnxruntime running the exported voice vs PyTorch.

A full-size synthesizer (``--preset``, random weights, seeded) is exported with
``rvc_lora.inference.onnx_export.export_onnx`` and both run ``infer`` over the content features of
``--seconds`` of audio (one item, 100 frames/s) with the same noise inputs:

- ``torch``: ``Synthesizer.infer`` as the pipeline calls it (fast decoder, inference mode);
- ``torch, module decoder``: ``infer(fast=False)``, the plain modules the ONNX graph was traced
  from (weight norm live);
- ``torch, weight norm folded``: the fast path on the exported graph's weights
  (``inference_copy``: weight norm folded everywhere, the flow and encoder included): what the
  PyTorch path would gain from folding as the export does;
- ``onnxruntime``: :class:`rvc_lora.inference.onnx_voice.OnnxVoice`, CPU provider.

RTF = wall seconds / audio seconds, median of ``--repeats``, the three interleaved so load drift
hits all alike. Both libraries get ``--threads`` intra-op threads. The last line is the largest
output difference, relative to the peak (the parity tests hold it under 1e-4).

    python bench/bench_onnx.py [--preset v2_40k] [--seconds 10] [--threads 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from rvc_lora.inference.onnx_export import export_onnx, inference_copy
from rvc_lora.inference.onnx_voice import OnnxVoice
from rvc_lora.models import build_synthesizer
from rvc_lora.models.synthesizer import draw_infer_noise


def inputs(model, frames: int):
    g = torch.Generator().manual_seed(0)
    c = model.config
    phone = torch.randn(1, frames, c.feature_dim, generator=g)
    lengths = torch.tensor([frames])
    pitch = torch.randint(1, 256, (1, frames), generator=g) if model.f0 else None
    pitchf = torch.rand(1, frames, generator=g) * 200 + 100 if model.f0 else None
    sid = torch.zeros(1, dtype=torch.long)
    return phone, lengths, pitch, pitchf, sid, draw_infer_noise(model, 1, frames, generator=g)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="v2_40k")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = build_synthesizer(args.preset).eval()
    model.remove_posterior()
    frames = round(args.seconds * 100)
    phone, lengths, pitch, pitchf, sid, noise = inputs(model, frames)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        path = export_onnx(model, Path(tmp) / "voice.onnx")
        export_s, size_mb = time.perf_counter() - start, path.stat().st_size / 1e6
        voice = OnnxVoice(path, threads=args.threads)

        def run_torch():
            with torch.inference_mode():
                return model.infer(phone, lengths, pitch, pitchf, sid, noise=noise)[0]

        def run_module():
            with torch.inference_mode():
                return model.infer(phone, lengths, pitch, pitchf, sid, noise=noise, fast=False)[0]

        folded = inference_copy(model)

        def run_folded():
            with torch.inference_mode():
                return folded.infer(phone, lengths, pitch, pitchf, sid, noise=noise)[0]

        def run_onnx():
            return voice.infer(phone, lengths, pitch, pitchf, sid, noise=noise)[0]

        runs = {
            "torch": run_torch,
            "torch, module decoder": run_module,
            "torch, weight norm folded": run_folded,
            "onnxruntime": run_onnx,
        }
        outputs = {name: fn() for name, fn in runs.items()}  # warm-up (oneDNN, ORT arenas)
        times: dict[str, list[float]] = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, fn in runs.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)

    print(
        f"{args.preset} synthesis, {args.seconds:g} s of audio ({frames} frames), "
        f"{args.threads} CPU threads, median of {args.repeats}"
    )
    print(f"export: {export_s:.1f} s, {size_mb:.1f} MB (fp32, opset 17)")
    rtf = {name: statistics.median(ts) / args.seconds for name, ts in times.items()}
    for name, value in rtf.items():
        print(f"{name:<26} RTF {value:.3f}")
    print(f"onnxruntime / torch: {rtf['onnxruntime'] / rtf['torch']:.2f}x the time")
    ref = outputs["torch"]
    err = float((outputs["onnxruntime"] - ref).abs().max() / ref.abs().max())
    print(f"max |onnxruntime - torch| / peak: {err:.1e}")


if __name__ == "__main__":
    main()
