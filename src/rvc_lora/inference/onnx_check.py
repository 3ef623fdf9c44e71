"""Check an exported voice: ``python -m rvc_lora.inference.onnx_check voice.onnx``.

Loads the file (onnx's checker when onnx is installed, then onnxruntime), checks its metadata,
inputs and outputs (:class:`~rvc_lora.inference.onnx_voice.OnnxVoice`), and runs it on random
input at two lengths, as a batch of two equal rows: the output must be ``[B, 1, frames * hop]``,
finite, within [-1, 1], and the same in both rows. Exit status 0 and
a summary, or 1 and one line saying what is wrong.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from rvc_lora.inference.onnx_voice import OnnxError, OnnxVoice
from rvc_lora.models.synthesizer import InferNoise, draw_infer_noise
from rvc_lora.utils.errors import first_line

# Same-length rows of a batch must not see each other; the tolerance is float rounding.
BATCH_TOL = 1e-5


def _graph_check(path: Path) -> str:
    try:
        import onnx
    except ImportError:
        return "onnx not installed: graph checker skipped"
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # onnx raises ValidationError, or DecodeError for a cut file
        raise OnnxError(f"{path}: the ONNX checker refuses the graph ({first_line(exc)})") from None
    return "graph checker: ok"


def _inputs(voice: OnnxVoice, batch: int, frames: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    c = voice.config
    phone = torch.randn(1, frames, c.feature_dim, generator=g).expand(batch, -1, -1)
    lengths = torch.full((batch,), frames, dtype=torch.long)
    pitch = torch.randint(1, 256, (1, frames), generator=g).expand(batch, -1)
    pitchf = (torch.rand(1, frames, generator=g) * 300 + 80).expand(batch, -1)
    sid = torch.zeros(batch, dtype=torch.long)
    one = draw_infer_noise(voice, 1, frames, generator=g)
    noise = InferNoise(
        one.prior.expand(batch, -1, -1),
        one.source.expand(batch, -1, -1) if one.source is not None else None,
    )
    return phone, lengths, pitch, pitchf, sid, noise


def check(path: str | Path, frames: tuple[int, ...] = (50, 173)) -> list[str]:
    """The checks above; returns the summary lines. Raises :class:`OnnxError` (one line)."""
    path = Path(path)
    if not path.is_file():
        raise OnnxError(f"{path}: no such file; check the path")
    lines = [_graph_check(path)]
    voice = OnnxVoice(path)
    c, m = voice.config, voice.meta
    lines.append(
        f"voice: {c.version} {c.sr} Hz, f0={int(voice.f0)}, {c.feature_dim}-d features, "
        f"hop {c.hop_length}, {c.spk_embed_dim} speaker(s); opset {m.get('opset', '?')}; "
        f"source {m.get('source') or '?'} ({m.get('kind') or '?'})"
    )
    if m.get("adapter_sha256"):
        lines.append(f"adapter: {m.get('adapter_file')} sha256 {m['adapter_sha256'][:16]}...")
    if m.get("base_sha256"):
        lines.append(
            f"base: {m.get('base_file') or '(in the file)'} identity {m['base_sha256'][:16]}..."
        )
    for i, t in enumerate(frames):
        phone, lengths, pitch, pitchf, sid, noise = _inputs(voice, 2, t, seed=i)
        out = voice.run(phone, lengths, pitch, pitchf, sid, noise)
        want = (2, 1, t * c.hop_length)
        if out.shape != want:
            raise OnnxError(
                f"{path}: {t} frames gave output {list(out.shape)}, expected {list(want)}"
            )
        if not np.isfinite(out).all() or np.abs(out).max() > 1.0:
            raise OnnxError(f"{path}: output at {t} frames is not finite audio in [-1, 1]")
        if np.abs(out[0] - out[1]).max() > BATCH_TOL:
            raise OnnxError(f"{path}: two equal rows of a batch gave different audio")
        lines.append(f"run: 2 x {t} frames -> {list(out.shape)}, peak {np.abs(out).max():.3f}: ok")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rvc_lora.inference.onnx_check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("path", help="the exported .onnx voice")
    args = parser.parse_args(argv)
    try:
        lines = check(args.path)
    except OnnxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    print(f"{args.path}: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
